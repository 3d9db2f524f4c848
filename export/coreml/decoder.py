"""The module Core ML converts: MobileLLM with its KV cache as Core ML states."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mobilellm_export.model.modeling import MobileLLM, Positions, apply_rope, rope_tables, run_blocks, temperature_table


class StateCache(nn.Module):
    """One executed block's cache as Core ML states: fp16 [1, max_context, kv_heads, head_dim].

    Token-major, so the rows one call writes are a contiguous block whatever the prompt length;
    in a head-major layout torch.export specializes on whether the write covers the whole cache.
    """

    def __init__(self, n_kv_heads: int, max_context: int, head_dim: int, n_rep: int) -> None:
        super().__init__()
        shape = (1, max_context, n_kv_heads, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=torch.float16), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=torch.float16), persistent=False)
        self.n_rep = n_rep

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor) -> Tensor:
        """q [1, n, H, D], k/v [1, n, Hkv, D]; mask [1, 1, n, end] additive. Writes positions
        end - n .. end - 1, attends over 0 .. end - 1."""
        n, end = q.shape[1], mask.shape[-1]
        self.k[:, end - n:end] = k.to(self.k.dtype)
        self.v[:, end - n:end] = v.to(self.v.dtype)
        keys = self.k[:, :end].to(q.dtype).transpose(1, 2)
        values = self.v[:, :end].to(q.dtype).transpose(1, 2)
        if self.n_rep > 1:
            keys = keys.repeat_interleave(self.n_rep, dim=1)
            values = values.repeat_interleave(self.n_rep, dim=1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=mask)
        return out.transpose(1, 2)


class CoreMLDecoder(nn.Module):
    """MobileLLM with Core ML states: forward(input_ids [1, n], causal_mask [1, 1, n, end])."""

    def __init__(self, model: MobileLLM, max_context: int) -> None:
        super().__init__()
        config = model.config
        self.embed_tokens = model.embed_tokens
        self.layers = model.layers
        self.norm = model.norm
        self.order = config.execution_order
        self.caches = nn.ModuleList(
            StateCache(config.n_kv_heads, max_context, config.head_dim, config.n_heads // config.n_kv_heads)
            for _ in range(config.n_executed_layers)
        )
        # One row more than the context: slicing the whole table would let torch.export specialize
        # the prompt length to the context length.
        cos, sin = rope_tables(config.head_dim, max_context + 1, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("q_temperature", temperature_table(config, max_context + 1), persistent=False)

    def forward(self, input_ids: Tensor, causal_mask: Tensor) -> Tensor:
        n, end = input_ids.shape[1], causal_mask.shape[-1]
        cos, sin = self.rope_cos[end - n:end], self.rope_sin[end - n:end]
        mask = causal_mask.to(torch.float32)

        def rope(x: Tensor) -> Tensor:
            return apply_rope(x, cos, sin)

        q_scale = None if self.q_temperature is None else self.q_temperature[end - n:end, None, None]
        attends = [lambda q, k, v, c=cache: c.attend(q, k, v, mask=mask) for cache in self.caches]
        x = run_blocks(self.layers, self.order, self.embed_tokens(input_ids), Positions(rope, q_scale), attends)
        # Only the last position's logits: the output projection reads the embedding matrix.
        return F.linear(self.norm(x[:, -1, :]), self.embed_tokens.weight).float()
