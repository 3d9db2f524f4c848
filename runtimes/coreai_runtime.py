"""Runs a Core AI artifact (.aimodel) through coreai-core's runtime.

On macOS 27 that is the system's Core AI; on Linux, coreai-core's bundled reference CPU runtime,
which compiles the asset on open and is slow (it dequantizes every weight on every call and
emulates fp16 arithmetic): figures measured here are not device figures, and the runtime's name
says so.

The KV cache is the asset's states: one NDArray per state, created zeroed, passed to every call
and updated in place by it. `prefill` and `decode` read and write the same arrays. Every call
returns the logits of each of its tokens, so `logits_all` scores a window in one prefill.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mobilellm_export.errors import MissingDependencyError

from .base import DecoderRuntime, RuntimeAdapter, c_stdout_to, span_end

if TYPE_CHECKING:
    from .manifest import Manifest


def _import_runtime() -> tuple[Any, Any]:
    try:
        from coreai.authoring import AIModelAsset
        from coreai.runtime import NDArray
    except ImportError as exc:
        raise MissingDependencyError(f"running Core AI artifacts needs coreai-core: {exc}") from None
    return AIModelAsset, NDArray


class CoreAIRuntime(DecoderRuntime):
    def __init__(self, asset: Path, *, max_context: int, vocab_size: int, compute_precision: str) -> None:
        AIModelAsset, self._NDArray = _import_runtime()
        where = "macOS" if platform.system() == "Darwin" else "Linux reference CPU runtime"
        self.name = f"coreai {compute_precision} ({where})"
        self.max_context = max_context
        self.vocab_size = vocab_size
        self._loop = asyncio.new_event_loop()
        self._executable = AIModelAsset.load(str(asset)).executable()
        with c_stdout_to(2):
            model = self._loop.run_until_complete(self._executable.__aenter__())
            self._prefill = model.load_function("prefill")
            self._decode = model.load_function("decode")
        descriptor = self._decode.desc
        self._state_specs = {name: (tuple(descriptor.state_descriptor(name).shape),
                                    np.dtype(descriptor.state_descriptor(name).dtype))
                             for name in descriptor.state_names}
        self.reset()

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._executable.__aexit__(None, None, None))
            self._loop.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def reset(self) -> None:
        # NDArray copies what it is given, so a fresh cache is fresh arrays.
        self._state = {name: self._NDArray(np.zeros(shape, dtype))
                       for name, (shape, dtype) in self._state_specs.items()}
        self._length = 0

    def _run(self, tokens: list[int], start_pos: int) -> np.ndarray:
        end = span_end(start_pos, len(tokens), cached=self._length, max_context=self.max_context)
        function = self._decode if len(tokens) == 1 else self._prefill
        inputs = {"input_ids": self._NDArray(np.array([tokens], dtype=np.int32)),
                  "input_pos": self._NDArray(np.arange(start_pos, end, dtype=np.int32))}
        out = self._loop.run_until_complete(function(inputs=inputs, state=self._state))
        self._length = end
        return np.asarray(out["logits"].numpy(), dtype=np.float32)[0]

    def forward(self, tokens: list[int], start_pos: int) -> torch.Tensor:
        return torch.from_numpy(self._run(tokens, start_pos)[-1].copy())

    def logits_all(self, tokens: list[int]) -> torch.Tensor:
        """One prefill returns every position's logits."""
        self.reset()
        return torch.from_numpy(self._run(tokens, 0).copy())


class CoreAIAdapter(RuntimeAdapter):
    backend = "coreai"
    apps = ("ios",)

    def preload(self) -> None:
        _import_runtime()

    def open(self, manifest: Manifest, *, threads: int | None = None) -> CoreAIRuntime:
        # The runtime schedules its own threads; a thread count does not apply.
        return CoreAIRuntime(manifest.path("aimodel"), max_context=manifest.runtime.max_context,
                             vocab_size=manifest.runtime.vocab_size,
                             compute_precision=manifest.details.get("compute_precision", "fp16"))
