"""Child-process probe for ExecuTorch programs: decode speed, and memory after load.

    python -m mobilellm_export.benchmarks.decode_probe --artifact NAME=PROGRAM[,DATA] ... [--tokenizer T]

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

PROMPT_TEXT = "Return the number of items in the container"


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def parse_artifact(text: str) -> tuple[str, Path, Path | None]:
    name, _, paths = text.partition("=")
    program, _, data = paths.partition(",")
    return name, Path(program), Path(data) if data else None


def synthetic_prompt(length: int, *, vocab_size: int = 1003, bos_id: int = 1) -> list[int]:
    """A fixed prompt of `length` tokens: bos, then ids cycling below `vocab_size` (content does
    not change speed; it is the same every run)."""
    return [bos_id] + [(7 * i + 3) % (vocab_size - 3) + 3 for i in range(length - 1)]


def time_decode(runtime: Any, prompt: list[int], new_tokens: int) -> tuple[float, float]:
    start = time.perf_counter()
    logits = runtime.forward(prompt, 0)
    prefill = len(prompt) / (time.perf_counter() - start)
    token = int(logits.argmax())
    start = time.perf_counter()
    for pos in range(len(prompt), len(prompt) + new_tokens):
        token = int(runtime.forward([token], pos).argmax())
    return prefill, new_tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--artifact", action="append", required=True, type=parse_artifact)
    parser.add_argument("--tokenizer", type=Path, help="also measure with TextLLMRunner")
    parser.add_argument("--memory", action="store_true", help="report memory of one artifact only")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    from mobilellm_export.export.executorch_xnnpack import preload_runtime
    from mobilellm_export.runtimes.executorch_runtime import ExecuTorchRuntime

    preload_runtime()  # runtime libraries are loaded before the baseline reading
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
    for runtime in runtimes.values():  # warm-up
        time_decode(runtime, prompt, 8)
    samples: dict[str, dict[str, list[float]]] = {name: {"prefill": [], "decode": []} for name in runtimes}
    for _ in range(args.rounds):
        for name, runtime in runtimes.items():
            prefill, decode = time_decode(runtime, prompt, args.new_tokens)
            samples[name]["prefill"].append(prefill)
            samples[name]["decode"].append(decode)
    result: dict[str, dict[str, Any]] = {
        name: {"prefill_tokens_per_s": statistics.median(s["prefill"]),
               "decode_tokens_per_s": statistics.median(s["decode"]),
               # The best round is the least disturbed by other load on a shared machine.
               "decode_tokens_per_s_best": max(s["decode"]), "decode_samples": s["decode"]}
        for name, s in samples.items()
    }
    if args.tokenizer is not None:
        from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

        runners = {name: TextLLMRunner(str(program), str(args.tokenizer), str(data) if data else None)
                   for name, program, data in args.artifact}
        stats: dict[str, list[dict[str, Any]]] = {name: [] for name in runners}
        config = GenerationConfig(max_new_tokens=args.new_tokens, temperature=0.0, echo=False, num_bos=1)
        for _ in range(args.rounds):
            for name, runner in runners.items():
                runner.reset()
                runner.generate(PROMPT_TEXT, config,
                                stats_callback=lambda s, n=name: stats[n].append(json.loads(s.to_json_string())))
        for name, items in stats.items():
            result[name]["runner_decode_tokens_per_s"] = statistics.median(s["decode_token_per_sec"] for s in items)
            result[name]["runner_generated_tokens"] = [s["generated_tokens"] for s in items]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
