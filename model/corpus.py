"""The English text the embedded model learns from: it ships with every Python install.

Documents are the `pydoc_data.topics` reference pages and the docstrings of the standard library's
modules, classes and functions, read with `ast` (nothing is imported, so no module's side effects
run). A document goes to the held-out split by a hash of its name, so the split does not depend
on the order files are found in. The held-out split is also committed next to the embedded model
(`heldout.jsonl`), so evaluation never depends on which Python built the corpus.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Folders of the standard library whose text is not English prose for users (tests, tool demos,
# vendored packages) or that duplicate other modules.
_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "lib2to3",
              "turtledemo", "ensurepip", "pydoc_data"}
_MIN_DOC_CHARS = 40
HELDOUT_PERCENT = 5


@dataclass(frozen=True)
class Document:
    name: str
    text: str

    @property
    def heldout(self) -> bool:
        digest = hashlib.sha256(self.name.encode()).digest()
        return int.from_bytes(digest[:4], "big") % 100 < HELDOUT_PERCENT


def _topics() -> Iterator[Document]:
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield Document(f"topic:{key}", topics[key].strip())


def _docstrings(stdlib: Path) -> Iterator[Document]:
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("config-"))
        for filename in sorted(f for f in filenames if f.endswith(".py")):
            path = Path(dirpath) / filename
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            module = path.relative_to(stdlib).with_suffix("").as_posix().replace("/", ".")
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= _MIN_DOC_CHARS:
                        where = getattr(node, "name", "") or "<module>"
                        yield Document(f"doc:{module}:{where}:{getattr(node, 'lineno', 0)}", doc.strip())


def build_corpus() -> list[Document]:
    """Every document, in a fixed order, with exact duplicates (inherited docstrings) dropped."""
    seen: set[str] = set()
    docs: list[Document] = []
    for doc in (*_topics(), *_docstrings(Path(sysconfig.get_paths()["stdlib"]))):
        if doc.text not in seen:
            seen.add(doc.text)
            docs.append(doc)
    return docs


def split(docs: list[Document]) -> tuple[list[Document], list[Document]]:
    train = [d for d in docs if not d.heldout]
    heldout = [d for d in docs if d.heldout]
    return train, heldout


def corpus_digest(docs: list[Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.name.encode() + b"\0" + d.text.encode() + b"\0")
    return h.hexdigest()


def write_jsonl(docs: list[Document], path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"name": d.name, "text": d.text}, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[Document]:
    with path.open(encoding="utf-8") as f:
        return [Document(**json.loads(line)) for line in f if line.strip()]
