"""Runs an ExecuTorch artifact (model.pte + model.ptd) through `executorch.runtime`.

The KV cache lives in the program's mutable buffers. `custom_sdpa` only reads cache positions up
to the current one, so starting again at position 0 needs no clearing: `reset` is a no-op.
Only ExecuTorch's runtime and the kernels our programs call are imported, never the exporter
(exir's lowering, the XNNPACK partitioner).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .base import DecoderRuntime, RuntimeAdapter
from .executorch_kernels import load_executorch_kernels

if TYPE_CHECKING:
    from .base import StockRunner
    from .manifest import Manifest


class ExecuTorchRuntime(DecoderRuntime):
    name = "executorch-xnnpack"

    def __init__(self, program: Path, data: Path | None = None, *, threads: int | None = None) -> None:
        load_executorch_kernels()
        from executorch.runtime import Runtime

        if threads:
            # XNNPACK runs on ExecuTorch's process-wide threadpool.
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

            _unsafe_reset_threadpool(threads)

        self._program = Runtime.get().load_program(program, data_path=data)
        self._forward = self._program.load_method("forward")
        self.max_context = int(self.constant("get_max_context_len"))
        self.vocab_size = int(self.constant("get_vocab_size"))

    def constant(self, name: str) -> object:
        """A constant method of the program (the metadata the LLM runner reads)."""
        value = self._program.load_method(name).execute([])
        return value[0] if isinstance(value, (list, tuple)) and len(value) == 1 else value

    def reset(self) -> None:
        pass

    def forward(self, tokens: list[int], start_pos: int) -> torch.Tensor:
        outputs = self._forward.execute([torch.tensor([tokens], dtype=torch.long),
                                         torch.tensor([start_pos], dtype=torch.long)])
        return outputs[0][0].float()


class ExecuTorchAdapter(RuntimeAdapter):
    backend = "executorch"
    apps = ("android", "ios")
    device_runner = True
    stock_runner = "ExecuTorch's C++ LLM runner (TextLLMRunner)"
    emulated_targets = ("qemu-aarch64",)  # runtimes/emulated

    def preload(self) -> None:
        load_executorch_kernels()
        from executorch.runtime import Runtime

        Runtime.get()

    def open(self, manifest: Manifest, *, threads: int | None = None) -> ExecuTorchRuntime:
        return ExecuTorchRuntime(manifest.path("program"), manifest.optional_path("data"), threads=threads)

    def open_stock(self, manifest: Manifest, *, threads: int | None = None) -> StockRunner:
        from .executorch_runner import ExecuTorchStockRunner

        return ExecuTorchStockRunner(manifest, threads=threads)
