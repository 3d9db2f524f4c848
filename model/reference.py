"""The PyTorch reference runtime: the eager MobileLLM with its static KV cache."""

from __future__ import annotations

import torch

from mobilellm_export.runtimes.base import DecoderRuntime

from .modeling import MobileLLM


class EagerRuntime(DecoderRuntime):
    name = "pytorch-eager"

    def __init__(self, model: MobileLLM) -> None:
        self.model = model.eval()
        self.max_context = model.max_context
        self.vocab_size = model.config.vocab_size

    def reset(self) -> None:
        self.model.reset_cache()

    @torch.inference_mode()
    def forward(self, tokens: list[int], start_pos: int) -> torch.Tensor:
        ids = torch.tensor([tokens], dtype=torch.long)
        return self.model(ids, torch.tensor([start_pos], dtype=torch.long))[0].float()

    @torch.inference_mode()
    def logits_all(self, tokens: list[int]) -> torch.Tensor:
        """Every position in one pass, without the cache."""
        return self.model.logits(torch.tensor([tokens], dtype=torch.long))[0].float()
