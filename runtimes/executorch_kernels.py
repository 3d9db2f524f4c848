"""The kernels ExecuTorch programs of this package call outside XNNPACK, registered once for the
Python runtime and for the C++ runner binding alike."""

from __future__ import annotations

from mobilellm_export.errors import MissingDependencyError


def load_executorch_kernels() -> None:
    """Register the kernels our programs call outside XNNPACK: ExecuTorch's LLM custom ops
    (update_cache, custom_sdpa) and its quantized kernels (embedding_byte / embedding_4bit)."""
    try:
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
        import executorch.kernels.quantized  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"running ExecuTorch artifacts needs executorch==1.5.1: {exc}") from None
