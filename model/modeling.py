"""The MobileLLM decoder in PyTorch: the reference every exported artifact is checked against.

Llama-style blocks (RMSNorm, rotary embeddings, grouped-query attention, SwiGLU) with MobileLLM's
two kinds of weight sharing:

* embedding sharing: the output projection reads `embed_tokens.weight`; there is no second matrix;
* immediate block-wise sharing (LS variants): block i runs twice in a row. The weights are shared
  but each *executed* block has its own KV-cache slot, because the second run sees different
  inputs than the first. (The published remote code reuses one slot for both runs, which is why it
  ships with `use_cache: false`.)

Module and parameter names follow Hugging Face's Llama without the `model.` prefix, so a
checkpoint maps onto this module by a fixed rename (see checkpoint.py).

MobileLLM-R1 (Llama4-text) blocks add, per the config: a parameter-free RMS norm of q and k after
RoPE (`qk_norm`), blocks without RoPE ("NoPE") whose queries may be scaled by a position-dependent
temperature, and chunked attention. Their adjacent-pair rotary embedding is computed here in the
rotate-half form: loading permutes each head's q/k rows so both forms give the same scores.

The KV cache is static and preallocated (a buffer per executed block) and written with
`index_copy_`, and attention runs over the whole cache with a position mask: shapes never depend
on how many tokens are cached, which is what `torch.export` and the phone runtimes need.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mobilellm_export.errors import ConfigError

from .config import MobileLLMConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in fp32 whatever the activation dtype, as Hugging Face's Llama does.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_tables(head_dim: int, max_positions: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos/sin tables [max_positions, head_dim] in the rotate-half layout of HF checkpoints."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    freqs = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().float(), emb.sin().float()


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, n, heads, head_dim]; cos/sin [n, head_dim]."""
    return x * cos[:, None, :] + _rotate_half(x) * sin[:, None, :]


def temperature_table(config: MobileLLMConfig, max_positions: int) -> Tensor | None:
    """Llama4's query temperature of NoPE blocks per position, [max_positions] (None when off):
    1 + scale * log1p(floor((pos + 1) / floor_scale)), in fp32 as transformers computes it."""
    if not config.temperature_tuned:
        return None
    pos = torch.arange(max_positions, dtype=torch.float32)
    return torch.log1p(torch.floor((pos + 1.0) / config.nope_floor_scale)) * config.nope_attn_scale + 1.0


@dataclass(frozen=True)
class Positions:
    """What the blocks need to know about the current tokens' positions; each backend builds it
    from its own tables and inputs."""

    rope: Callable[[Tensor], Tensor]  # rotary embedding of q or k [B, n, H, D] at the positions
    q_scale: Tensor | None = None  # NoPE blocks' query temperature, broadcastable to q (None: off)


class QKNorm(nn.Module):
    """Llama4's parameter-free L2 norm of q and k over the head dimension (an RMS norm without a
    weight), in fp32 whatever the activation dtype."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


# How one executed block attends: (q [B, n, H, D], k, v [B, n, Hkv, D]) -> [B, n, H, D]. The
# eager model reads and writes its KV cache here; each backend supplies its own (ExecuTorch's
# custom cache ops, explicit cache inputs/outputs for ONNX, states for Core ML) while the
# projections, rotary embeddings and everything else stay this module's code.
Attend = Callable[[Tensor, Tensor, Tensor], Tensor]


def sdpa_gqa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Attention in token-major layout; query head h reads key/value head h // n_rep (HF's grouping)."""
    n_rep = q.shape[2] // k.shape[2]
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if n_rep > 1:
        k = k.repeat_interleave(n_rep, dim=1)
        v = v.repeat_interleave(n_rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)


def replace_parameter(model: nn.Module, name: str, value: nn.Parameter) -> None:
    """Put `value` in place of the parameter `model` names `name` ("layers.0.mlp.up_proj.weight")."""
    owner, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(owner), attribute, value)


class KVCache(nn.Module):
    """One executed block's static cache: [batch, max_context, kv_heads, head_dim] keys and values."""

    def __init__(self, batch: int, n_kv_heads: int, max_context: int, head_dim: int, dtype: torch.dtype) -> None:
        super().__init__()
        shape = (batch, max_context, n_kv_heads, head_dim)
        # Not persistent: the cache is runtime state, never part of a checkpoint.
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype), persistent=False)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, positions: Tensor, mask: Tensor) -> Tensor:
        """Write k/v at `positions` [n], then attend over the whole cache under `mask` [n, max_context]."""
        self.k_cache.index_copy_(1, positions, k.to(self.k_cache.dtype))
        self.v_cache.index_copy_(1, positions, v.to(self.v_cache.dtype))
        return sdpa_gqa(q, self.k_cache.to(q.dtype), self.v_cache.to(q.dtype), mask)


class Attention(nn.Module):
    def __init__(self, config: MobileLLMConfig, block: int) -> None:
        super().__init__()
        self.use_rope = config.uses_rope(block)
        # Only RoPE blocks normalise q and k (transformers' Llama4 does the same).
        self.qk_norm = QKNorm(config.norm_eps) if config.qk_norm and self.use_rope else None
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.dim, config.n_heads * config.head_dim, bias=False)
        self.k_proj = nn.Linear(config.dim, config.kv_dim, bias=False)
        self.v_proj = nn.Linear(config.dim, config.kv_dim, bias=False)
        self.o_proj = nn.Linear(config.n_heads * config.head_dim, config.dim, bias=False)

    def forward(self, x: Tensor, positions: Positions, attend: Attend) -> Tensor:
        bsz = x.shape[0]
        # The sequence length is left to -1 rather than taken from x.shape: exported with a
        # dynamic length, a symbolic size here would keep XNNPACK from taking the reshape.
        q = self.q_proj(x).view(bsz, -1, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(bsz, -1, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(bsz, -1, self.n_kv_heads, self.head_dim)
        if self.use_rope:
            q, k = positions.rope(q), positions.rope(k)
            if self.qk_norm is not None:
                q, k = self.qk_norm(q), self.qk_norm(k)
        elif positions.q_scale is not None:
            q = q * positions.q_scale
        return self.o_proj(attend(q, k, v).reshape(bsz, -1, self.n_heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: MobileLLMConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.dim, config.ffn_dim, bias=False)
        self.up_proj = nn.Linear(config.dim, config.ffn_dim, bias=False)
        self.down_proj = nn.Linear(config.ffn_dim, config.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: MobileLLMConfig, block: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.self_attn = Attention(config, block)
        self.post_attention_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, positions: Positions, attend: Attend) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), positions, attend)
        return x + self.mlp(self.post_attention_layernorm(x))


def run_blocks(layers: nn.ModuleList, order: tuple[int, ...], x: Tensor, positions: Positions,
               attends: list[Attend]) -> Tensor:
    """The executed stack: block `order[i]` with its own attend (cache slot) `attends[i]`."""
    for block, attend in zip(order, attends):
        x = layers[block](x, positions, attend)
    return x


class MobileLLM(nn.Module):
    """MobileLLM causal LM with an optional static KV cache.

    `forward(tokens [B, n], input_pos [1])` writes the tokens' keys/values at positions
    input_pos .. input_pos+n-1 and returns the logits of the last position, [B, vocab]: the
    contract the phone runtimes use for both prefill and decode. With `input_pos=None` the cache
    is neither read nor written and positions start at 0 (full recomputation).
    """

    def __init__(self, config: MobileLLMConfig, *, max_context: int | None = None, max_batch: int = 1,
                 cache_dtype: torch.dtype = torch.float32, empty_weights: bool = False) -> None:
        """`empty_weights`: parameters on the meta device, for a loader that assigns the
        checkpoint's tensors (random initial values would be a second copy of the model in memory
        for a moment, the peak of an export's loading). Buffers are always real."""
        super().__init__()
        self.config = config
        self.max_context = max_context or config.max_seq_len
        if not 2 <= self.max_context <= config.max_seq_len:
            raise ConfigError(f"context length {self.max_context} is outside 2..{config.max_seq_len} (the model's maximum)")
        with torch.device("meta") if empty_weights else contextlib.nullcontext():
            self.embed_tokens = nn.Embedding(config.vocab_size, config.dim)
            self.layers = nn.ModuleList(DecoderLayer(config, b) for b in range(config.n_layers))
            self.norm = RMSNorm(config.dim, config.norm_eps)
            # With embedding sharing there is no lm_head parameter at all: the projection reads the
            # embedding matrix, so no code path can store or quantize a second copy by accident.
            self.lm_head = None if config.share_embedding else nn.Linear(config.dim, config.vocab_size, bias=False)
        self.caches = nn.ModuleList(
            KVCache(max_batch, config.n_kv_heads, self.max_context, config.head_dim, cache_dtype)
            for _ in range(config.n_executed_layers)
        )
        cos, sin = rope_tables(config.head_dim, self.max_context, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("q_temperature", temperature_table(config, self.max_context), persistent=False)

    # -- weights -----------------------------------------------------------------------------
    def init_weights(self, seed: int, std: float = 0.02) -> "MobileLLM":
        """Deterministic random initialisation (training and synthetic-weight models)."""
        gen = torch.Generator().manual_seed(seed)
        # Residual-branch outputs are scaled down with depth (GPT-2 style) so deep-and-thin
        # stacks start near the identity.
        out_std = std / math.sqrt(2 * self.config.n_executed_layers)
        for name, param in self.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                nn.init.ones_(param)
            else:
                scale = out_std if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                with torch.no_grad():
                    param.copy_(torch.randn(param.shape, generator=gen) * scale)
        return self

    def output_weight(self) -> Tensor:
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    # -- forward -----------------------------------------------------------------------------
    def reset_cache(self) -> None:
        for cache in self.caches:
            cache.k_cache.zero_()
            cache.v_cache.zero_()

    def position_coding(self, positions: Tensor) -> Positions:
        """Rotary embedding and NoPE temperature at `positions` [n]."""
        q_scale = None if self.q_temperature is None else self.q_temperature[positions][:, None, None]
        return Positions(rope=partial(apply_rope, cos=self.rope_cos[positions], sin=self.rope_sin[positions]),
                         q_scale=q_scale)

    def block_masks(self, positions: Tensor, keys: Tensor) -> list[Tensor]:
        """Per stored block, which of `keys` [k] each query at `positions` [n] attends, [n, k]:
        causal, and chunked blocks only within their query's chunk (transformers' chunked mask)."""
        config = self.config
        causal = keys[None, :] <= positions[:, None]
        chunked = causal
        if config.chunk_limits_context(self.max_context):
            size = config.attention_chunk
            chunked = causal & (keys[None, :] // size == positions[:, None] // size)
        return [chunked if b in config.chunked_layers else causal for b in range(config.n_layers)]

    def hidden_states(self, tokens: Tensor, input_pos: Tensor | None = None) -> Tensor:
        config = self.config
        steps = torch.arange(tokens.shape[1], device=tokens.device)
        if input_pos is None:  # no cache: the tokens attend to each other
            positions = steps
            masks = self.block_masks(positions, steps)
            attends: list[Attend] = [partial(sdpa_gqa, mask=masks[b]) for b in config.execution_order]
        else:  # cached and current keys, each executed block in its own cache slot
            positions = input_pos.reshape(1)[0] + steps
            masks = self.block_masks(positions, torch.arange(self.max_context, device=tokens.device))
            attends = [partial(cache.attend, positions=positions, mask=masks[b])
                       for cache, b in zip(self.caches, config.execution_order)]
        x = self.embed_tokens(tokens)
        x = run_blocks(self.layers, config.execution_order, x, self.position_coding(positions), attends)
        return self.norm(x)

    def project(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden, self.output_weight())

    def forward(self, tokens: Tensor, input_pos: Tensor | None = None) -> Tensor:
        return self.project(self.hidden_states(tokens, input_pos)[:, -1, :])


    def logits(self, tokens: Tensor, input_pos: Tensor | None = None) -> Tensor:
        """Logits for every position, [B, n, vocab] (evaluation and reference checks)."""
        return self.project(self.hidden_states(tokens, input_pos))
