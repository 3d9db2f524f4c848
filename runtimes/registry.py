"""Open an artifact directory with the runtime of the backend that wrote it.

The table below is the only place where backend names meet runtime code; everything else asks
the manifest's backend for its adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import DecoderRuntime, RuntimeAdapter
from .coreai_runtime import CoreAIAdapter
from .coreml_runtime import CoreMLAdapter
from .executorch_runtime import ExecuTorchAdapter
from .manifest import ArtifactError, Manifest, read_manifest, require_intact
from .onnx_runtime import OnnxAdapter
from .tokenizer import Tokenizer, load_tokenizer

ADAPTERS: dict[str, RuntimeAdapter] = {a.backend: a for a in (ExecuTorchAdapter(), OnnxAdapter(), CoreMLAdapter(),
                                                               CoreAIAdapter())}


def adapter_for(manifest: Manifest) -> RuntimeAdapter:
    try:
        return ADAPTERS[manifest.backend]
    except KeyError:
        raise ArtifactError(f"{manifest.directory} was written by an unknown backend {manifest.backend!r}") from None


@dataclass
class OpenedArtifact:
    manifest: Manifest
    runtime: DecoderRuntime
    tokenizer: Tokenizer | None

    def require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ArtifactError(f"{self.manifest.directory} has no tokenizer (the model was exported without one)")
        return self.tokenizer


def artifact_tokenizer(manifest: Manifest) -> Tokenizer | None:
    settings = manifest.runtime
    if not settings.tokenizer:
        return None
    return load_tokenizer(manifest.directory / settings.tokenizer, bos_id=settings.bos_id, eos_ids=settings.eos_ids)


def open_artifact(directory: Path, *, threads: int | None = None, check_files: bool = True) -> OpenedArtifact:
    """The artifact's runtime and tokenizer. Its files are checked against the manifest's sizes
    and sha256 first (about a second per 100 MB): a tampered or damaged artifact is refused
    before anything loads it. `check_files=False` (the CLI's --no-verify-checksums) skips that;
    `verify` passes it after doing the same check as part of its report."""
    manifest = read_manifest(directory)
    if check_files:
        require_intact(manifest)
    runtime = adapter_for(manifest).open(manifest, threads=threads)
    return OpenedArtifact(manifest, runtime, artifact_tokenizer(manifest))
