"""ONNX artifacts in onnxruntime-genai, the generation loop onnxruntime's own users run (our ONNX
directories carry the genai_config.json it reads), timed around its calls.

onnxruntime-genai reports no statistics of its own, so the clock is ours: `append_tokens` (the
prompt's forward) is the prefill, the first `generate_next_token` ends the time to first token,
and the remaining calls are the decode steps.
"""

from __future__ import annotations

import json
import time
from importlib.metadata import version
from pathlib import Path

from mobilellm_export.errors import UnsupportedError

from .base import StockRun, StockRunner, import_runtime


class GenaiStockRunner(StockRunner):
    timer = "perf_counter around onnxruntime-genai's calls"

    def __init__(self, directory: Path, bos_id: int, *, threads: int | None = None) -> None:
        """Any directory onnxruntime-genai reads (ours, or its own builder's output)."""
        og = self._og = import_runtime("onnxruntime_genai", "running ONNX artifacts in onnxruntime-genai")
        if not (directory / "genai_config.json").is_file():
            raise UnsupportedError(f"{directory} has no genai_config.json for onnxruntime-genai")
        config = og.Config(str(directory))
        if threads:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        self.model = og.Model(config)
        self._tokenizer = og.Tokenizer(self.model)
        self._bos = bos_id
        self.name = f"onnxruntime-genai {version('onnxruntime-genai')}"

    def encode(self, prompt: str) -> list[int]:
        ids = [int(i) for i in self._tokenizer.encode(prompt)]
        # genai's encode adds no BOS for these tokenizers; the model was trained with one (and
        # ExecuTorch's runner adds it), so the prompt starts with it as in every other runner.
        return ids if ids[:1] == [self._bos] else [self._bos, *ids]

    def generate(self, prompt: str, new_tokens: int) -> StockRun:
        return self.generate_ids(self.encode(prompt), new_tokens)

    def generate_ids(self, ids: list[int], new_tokens: int) -> StockRun:
        og = self._og
        params = og.GeneratorParams(self.model)
        # min_length = max_length: the same number of steps every run, whatever the tokens are.
        params.set_search_options(max_length=len(ids) + new_tokens, min_length=len(ids) + new_tokens, do_sample=False)
        generator = og.Generator(self.model, params)
        start = time.perf_counter()
        generator.append_tokens(ids)
        prefilled = time.perf_counter()
        generator.generate_next_token()
        first = time.perf_counter()
        steps = 0
        while not generator.is_done():
            generator.generate_next_token()
            steps += 1
        end = time.perf_counter()
        return StockRun(prompt_tokens=len(ids), generated_tokens=steps, prefill_s=prefilled - start,
                        ttft_s=first - start, decode_s=end - first)
