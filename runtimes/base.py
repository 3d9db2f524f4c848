"""The interface every runtime adapter implements (eager PyTorch now; ExecuTorch, ONNX Runtime and
Core ML as their backends land). Generation, verification and benchmarks only see this.

It mirrors the artifact contract the phone runners use: `forward(tokens, start_pos)` writes the
tokens into the KV cache at start_pos.. and returns the logits of the last token.
"""

from __future__ import annotations

from typing import Protocol

import torch


class DecoderRuntime(Protocol):
    name: str  # e.g. "pytorch-eager", shown in reports
    max_context: int  # positions the KV cache holds
    vocab_size: int

    def reset(self) -> None:
        """Forget the cached sequence (a new generation starts at position 0)."""

    def forward(self, tokens: list[int], start_pos: int) -> torch.Tensor:
        """Run `tokens` at positions start_pos.. and return float logits [vocab] of the last one."""
