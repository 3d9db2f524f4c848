"""Artifact directories: written completely or not at all, described by manifest.json (read by
runtimes/manifest.py).

A backend writes its files into a temporary sibling directory; the tokenizer and the manifest
(with the sha256 of every file) are added there, and only then is the directory renamed into
place. Any failure removes the temporary directory, so a half-written artifact never exists
under the requested name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.interrupts import cleanup_on_exit
from mobilellm_export.runtimes.manifest import FORMAT, MANIFEST, SCHEMA_VERSION, sha256_file
from mobilellm_export.versions import library_versions


def write_artifact(target: Path, build: Callable[[Path], dict[str, Any]], *, overwrite: bool = False) -> dict[str, Any]:
    """Create `target` atomically. `build(tmp)` writes every file into `tmp` and returns the
    manifest without its `files` section, which is computed here from what is on disk."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise UnsupportedError(f"{target} already exists; choose another --output or pass --overwrite")
    created_parent = not target.parent.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{os.getpid()}-", dir=target.parent))
    except OSError as exc:
        raise UnsupportedError(f"cannot write to {target.parent}: {exc.strerror or exc}") from None
    try:
        with cleanup_on_exit(tmp):
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
    except BaseException:  # a full disk included: the CLI turns OSError into one line
        shutil.rmtree(tmp, ignore_errors=True)
        if created_parent and not any(target.parent.iterdir()):
            target.parent.rmdir()
        raise
    return manifest


def _remove_stale_partials(target: Path) -> None:
    """Temporary directories of earlier exports of `target` whose process is gone (killed with
    SIGKILL, or by a power cut): their names carry the writer's process id."""
    for stale in target.parent.glob(f".{target.name}.partial-*"):
        pid = stale.name.removeprefix(f".{target.name}.partial-").split("-", 1)[0]
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
