"""The two contracts of the running side.

`DecoderRuntime` is what generation, scoring, verification and benchmarks see of any runtime
(the eager reference, ExecuTorch, onnxruntime, Core ML). It mirrors the contract the phone
runners use: `forward(tokens, start_pos)` writes the tokens into the KV cache at start_pos.. and
returns the logits of the last token.

`RuntimeAdapter` is the one piece of backend-specific code that running an artifact needs: how
to open the files a backend wrote. Adapters import their runtime library only when asked to
open or preload, so a host that runs ONNX artifacts never imports ExecuTorch or coremltools.

`StockRunner` is the generation loop a backend's own users run (ExecuTorch's C++ LLM runner, which
Android's LlmModule and the iOS runner wrap; onnxruntime-genai), timed by itself where it reports
its own statistics. Benchmarks measure artifacts through it, since that is what phones run; the
`DecoderRuntime` loop above is this package's Python view of the same program.
"""

from __future__ import annotations

import contextlib
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from mobilellm_export.errors import MissingDependencyError, UnsupportedError

if TYPE_CHECKING:
    from .manifest import Manifest


def import_runtime(module: str, purpose: str) -> Any:
    """A runtime library, imported when an adapter needs it; missing: one line naming what for."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{purpose} needs {module}: {exc}") from None


@contextlib.contextmanager
def c_stdout_to(target: int | str) -> Iterator[None]:
    """Native runtimes that print on the C stdout (Core AI's function loads, ExecuTorch's runner
    printing its generated text): send it to a file descriptor or a path, since `generate --json`
    and the demo's table own stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    fd = os.open(target, os.O_WRONLY) if isinstance(target, str) else target
    try:
        os.dup2(fd, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        if isinstance(target, str):
            os.close(fd)


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


@dataclass(frozen=True)
class StockRun:
    """One greedy generation in a stock runner: the prompt, then the first token, then
    `generated_tokens` decode steps (the runner's own count, which excludes the first token)."""

    prompt_tokens: int
    generated_tokens: int
    prefill_s: float  # prompt in, logits of its last token out
    ttft_s: float  # prompt in, first new token sampled
    decode_s: float  # the decode steps after the first token

    @property
    def prefill_tokens_per_s(self) -> float | None:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else None

    @property
    def decode_tokens_per_s(self) -> float | None:
        return self.generated_tokens / self.decode_s if self.decode_s > 0 and self.generated_tokens else None


class StockRunner(ABC):
    name: str  # e.g. "executorch TextLLMRunner (C++)", shown in reports
    timer: str  # whose clock the figures come from, e.g. "the runner's own statistics (ms)"

    @abstractmethod
    def generate(self, prompt: str, new_tokens: int) -> StockRun:
        """Greedy generation of up to `new_tokens` tokens after `prompt` (text, tokenized by the
        runner as its users' apps do), from an empty cache."""


class RuntimeAdapter(ABC):
    backend: ClassVar[str]  # the manifest's "backend" value this adapter runs
    apps: ClassVar[tuple[str, ...]] = ()  # sample apps (bundle --app) whose runtime loads these artifacts
    device_runner: ClassVar[bool] = False  # bench --target adb runs them with ExecuTorch's runner binary
    stock_runner: ClassVar[str | None] = None  # the runner the backend's users run, if this package drives it
    emulated_targets: ClassVar[tuple[str, ...]] = ()  # verify/bench --target values that run them emulated

    def unavailable(self) -> str | None:
        """Why these artifacts cannot run on this machine (Core ML off macOS), or None."""
        return None

    @abstractmethod
    def preload(self) -> None:
        """Load the runtime's libraries (benchmarks take their memory baseline after this)."""

    @abstractmethod
    def open(self, manifest: Manifest, *, threads: int | None = None) -> DecoderRuntime:
        """A runtime over the artifact (threads: the runtime's CPU threads, None for its default)."""

    def open_stock(self, manifest: Manifest, *, threads: int | None = None) -> StockRunner:
        """The artifact in its backend's stock runner (adapters with `stock_runner` set)."""
        raise UnsupportedError(f"{manifest.backend} artifacts have no stock runner this package drives")
