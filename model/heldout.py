"""Held-out text for quality figures: token streams, scoring windows, the embedded model's held-out
split, and unigram baselines (runtimes/scoring.py scores a runtime on the windows)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable


def token_stream(docs: Iterable[str], encode, bos_id: int, eos_id: int) -> list[int]:
    """Documents as one stream, each as bos, text, eos (how the embedded model was trained, so it
    learns to end a text as well as to start one)."""
    stream: list[int] = []
    for text in docs:
        stream.append(bos_id)
        stream.extend(encode(text))
        stream.append(eos_id)
    return stream


def windows(stream: list[int], window: int, max_tokens: int | None = None) -> list[list[int]]:
    if window < 2:
        raise ValueError("a window needs at least two tokens")
    stream = stream[:max_tokens] if max_tokens else stream
    return [stream[i:i + window] for i in range(0, len(stream) - 1, window) if len(stream[i:i + window]) >= 2]


def unigram_perplexity(train_counts: Counter[int], eval_ids: list[int], vocab_size: int) -> float:
    """Perplexity of an add-one-smoothed unigram model fitted on training tokens."""
    total = sum(train_counts.values()) + vocab_size
    nll = sum(-math.log((train_counts.get(t, 0) + 1) / total) for t in eval_ids)
    return math.exp(nll / len(eval_ids))


def oracle_unigram_perplexity(eval_ids: list[int]) -> float:
    """Perplexity of the unigram model fitted on the evaluated text itself: no unigram model,
    however trained, does better on that text, so it is a strict baseline."""
    counts = Counter(eval_ids)
    n = len(eval_ids)
    return math.exp(-sum(c * math.log(c / n) for c in counts.values()) / n)


def heldout_windows(tokenizer, *, window: int = 256, max_tokens: int | None = None) -> list[list[int]]:
    """The embedded model's held-out text (committed with it), tokenized into scoring windows."""
    from .corpus import read_jsonl
    from .sources import embedded_dir

    docs = read_jsonl(embedded_dir() / "heldout.jsonl")
    stream = token_stream((d.text for d in docs), lambda t: tokenizer.encode(t, bos=False), tokenizer.bos_id,
                          tokenizer.eos_id)
    return windows(stream, window, max_tokens)
