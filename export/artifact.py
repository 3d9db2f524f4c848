"""Artifact directories: written completely or not at all, described by manifest.json.

A backend writes its files into a temporary sibling directory; the tokenizer and the manifest
(with the sha256 of every file) are added there, and only then is the directory renamed into
place. Any failure removes the temporary directory, so a half-written artifact never exists
under the requested name.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mobilellm_export.errors import MobileLLMError, UnsupportedError
from mobilellm_export.jsonfile import read_json_object

MANIFEST = "manifest.json"
FORMAT = "mobilellm-export-artifact"
SCHEMA_VERSION = 1
_LIBRARIES = ("mobilellm-export", "torch", "executorch", "torchao", "coremltools", "onnx", "onnxruntime")


class ArtifactError(MobileLLMError):
    """An artifact directory that is missing, incomplete or altered."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def write_artifact(target: Path, build: Callable[[Path], dict[str, Any]], *, overwrite: bool = False) -> dict[str, Any]:
    """Create `target` atomically. `build(tmp)` writes every file into `tmp` and returns the
    manifest without its `files` section, which is computed here from what is on disk."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise UnsupportedError(f"{target} already exists; choose another --output or pass --overwrite")
    created_parent = not target.parent.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    except OSError as exc:
        raise UnsupportedError(f"cannot write to {target.parent}: {exc.strerror or exc}") from None
    try:
        manifest = build(tmp)
        # Every file, also inside package directories (a Core ML .mlpackage), by relative path.
        files = {p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **manifest,
                    "files": files, "total_bytes": sum(f["bytes"] for f in files.values()),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "versions": library_versions()}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o755)
        if target.exists():  # --overwrite: swap the old directory out only once the new one is whole
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            target.rename(old / target.name)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_parent and not any(target.parent.iterdir()):
            target.parent.rmdir()
        raise
    return manifest


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not Path(directory).is_dir():
        raise ArtifactError(f"artifact directory {directory} does not exist")
    if not path.is_file():
        raise ArtifactError(f"{directory} is not an artifact directory (no {MANIFEST})")
    manifest = read_json_object(path, ArtifactError)
    if manifest.get("format") != FORMAT or manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(f"{path} is not a {FORMAT} manifest of schema version {SCHEMA_VERSION}")
    return manifest


def checksum_problems(directory: Path, manifest: dict[str, Any]) -> list[str]:
    """Files that are missing or whose sha256 differs from the manifest."""
    problems = []
    for name, entry in manifest["files"].items():
        path = Path(directory) / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{name} does not match its sha256 in the manifest")
    return problems
