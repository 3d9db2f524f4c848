"""ExecuTorch artifacts in ExecuTorch's own C++ LLM runner (`TextLLMRunner`, the runner that
Android's `LlmModule` and the iOS demo wrap), timed by the runner's statistics.

The runner prints those statistics as `PyTorchObserver {json}` on a phone (adb) and hands the same
record to a Python callback on the host; `run_from_stats` reads both. Its clock has millisecond
resolution: figures of tiny models (a few ms per call) are coarse, those of real sizes are not.
"""

from __future__ import annotations

import json
import os
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mobilellm_export.errors import UnsupportedError

from .base import StockRun, StockRunner, c_stdout_to
from .executorch_kernels import load_executorch_kernels

if TYPE_CHECKING:
    from .manifest import Manifest


def run_from_stats(raw: dict[str, Any]) -> StockRun:
    """A generation as the runner's statistics record it (timestamps in its units per second)."""
    unit = float(raw.get("SCALING_FACTOR_UNITS_PER_SECOND", 1000))
    return StockRun(prompt_tokens=int(raw["prompt_tokens"]), generated_tokens=int(raw["generated_tokens"]),
                    prefill_s=(raw["prompt_eval_end_ms"] - raw["inference_start_ms"]) / unit,
                    ttft_s=(raw["first_token_ms"] - raw["inference_start_ms"]) / unit,
                    decode_s=(raw["inference_end_ms"] - raw["prompt_eval_end_ms"]) / unit)


class ExecuTorchStockRunner(StockRunner):
    timer = "the C++ runner's own statistics (millisecond clock)"

    def __init__(self, manifest: Manifest, *, threads: int | None = None) -> None:
        if manifest.runtime.tokenizer is None:
            raise UnsupportedError(f"ExecuTorch's LLM runner needs a tokenizer; {manifest.directory} has none")
        self._open(manifest.path("program"), manifest.directory / manifest.runtime.tokenizer,
                   manifest.optional_path("data"), threads)

    @classmethod
    def from_files(cls, program: Path, tokenizer: Path, data: Path | None = None, *,
                   threads: int | None = None) -> "ExecuTorchStockRunner":
        """A program without our manifest (a peer's, e.g. `export_llm`'s), in the same runner."""
        runner = cls.__new__(cls)
        runner._open(program, tokenizer, data, threads)
        return runner

    def _open(self, program: Path, tokenizer: Path, data: Path | None, threads: int | None) -> None:
        load_executorch_kernels()
        from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

        if threads:
            # The runner's XNNPACK delegate runs on ExecuTorch's process-wide threadpool.
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

            _unsafe_reset_threadpool(threads)
        self._runner = TextLLMRunner(str(program), str(tokenizer), str(data) if data is not None else None)
        self._config = GenerationConfig
        self.name = f"executorch {version('executorch')} TextLLMRunner (C++)"

    def generate(self, prompt: str, new_tokens: int) -> StockRun:
        records: list[str] = []
        self._runner.reset()
        # No token callback: the binding would turn every token into a Python str, which fails on a
        # token that ends inside a UTF-8 character. The runner prints the text on the C stdout
        # instead, which is not ours to fill (it goes nowhere; the statistics come by callback).
        with c_stdout_to(os.devnull):
            self._runner.generate(prompt, self._config(max_new_tokens=new_tokens, temperature=0.0, echo=False,
                                                       num_bos=1),
                                  stats_callback=lambda stats: records.append(stats.to_json_string()))
        if not records:
            raise UnsupportedError("ExecuTorch's LLM runner finished without its statistics")
        return run_from_stats(json.loads(records[-1]))
