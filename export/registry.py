"""The export backends, one small module each, behind one signature.

A backend module provides

    require() -> None
        raise MissingDependencyError naming the package if an optional dependency is missing
    export(model: MobileLLM, request: ExportRequest, out_dir: Path, progress: Progress) -> dict
        write the artifact's files into out_dir; return the manifest's "backend" section
    open_runtime(directory: Path, manifest: dict, *, threads: int | None) -> DecoderRuntime
        run an artifact it wrote (threads: the runtime's CPU threads, None for its default)

and optionally

    runtime_unavailable() -> str | None     why its artifacts cannot run here (None: they can)
    preload_runtime() -> None               load the runtime's libraries ahead of a measurement

and is imported only when chosen, so a missing optional package fails with a clear message
naming it, and nothing else.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from mobilellm_export.errors import MissingDependencyError, UnsupportedError

if TYPE_CHECKING:  # the CLI reads this table for its help; keep it free of torch imports
    from mobilellm_export.quant.schemes import QuantScheme


@dataclass(frozen=True)
class Backend:
    name: str
    module: str
    schemes: tuple[str, ...]  # --quant values
    embedding_choices: tuple[str, ...]  # --embedding-quant values
    default_embedding: Mapping[str, str]  # per scheme
    artifact: str  # what it writes, for help texts

    def load(self) -> ModuleType:
        """Import the backend module and check that its optional packages are installed."""
        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:
            raise MissingDependencyError(f"the {self.name} backend cannot be loaded: {exc}") from None
        module.require()
        return module

    def runtime_unavailable(self) -> str | None:
        """Why this backend's artifacts cannot run on this machine (Core ML off macOS), or None."""
        reason = getattr(self.load(), "runtime_unavailable", None)
        return reason() if reason is not None else None

    def preload_runtime(self) -> None:
        """Load the runtime's libraries (benchmarks take their memory baseline after this)."""
        preload = getattr(self.load(), "preload_runtime", None)
        if preload is not None:
            preload()


@dataclass(frozen=True)
class ExportRequest:
    backend: str
    scheme: QuantScheme
    max_context: int
    compute_units: str | None = None  # Core ML only: the units the app should load the model with


BACKENDS: dict[str, Backend] = {
    "executorch": Backend(
        name="executorch", module="mobilellm_export.export.executorch_xnnpack",
        schemes=("fp32", "int8", "8da4w"), embedding_choices=("none", "int8", "int4"),
        default_embedding={"fp32": "none", "int8": "int8", "8da4w": "int4"},
        artifact="ExecuTorch .pte (XNNPACK) with its weights in a .ptd",
    ),
    "onnx": Backend(
        name="onnx", module="mobilellm_export.export.onnx_ort",
        schemes=("fp32", "int8", "int4"), embedding_choices=("none", "int8", "int4"),
        default_embedding={"fp32": "none", "int8": "int8", "int4": "int4"},
        artifact="ONNX decoder with KV-cache inputs/outputs for onnxruntime and onnxruntime-genai",
    ),
    "coreml": Backend(
        name="coreml", module="mobilellm_export.export.coreml",
        schemes=("fp16", "int8", "int4"), embedding_choices=("none", "int8", "int4"),
        default_embedding={"fp16": "none", "int8": "int8", "int4": "int4"},
        artifact="Core ML stateful .mlpackage (mlprogram, iOS 18 / macOS 15)",
    ),
}


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise UnsupportedError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}") from None
