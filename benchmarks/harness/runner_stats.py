"""The statistics line of ExecuTorch's LLM runner, as the C++ runner prints it on a phone (adb)
and on the host (`TextLLMRunner`): `PyTorchObserver {json}` with millisecond timestamps."""

from __future__ import annotations

import json
from typing import Any

MARKER = "PyTorchObserver "


def parse_stats(output: str) -> list[dict[str, Any]]:
    """Every statistics record in a runner's output, with derived figures in seconds and tokens/s."""
    records = []
    for line in output.splitlines():
        at = line.find(MARKER)
        if at < 0:
            continue
        raw = json.loads(line[at + len(MARKER):])
        unit = float(raw.get("SCALING_FACTOR_UNITS_PER_SECOND", 1000))
        prompt, generated = raw["prompt_tokens"], raw["generated_tokens"]
        prefill_s = (raw["prompt_eval_end_ms"] - raw["inference_start_ms"]) / unit
        decode_s = (raw["inference_end_ms"] - raw["prompt_eval_end_ms"]) / unit
        records.append({
            "raw": raw,
            "load_s": (raw["model_load_end_ms"] - raw["model_load_start_ms"]) / unit,
            "ttft_s": (raw["first_token_ms"] - raw["inference_start_ms"]) / unit,
            "prompt_tokens": prompt, "generated_tokens": generated,
            "prefill_tokens_per_s": prompt / prefill_s if prefill_s > 0 else None,
            "decode_tokens_per_s": generated / decode_s if decode_s > 0 else None,
        })
    return records
