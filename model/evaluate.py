"""Quality measures on held-out text: perplexity, top-1 agreement, and unigram baselines.

Works over any `DecoderRuntime`. Text is scored in non-overlapping windows that each start from an
empty cache; a runtime that can return every position's logits at once (`logits_all`) is used that
way, any other is stepped one token at a time through its KV cache (the path phones run).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from mobilellm_export.runtimes.base import DecoderRuntime


@dataclass(frozen=True)
class Scores:
    nll: list[float]  # negative log-likelihood of each predicted token
    top1: list[int]  # the runtime's argmax at each predicting position

    @property
    def perplexity(self) -> float:
        return math.exp(sum(self.nll) / len(self.nll))


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


def _window_logits(runtime: DecoderRuntime, ids: list[int]) -> torch.Tensor:
    logits_all = getattr(runtime, "logits_all", None)
    if logits_all is not None:
        return logits_all(ids[:-1])
    runtime.reset()
    return torch.stack([runtime.forward([tok], pos) for pos, tok in enumerate(ids[:-1])])


def score(runtime: DecoderRuntime, token_windows: list[list[int]]) -> Scores:
    nll: list[float] = []
    top1: list[int] = []
    for ids in token_windows:
        logits = _window_logits(runtime, ids).float()
        targets = torch.tensor(ids[1:])
        nll.extend(torch.nn.functional.cross_entropy(logits, targets, reduction="none").tolist())
        top1.extend(torch.argmax(logits, dim=-1).tolist())
    return Scores(nll=nll, top1=top1)


def agreement(candidate: Scores, reference: Scores) -> float:
    """Fraction of positions where the two runtimes predict the same next token."""
    if len(candidate.top1) != len(reference.top1):
        raise ValueError("scores cover different positions")
    same = sum(a == b for a, b in zip(candidate.top1, reference.top1))
    return same / len(reference.top1)


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
