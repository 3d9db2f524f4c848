"""Child-process probe for ExecuTorch programs: decode speed, and memory after load.

    python -m mobilellm_export.benchmarks.peers.executorch_probe --artifact NAME=PROGRAM[,DATA] ... [--tokenizer T]

Speed: every artifact is loaded in this one process and the rounds alternate between them
(A, B, A, B, ...), so drift of a shared machine hits all of them alike and the ratios hold.
Two harnesses read each program: the `executorch.runtime` adapter (prefill, then single-token
forwards timed here) and ExecuTorch's C++ `TextLLMRunner` (its own statistics).

Memory: with `--memory`, exactly one artifact is loaded and the resident memory it added is
reported; run one process per artifact so figures never mix. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from mobilellm_export.runtimes.timing import alternating_rounds, synthetic_prompt, time_decode

from ..harness.child import rss_bytes

PROMPT_TEXT = "Return the number of items in the container"


def parse_artifact(text: str) -> tuple[str, Path, Path | None]:
    name, _, paths = text.partition("=")
    program, _, data = paths.partition(",")
    return name, Path(program), Path(data) if data else None


def decode_figures(samples: list[tuple[float, float]]) -> dict[str, Any]:
    """Medians of (prefill, decode) rounds, with the best decode round: the least disturbed by
    other load on a shared machine."""
    decode = [d for _, d in samples]
    return {"prefill_tokens_per_s": statistics.median(p for p, _ in samples),
            "decode_tokens_per_s": statistics.median(decode), "decode_tokens_per_s_best": max(decode),
            "decode_samples": decode}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--artifact", action="append", required=True, type=parse_artifact)
    parser.add_argument("--tokenizer", type=Path, help="also measure with TextLLMRunner")
    parser.add_argument("--memory", action="store_true", help="report memory of one artifact only")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    from mobilellm_export.runtimes.executorch_runtime import ExecuTorchAdapter, ExecuTorchRuntime

    ExecuTorchAdapter().preload()  # runtime libraries are loaded before the baseline reading
    prompt = synthetic_prompt(args.prompt_tokens)
    if args.memory:
        (name, program, data), = args.artifact
        before = rss_bytes()
        start = time.perf_counter()
        runtime = ExecuTorchRuntime(program, data)
        runtime.forward(prompt, 0)
        loaded = time.perf_counter() - start
        after_load = rss_bytes()
        time_decode(runtime, prompt, args.new_tokens)
        print(json.dumps({name: {"load_and_first_prefill_s": loaded, "rss_after_load_bytes": after_load - before,
                                 "rss_after_generation_bytes": rss_bytes() - before}}))
        return

    runtimes = {name: ExecuTorchRuntime(program, data) for name, program, data in args.artifact}
    samples = alternating_rounds({name: (lambda r=runtime: time_decode(r, prompt, args.new_tokens))
                                  for name, runtime in runtimes.items()}, args.rounds)
    result: dict[str, dict[str, Any]] = {name: decode_figures(s) for name, s in samples.items()}
    if args.tokenizer is not None:
        # The same runner class `bench` times our artifacts with, here over bare programs.
        from mobilellm_export.runtimes.executorch_runner import ExecuTorchStockRunner

        runners = {name: ExecuTorchStockRunner.from_files(program, args.tokenizer, data)
                   for name, program, data in args.artifact}
        runs = alternating_rounds({name: (lambda r=runner: r.generate(PROMPT_TEXT, args.new_tokens))
                                   for name, runner in runners.items()}, args.rounds, warmup=0)
        for name, items in runs.items():
            rates = [run.decode_tokens_per_s for run in items if run.decode_tokens_per_s is not None]
            result[name]["runner_decode_tokens_per_s"] = statistics.median(rates) if rates else None
            result[name]["runner_generated_tokens"] = [run.generated_tokens for run in items]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
