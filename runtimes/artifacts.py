"""Open an artifact directory with the runtime of the backend that wrote it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobilellm_export.export.artifact import ArtifactError, read_manifest
from mobilellm_export.export.registry import get_backend
from mobilellm_export.model.tokenizer import Tokenizer, load_tokenizer

from .base import DecoderRuntime


@dataclass
class OpenedArtifact:
    directory: Path
    manifest: dict[str, Any]
    runtime: DecoderRuntime
    tokenizer: Tokenizer | None

    def require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ArtifactError(f"{self.directory} has no tokenizer (the model was exported without one)")
        return self.tokenizer


def open_artifact(directory: Path, *, threads: int | None = None) -> OpenedArtifact:
    directory = Path(directory)
    manifest = read_manifest(directory)
    missing = [name for name in manifest["files"] if not (directory / name).is_file()]
    if missing:
        raise ArtifactError(f"{directory} is incomplete: {', '.join(missing)} missing")
    runtime = get_backend(manifest["backend"]).load().open_runtime(directory, manifest, threads=threads)
    settings = manifest["runtime"]
    tokenizer = None
    if settings.get("tokenizer"):
        tokenizer = load_tokenizer(directory / settings["tokenizer"], bos_id=settings["bos_id"],
                                   eos_id=settings["eos_ids"][0])
    return OpenedArtifact(directory, manifest, runtime, tokenizer)
