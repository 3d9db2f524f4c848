"""Versions of the libraries that shape an artifact or a measurement, recorded with both."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

_LIBRARIES = ("mobilellm-export", "torch", "executorch", "torchao", "coremltools", "onnx", "onnxruntime",
              "onnxruntime-genai")


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
