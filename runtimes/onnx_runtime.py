"""Runs an ONNX artifact through onnxruntime's InferenceSession.

The KV cache is the graph's explicit past/present tensors, used the way onnxruntime-genai uses
them with `past_present_share_buffer`: one preallocated [1, kv_heads, max_context, head_dim]
buffer per executed block, bound through IO binding as both the past input and the present
output. GroupQueryAttention sees the same buffer on both sides, writes the new keys/values at
their positions in place and attends over the positions the attention mask covers, so nothing
is copied per step and starting again at an earlier position needs no clearing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .base import DecoderRuntime, RuntimeAdapter, import_runtime, span_end

if TYPE_CHECKING:
    from .base import StockRunner
    from .manifest import Manifest


def _import_onnxruntime() -> Any:
    return import_runtime("onnxruntime", "running ONNX artifacts")


class OnnxRuntime(DecoderRuntime):
    name = "onnxruntime-cpu"

    def __init__(self, model: Path, *, threads: int | None = None) -> None:
        ort = self._ort = _import_onnxruntime()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self._past_names = [i.name for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        self._present_names = [n.replace("past_key_values.", "present.") for n in self._past_names]
        first = next(i for i in self.session.get_inputs() if i.name.startswith("past_key_values."))
        self._kv_shape = (int(first.shape[1]), int(first.shape[3]))
        self.vocab_size = int(self.session.get_outputs()[0].shape[-1])
        self.max_context = _max_context(self.session)
        self._has_positions = any(i.name == "position_ids" for i in self.session.get_inputs())
        shape = (1, self._kv_shape[0], self.max_context, self._kv_shape[1])
        self._cache = [ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype=np.float32)) for _ in self._past_names]
        self.reset()

    def reset(self) -> None:
        self._length = 0

    def _run(self, tokens: list[int], start_pos: int) -> np.ndarray:
        span_end(start_pos, len(tokens), cached=self._length, max_context=self.max_context)
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", np.array([tokens], dtype=np.int64))
        binding.bind_cpu_input("attention_mask", np.ones((1, start_pos + len(tokens)), dtype=np.int64))
        if self._has_positions:
            binding.bind_cpu_input("position_ids", np.arange(start_pos, start_pos + len(tokens), dtype=np.int64)[None, :])
        binding.bind_output("logits")
        for past, present, value in zip(self._past_names, self._present_names, self._cache):
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)
        self.session.run_with_iobinding(binding)
        self._length = start_pos + len(tokens)
        return binding.get_outputs()[0].numpy()[0]

    def forward(self, tokens: list[int], start_pos: int) -> torch.Tensor:
        return torch.from_numpy(self._run(tokens, start_pos)[-1].copy())

    def logits_all(self, tokens: list[int]) -> torch.Tensor:
        """One prefill returns every position's logits."""
        self.reset()
        return torch.from_numpy(self._run(tokens, 0))


def _max_context(session) -> int:
    """The context the graph was built for: the rows of its rotary tables (read from the model's
    metadata, which the exporter writes)."""
    meta = session.get_modelmeta().custom_metadata_map
    return int(meta["max_context"])


class OnnxAdapter(RuntimeAdapter):
    backend = "onnx"
    stock_runner = "onnxruntime-genai"

    def preload(self) -> None:
        _import_onnxruntime()

    def open(self, manifest: Manifest, *, threads: int | None = None) -> OnnxRuntime:
        return OnnxRuntime(manifest.path("model"), threads=threads)

    def open_stock(self, manifest: Manifest, *, threads: int | None = None) -> StockRunner:
        from .onnx_genai_runner import GenaiStockRunner

        return GenaiStockRunner(manifest.directory, manifest.runtime.bos_id, threads=threads)
