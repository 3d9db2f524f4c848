"""One artifact, measured in its own process (run by run.py; prints one `BENCH-RESULT {json}` line,
marked because native libraries may print on the same stdout).

    python -m mobilellm_export.benchmarks.harness.child ARTIFACT_DIR --threads 2 --prompt-lengths 32,128
        --new-tokens 64 --repeats 5 [--stock | --quality --eval-tokens 1024]

Speed mode: load time, resident memory after load, then per prompt length a warm-up and
`repeats` runs of prefill + greedy decode (time to first token, prefill tokens/s, decode
tokens/s), resident memory after generation and the process's peak. By default through this
package's Python adapter (token ids in, logits out, timed here); with `--stock` through the
backend's stock runner (ExecuTorch's C++ runner, onnxruntime-genai), which takes a text prompt
that the artifact's tokenizer makes `length` tokens long, and times itself where it can. Quality
mode (a separate process, so the reference model never counts in the memory figures): perplexity
on the embedded model's held-out text and top-1 agreement with the fp32 eager reference.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

RESULT = "BENCH-RESULT "
# A counting prompt: models continue it rather than stop, so stock runners (which stop at an end
# of sequence token) run the decode steps asked for.
COUNT_WORDS = "one two three four five six seven eight nine ten eleven twelve".split()


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def rss_bytes() -> int:
    return _status_bytes("VmRSS")


def peak_rss_bytes() -> int:
    """This process's own high-water mark. Not getrusage's ru_maxrss: Linux carries the parent's
    resident size across fork and exec into it, so a child of a large parent reports the parent's."""
    return _status_bytes("VmHWM")


def measure_speed(directory: Path, prompt_lengths: list[int], new_tokens: int, repeats: int,
                  threads: int | None) -> dict[str, Any]:
    # The runtime side only: measuring an artifact never loads the exporter.
    from mobilellm_export.runtimes.manifest import read_manifest
    from mobilellm_export.runtimes.registry import adapter_for, open_artifact
    from mobilellm_export.runtimes.timing import alternating_rounds, summary, synthetic_prompt, time_decode

    manifest = read_manifest(directory)
    settings = manifest.runtime
    adapter_for(manifest).preload()
    before = rss_bytes()
    start = time.perf_counter()
    # The parent (run.py) checked the files against the manifest before starting this process;
    # hashing them again here would count in the load time.
    runtime = open_artifact(directory, threads=threads, check_files=False).runtime
    load_s = time.perf_counter() - start
    after_load = rss_bytes()
    per_length: dict[str, Any] = {}
    for length in prompt_lengths:
        if length + new_tokens > runtime.max_context:
            per_length[str(length)] = {"skipped": f"{length} + {new_tokens} tokens exceed the context {runtime.max_context}"}
            continue
        prompt = synthetic_prompt(length, vocab_size=settings.vocab_size, bos_id=settings.bos_id)
        # The first token comes from the prefill; the other new_tokens - 1 are decode steps.
        runs = alternating_rounds({"run": lambda: time_decode(runtime, prompt, new_tokens - 1)}, repeats)["run"]
        prefill = [p for p, _ in runs]
        per_length[str(length)] = {"ttft_s": summary([length / rate for rate in prefill]),
                                   "prefill_tokens_per_s": summary(prefill),
                                   "decode_tokens_per_s": summary([d for _, d in runs])}
    return {
        "runtime": runtime.name, "load_s": load_s,
        "rss_after_load_bytes": after_load - before, "rss_after_generation_bytes": rss_bytes() - before,
        "peak_rss_bytes": peak_rss_bytes(),
        "prompt_lengths": per_length, "max_context": runtime.max_context,
    }


def prompt_text(tokenizer: Any, length: int) -> str:
    """Text that the tokenizer makes `length` tokens with the BOS a runner adds. Cut text can
    tokenize differently at the cut, so the cut moves until the text itself has the length (or
    the closest a few tries get; the runner reports what it ran)."""
    words: list[str] = []
    while len(tokenizer.encode(" ".join(words), bos=False)) < length + 8:
        words.extend(f"{w}," for w in COUNT_WORDS)
    ids = tokenizer.encode(" ".join(words), bos=False)
    cut = length - 1
    for _ in range(4):
        text = tokenizer.decode(ids[:cut])
        got = len(tokenizer.encode(text, bos=False))
        if got == length - 1:
            break
        cut += length - 1 - got
    return text


def measure_stock(directory: Path, prompt_lengths: list[int], new_tokens: int, repeats: int,
                  threads: int | None) -> dict[str, Any]:
    """The same figures as measure_speed, through the backend's stock runner."""
    from mobilellm_export.runtimes.manifest import read_manifest
    from mobilellm_export.runtimes.registry import adapter_for, artifact_tokenizer
    from mobilellm_export.runtimes.timing import alternating_rounds, summary

    manifest = read_manifest(directory)
    tokenizer = artifact_tokenizer(manifest)
    if tokenizer is None:
        raise SystemExit(f"{directory} has no tokenizer: stock runners take text")
    adapter = adapter_for(manifest)
    adapter.preload()
    before = rss_bytes()
    start = time.perf_counter()
    runner = adapter.open_stock(manifest, threads=threads)
    # ExecuTorch's runner loads the program on its first generate: a one-token generation makes
    # "after load" mean the same for every runner (the load time includes that short prefill).
    runner.generate(prompt_text(tokenizer, 4), 1)
    load_s = time.perf_counter() - start
    after_load = rss_bytes()
    per_length: dict[str, Any] = {}
    for length in prompt_lengths:
        prompt = prompt_text(tokenizer, length)
        runs = alternating_rounds({"run": lambda p=prompt: runner.generate(p, new_tokens)}, repeats)["run"]
        # A rate is absent when its span read 0 on the runner's millisecond clock (tiny models).
        rates = {key: [getattr(r, key) for r in runs if getattr(r, key)]
                 for key in ("prefill_tokens_per_s", "decode_tokens_per_s")}
        per_length[str(length)] = {
            "ttft_s": summary([r.ttft_s for r in runs]),
            **{key: summary(values) for key, values in rates.items() if values},
            "prompt_tokens": runs[-1].prompt_tokens,
            # Fewer than new_tokens - 1 when the runner met an end of sequence token.
            "generated_tokens": min(r.generated_tokens for r in runs),
        }
    return {
        "runtime": runner.name, "timer": runner.timer, "load_s": load_s, "load_includes_first_generation": True,
        "rss_after_load_bytes": after_load - before, "rss_after_generation_bytes": rss_bytes() - before,
        "peak_rss_bytes": peak_rss_bytes(),
        "prompt_lengths": per_length,
    }


def measure_quality(directory: Path, eval_tokens: int) -> dict[str, Any]:
    from mobilellm_export.verify import verify_artifact

    report = verify_artifact(directory, eval_tokens=eval_tokens)
    figures = report.figures
    out: dict[str, Any] = {"verify_passed": report.passed}
    if "perplexity" in figures:
        out.update(perplexity=figures["perplexity"], reference_perplexity=figures["reference_perplexity"],
                   agreement=figures["agreement"], positions=figures["positions"])
    else:
        out["note"] = "synthetic weights: perplexity and agreement are not meaningful and are not reported"
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-lengths", default="32,128")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stock", action="store_true", help="through the backend's stock runner")
    parser.add_argument("--quality", action="store_true")
    parser.add_argument("--eval-tokens", type=int, default=1024)
    args = parser.parse_args()

    import torch

    from mobilellm_export.quiet import quiet_third_party

    quiet_third_party()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    lengths = [int(x) for x in args.prompt_lengths.split(",") if x]
    if args.quality:
        result = measure_quality(args.artifact, args.eval_tokens)
    elif args.stock:
        result = measure_stock(args.artifact, lengths, args.new_tokens, args.repeats, args.threads)
    else:
        result = measure_speed(args.artifact, lengths, args.new_tokens, args.repeats, args.threads)
    print("\n" + RESULT + json.dumps(result), flush=True)  # on a line of its own


if __name__ == "__main__":
    main()
