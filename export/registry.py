"""The export backends, by name. Each is a `Backend` (export/contract.py) in a package of its own."""

from __future__ import annotations

from mobilellm_export.errors import UnsupportedError

from .contract import Backend
from .coreai import CoreAIBackend
from .coreml import CoreMLBackend
from .executorch import ExecuTorchBackend
from .onnx import OnnxBackend

BACKENDS: dict[str, Backend] = {b.name: b for b in (ExecuTorchBackend(), OnnxBackend(), CoreMLBackend(),
                                                    CoreAIBackend())}


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise UnsupportedError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}") from None
