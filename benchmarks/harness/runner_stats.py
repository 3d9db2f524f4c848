"""The statistics line of ExecuTorch's LLM runner, as the C++ runner prints it on a phone (adb)
and on the host (`TextLLMRunner`): `PyTorchObserver {json}` with millisecond timestamps. The
figures are read by the same function the host's stock runner uses (runtimes/executorch_runner)."""

from __future__ import annotations

import json
from typing import Any

from mobilellm_export.runtimes.executorch_runner import run_from_stats

MARKER = "PyTorchObserver "


def parse_stats(output: str) -> list[dict[str, Any]]:
    """Every statistics record in a runner's output, with derived figures in seconds and tokens/s."""
    records = []
    for line in output.splitlines():
        at = line.find(MARKER)
        if at < 0:
            continue
        raw = json.loads(line[at + len(MARKER):])
        run = run_from_stats(raw)
        unit = float(raw.get("SCALING_FACTOR_UNITS_PER_SECOND", 1000))
        records.append({
            "raw": raw,
            "load_s": (raw["model_load_end_ms"] - raw["model_load_start_ms"]) / unit,
            "ttft_s": run.ttft_s, "prompt_tokens": run.prompt_tokens, "generated_tokens": run.generated_tokens,
            "prefill_tokens_per_s": run.prefill_tokens_per_s, "decode_tokens_per_s": run.decode_tokens_per_s,
        })
    return records
