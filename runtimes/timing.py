"""The one timing loop of the project: a warm-up, then timed rounds that alternate between the
things compared, so drift of a shared machine hits all of them alike; medians are reported with
min and max kept."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def synthetic_prompt(length: int, *, vocab_size: int = 1003, bos_id: int = 1) -> list[int]:
    """A fixed prompt of `length` tokens: bos, then ids cycling below `vocab_size` (content does
    not change speed; it is the same every run)."""
    return [bos_id] + [(7 * i + 3) % (vocab_size - 3) + 3 for i in range(length - 1)]


def time_decode(runtime: Any, prompt: list[int], new_tokens: int) -> tuple[float, float]:
    """(prefill tokens/s, decode tokens/s) of one greedy run: the prompt, then `new_tokens`
    single-token steps. Works for anything with reset() and forward(tokens, start_pos)."""
    runtime.reset()
    start = time.perf_counter()
    logits = runtime.forward(prompt, 0)
    prefill = len(prompt) / (time.perf_counter() - start)
    token = int(logits.argmax())
    start = time.perf_counter()
    for pos in range(len(prompt), len(prompt) + new_tokens):
        token = int(runtime.forward([token], pos).argmax())
    return prefill, new_tokens / (time.perf_counter() - start)


def alternating_rounds(runs: Mapping[str, Callable[[], T]], rounds: int, *, warmup: int = 1) -> dict[str, list[T]]:
    """Call every run `warmup` times (not kept), then `rounds` times in turn; the kept results by name."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    samples: dict[str, list[T]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            samples[name].append(run())
    return samples


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def rates(samples: list[tuple[float, float]]) -> dict[str, dict[str, float]]:
    """Summaries of (prefill, decode) samples from time_decode."""
    return {"prefill_tokens_per_s": summary([p for p, _ in samples]),
            "decode_tokens_per_s": summary([d for _, d in samples])}
