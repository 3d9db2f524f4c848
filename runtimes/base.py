"""The two contracts of the running side.

`DecoderRuntime` is what generation, scoring, verification and benchmarks see of any runtime
(the eager reference, ExecuTorch, onnxruntime, Core ML). It mirrors the contract the phone
runners use: `forward(tokens, start_pos)` writes the tokens into the KV cache at start_pos.. and
returns the logits of the last token.

`RuntimeAdapter` is the one piece of backend-specific code that running an artifact needs: how
to open the files a backend wrote. Adapters import their runtime library only when asked to
open or preload, so a host that runs ONNX artifacts never imports ExecuTorch or coremltools.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch

from mobilellm_export.errors import UnsupportedError

if TYPE_CHECKING:
    from .manifest import Manifest


class DecoderRuntime(ABC):
    name: str  # e.g. "pytorch-eager", shown in reports
    max_context: int  # positions the KV cache holds
    vocab_size: int

    @abstractmethod
    def reset(self) -> None:
        """Forget the cached sequence (a new generation starts at position 0)."""

    @abstractmethod
    def forward(self, tokens: list[int], start_pos: int) -> torch.Tensor:
        """Run `tokens` at positions start_pos.. and return float logits [vocab] of the last one."""

    def logits_all(self, tokens: list[int]) -> torch.Tensor:
        """Logits [n, vocab] for every position of `tokens` from position 0. Stepped one token at a
        time through the KV cache (the path phones run); runtimes that return every position's
        logits from one call override this."""
        self.reset()
        return torch.stack([self.forward([tok], pos) for pos, tok in enumerate(tokens)])


def span_end(start_pos: int, count: int, *, cached: int, max_context: int) -> int:
    """Where a call writing `count` tokens at `start_pos` ends, for runtimes that track how many
    positions their cache holds: refused (one clear error) past the cached tokens or the context."""
    if start_pos > cached:
        raise UnsupportedError(f"position {start_pos} is past the {cached} cached tokens")
    end = start_pos + count
    if end > max_context:
        raise UnsupportedError(f"{end} tokens exceed the context of {max_context}")
    return end


class RuntimeAdapter(ABC):
    backend: ClassVar[str]  # the manifest's "backend" value this adapter runs
    apps: ClassVar[tuple[str, ...]] = ()  # sample apps (bundle --app) whose runtime loads these artifacts
    device_runner: ClassVar[bool] = False  # bench --target adb runs them with ExecuTorch's runner binary

    def unavailable(self) -> str | None:
        """Why these artifacts cannot run on this machine (Core ML off macOS), or None."""
        return None

    @abstractmethod
    def preload(self) -> None:
        """Load the runtime's libraries (benchmarks take their memory baseline after this)."""

    @abstractmethod
    def open(self, manifest: Manifest, *, threads: int | None = None) -> DecoderRuntime:
        """A runtime over the artifact (threads: the runtime's CPU threads, None for its default)."""
