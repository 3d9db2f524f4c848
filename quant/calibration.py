"""Calibration text for data-driven quantization (GPTQ): tokenized windows and a record of them.

By default the text is the training split of the corpus the embedded model was built from (the
`pydoc_data` reference pages and the standard library's docstrings, read from this Python
install): in-domain for it, and disjoint by construction from the held-out documents `verify`
scores with. Users pass a file of their own text instead with `--calibration FILE`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.model import corpus
from mobilellm_export.model.heldout import token_stream, windows
from mobilellm_export.runtimes.tokenizer import Tokenizer

# 128 windows of 256 tokens (32,768): on SmolLM2-135M int4 GPTQ loses +9.3% perplexity instead of
# +11.8% with 32 windows, for about 5 minutes of quantization instead of 2.5 on 2 cores.
DEFAULT_WINDOWS = 128
WINDOW = 256
DEFAULT_SOURCE = "embedded corpus, training split (disjoint from the held-out text)"


@dataclass(frozen=True)
class Calibration:
    windows: list[list[int]]
    source: str
    sha256: str  # of the token ids, so a report can tell whether two runs saw the same text

    @property
    def tokens(self) -> int:
        return sum(len(w) for w in self.windows)

    def record(self) -> dict[str, object]:
        return {"source": self.source, "sha256": self.sha256, "tokens": self.tokens, "windows": len(self.windows)}


_DONE: dict[tuple[str, str, int, int], Calibration] = {}  # one tokenization per process (a demo exports many)


def calibration(tokenizer: Tokenizer, *, text_file: Path | None = None, count: int = DEFAULT_WINDOWS,
                window: int = WINDOW) -> Calibration:
    key = (str(tokenizer.path.resolve()), str(Path(text_file).resolve()) if text_file else "", count, window)
    if key not in _DONE:
        _DONE[key] = _calibration(tokenizer, text_file, count, window)
    return _DONE[key]


def _calibration(tokenizer: Tokenizer, text_file: Path | None, count: int, window: int) -> Calibration:
    if text_file is not None:
        try:
            docs = [Path(text_file).read_text(encoding="utf-8")]
        except (OSError, UnicodeDecodeError) as exc:
            raise UnsupportedError(f"cannot read calibration text {text_file}: {exc}") from None
        source = str(Path(text_file).resolve())
    else:
        train, _ = corpus.split(corpus.build_corpus())
        docs, source = [d.text for d in train], DEFAULT_SOURCE
    stream = token_stream(docs, lambda t: tokenizer.encode(t, bos=False), tokenizer.bos_id, tokenizer.eos_id)
    full = [w for w in windows(stream, window) if len(w) == window]
    if not full:
        raise UnsupportedError(f"the calibration text has fewer than {window} tokens")
    # Windows spread evenly over the whole text rather than its first pages.
    step = max(len(full) // count, 1)
    chosen = full[::step][:count]
    digest = hashlib.sha256(b"".join(t.to_bytes(4, "little") for w in chosen for t in w)).hexdigest()
    return Calibration(chosen, source, digest)
