"""Token generation over any `DecoderRuntime`: greedy or sampled, streamed, timed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mobilellm_export.errors import GenerationError

from .base import DecoderRuntime


@dataclass(frozen=True)
class Sampling:
    """temperature 0 means greedy (argmax); otherwise softmax sampling with optional top-k/top-p."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise GenerationError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise GenerationError(f"top-k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise GenerationError(f"top-p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def pick_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    if sampling.greedy:
        return int(torch.argmax(logits))
    scores = logits.float() / sampling.temperature
    if sampling.top_k is not None and sampling.top_k < scores.numel():
        kth = torch.topk(scores, sampling.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if sampling.top_p is not None and sampling.top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        drop = torch.cumsum(sorted_probs, 0) - sorted_probs >= sampling.top_p
        sorted_probs[drop] = 0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class Generation:
    prompt_ids: list[int]
    new_ids: list[int]
    stop_reason: str  # "eos", "max_new_tokens" or "context"
    prefill_s: float
    decode_s: float

    @property
    def decode_tokens_per_s(self) -> float:
        # The first new token comes from prefill; each later one costs one decode step.
        steps = max(len(self.new_ids) - 1, 0)
        return steps / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        return len(self.prompt_ids) / self.prefill_s if self.prefill_s > 0 else 0.0


def generate(
    runtime: DecoderRuntime,
    prompt_ids: list[int],
    *,
    max_new_tokens: int,
    eos_ids: tuple[int, ...] = (),
    sampling: Sampling = Sampling(),
    on_token: Callable[[int], None] | None = None,
) -> Generation:
    """Prefill the prompt, then decode one token at a time until eos, the budget or the context."""
    if not prompt_ids:
        raise GenerationError("the prompt is empty")
    if len(prompt_ids) >= runtime.max_context:
        raise GenerationError(
            f"prompt has {len(prompt_ids)} tokens but the context holds {runtime.max_context}; "
            "shorten the prompt or use a longer context"
        )
    if max_new_tokens < 1:
        raise GenerationError(f"max new tokens must be >= 1, got {max_new_tokens}")
    generator = None if sampling.seed is None else torch.Generator().manual_seed(sampling.seed)
    runtime.reset()
    start = time.perf_counter()
    logits = runtime.forward(list(prompt_ids), 0)
    prefill_s = time.perf_counter() - start
    new_ids: list[int] = []
    pos = len(prompt_ids)
    stop = "max_new_tokens"
    start = time.perf_counter()
    while True:
        token = pick_token(logits, sampling, generator)
        new_ids.append(token)
        if on_token is not None:
            on_token(token)
        if token in eos_ids:
            stop = "eos"
            break
        if len(new_ids) >= max_new_tokens:
            break
        if pos >= runtime.max_context:
            stop = "context"
            break
        logits = runtime.forward([token], pos)
        pos += 1
    return Generation(prompt_ids=list(prompt_ids), new_ids=new_ids, stop_reason=stop,
                      prefill_s=prefill_s, decode_s=time.perf_counter() - start)


class TextStream:
    """Turns a stream of token ids into text pieces, holding back incomplete UTF-8 sequences."""

    def __init__(self, decode: Callable[[list[int]], str], emit: Callable[[str], None]) -> None:
        self._decode, self._emit = decode, emit
        self._ids: list[int] = []
        self._shown = 0

    def __call__(self, token: int) -> None:
        self._ids.append(token)
        text = self._decode(self._ids)
        if text.endswith("\ufffd"):  # a multi-byte character is not complete yet
            return
        self._emit(text[self._shown:])
        self._shown = len(text)
