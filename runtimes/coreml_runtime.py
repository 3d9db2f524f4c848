"""Runs a Core ML artifact (stateful .mlpackage) through coremltools' `MLModel` on macOS.

The KV cache is the model's states, created with `make_state()` and passed to every `predict`.
Positions come from the input shapes: a call with n tokens and a causal mask [1, 1, n, end]
writes positions end - n .. end - 1, so starting again at position 0 needs a fresh state only
for tidiness (stale positions beyond `end` are never read).

Core ML executes only on macOS; elsewhere opening a runtime raises one clear error.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mobilellm_export.errors import MissingDependencyError, UnsupportedError

from .base import DecoderRuntime, RuntimeAdapter, span_end

if TYPE_CHECKING:
    from .manifest import Manifest

_UNITS = {"all": "ALL", "cpu_and_ne": "CPU_AND_NE", "cpu_and_gpu": "CPU_AND_GPU", "cpu_only": "CPU_ONLY"}


def causal_mask(n: int, end: int) -> torch.Tensor:
    """The additive mask input for n new tokens ending at position `end`: query i (position
    end - n + i) sees keys 0 .. end - n + i. Part of the package's interface (the exporter traces
    with it, apps build it the same way)."""
    keys = torch.arange(end)[None, :]
    queries = torch.arange(end - n, end)[:, None]
    return torch.where(keys <= queries, 0.0, float("-inf")).to(torch.float16)[None, None]


def _unavailable() -> str | None:
    if platform.system() != "Darwin":
        return "Core ML models execute only on macOS (iOS/iPadOS devices); this is " + platform.system()
    return None


class CoreMLRuntime(DecoderRuntime):
    name = "coreml"

    def __init__(self, package: Path, *, max_context: int, vocab_size: int, compute_units: str = "all") -> None:
        reason = _unavailable()
        if reason:
            raise UnsupportedError(f"{reason}: {package} was converted and can be checked structurally here "
                                   "(mobilellm-export verify), but not run")
        try:
            import coremltools as ct
        except ImportError as exc:
            raise MissingDependencyError(f"running Core ML artifacts needs coremltools: {exc}") from None
        self.model = ct.models.MLModel(str(package), compute_units=getattr(ct.ComputeUnit, _UNITS[compute_units]))
        self.name = f"coreml-{compute_units}"
        self.max_context = max_context
        self.vocab_size = vocab_size
        self.reset()

    def reset(self) -> None:
        self._state = self.model.make_state()
        self._length = 0

    def forward(self, tokens: list[int], start_pos: int) -> torch.Tensor:
        end = span_end(start_pos, len(tokens), cached=self._length, max_context=self.max_context)
        mask = causal_mask(len(tokens), end).numpy()
        out = self.model.predict({"input_ids": np.array([tokens], dtype=np.int32), "causal_mask": mask},
                                 state=self._state)
        self._length = end
        return torch.from_numpy(np.asarray(out["logits"], dtype=np.float32).reshape(-1).copy())


class CoreMLAdapter(RuntimeAdapter):
    backend = "coreml"
    apps = ("ios",)

    def unavailable(self) -> str | None:
        return _unavailable()

    def preload(self) -> None:
        import coremltools  # noqa: F401

    def open(self, manifest: Manifest, *, threads: int | None = None) -> CoreMLRuntime:
        # Core ML schedules its own compute units; a thread count does not apply.
        return CoreMLRuntime(manifest.path("package"), max_context=manifest.runtime.max_context,
                             vocab_size=manifest.runtime.vocab_size,
                             compute_units=manifest.details.get("compute_units", "all"))
