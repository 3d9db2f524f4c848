"""Quality over any `DecoderRuntime`: per-position negative log-likelihood and top-1 predictions.

Text is scored in non-overlapping windows that each start from an empty cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import DecoderRuntime


@dataclass(frozen=True)
class Scores:
    nll: list[float]  # negative log-likelihood of each predicted token
    top1: list[int]  # the runtime's argmax at each predicting position

    @property
    def perplexity(self) -> float:
        return math.exp(sum(self.nll) / len(self.nll))


def score(runtime: DecoderRuntime, token_windows: list[list[int]]) -> Scores:
    nll: list[float] = []
    top1: list[int] = []
    for ids in token_windows:
        logits = runtime.logits_all(ids[:-1]).float()
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
