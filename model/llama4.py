"""Llama4-text checkpoints (MobileLLM-R1: `Llama4ForCausalLM`, model_type "llama4_text").

What differs from a Llama checkpoint, and how it maps onto our config and module:

* the SwiGLU is `feed_forward.*` and its width is `intermediate_size_mlp`; only dense checkpoints
  load (`moe_layers: []`): a mixture-of-experts block is refused, never approximated;
* rotary embeddings rotate *adjacent* pairs (transformers computes them with complex numbers).
  Each head's q/k rows are permuted on load (even rows first, then odd rows), which turns pair
  (2i, 2i+1) into (i, i + head_dim/2): the rotate-half form every backend already computes gives
  the same values in the permuted order, and attention scores (q . k over the same permutation)
  and the qk norm (a mean over the head) do not change. Saving applies the inverse permutation;
* `use_qk_norm`, `no_rope_layers` (0 = NoPE), `attn_temperature_tuning`/`attn_scale`/`floor_scale`
  and `attention_chunk_size`/`layer_types` map onto our config's fields with transformers'
  defaults when a key is absent (a missing `no_rope_layers` makes every fourth block NoPE, as in
  transformers).
"""

from __future__ import annotations

from typing import Any

import torch

from mobilellm_export.errors import CheckpointError

from .config import MobileLLMConfig
from .hf_fields import llama_family_fields, plain_rope_theta, stop_ids, whole_number

ARCHITECTURE = "Llama4ForCausalLM"
MODEL_TYPE = "llama4_text"
_LAYER_TYPES = ("full_attention", "chunked_attention")


def config_from_llama4(data: dict[str, Any]) -> MobileLLMConfig:
    """Our config for a Llama4ForCausalLM text config.json (transformers' defaults for absent keys)."""
    if data.get("model_type", MODEL_TYPE) != MODEL_TYPE:
        raise CheckpointError(f"config.json: model_type {data['model_type']!r} is not {MODEL_TYPE!r} (only the text "
                              "decoder of Llama4 loads)")
    n_layers = whole_number(data, "num_hidden_layers", 48)
    moe = data.get("moe_layers")
    if moe is None:  # transformers derives them from the interleave step (default: every block)
        step = whole_number(data, "interleave_moe_layer_step", 1)
        moe = list(range(step - 1, n_layers, step)) if step > 0 else []
    if moe:
        raise CheckpointError(f"config.json: mixture-of-experts blocks {list(moe)[:4]} are not supported; only dense "
                              "Llama4-text models (moe_layers: [], as MobileLLM-R1) load")
    no_rope = data.get("no_rope_layers") or [int((i + 1) % whole_number(data, "no_rope_layer_interval", 4) != 0)
                                             for i in range(n_layers)]
    if not isinstance(no_rope, list) or len(no_rope) < n_layers or any(v not in (0, 1) for v in no_rope[:n_layers]):
        raise CheckpointError(f"config.json: no_rope_layers must list 0 or 1 for each of the {n_layers} blocks")
    nope = tuple(i for i in range(n_layers) if not no_rope[i])
    chunk = data.get("attention_chunk_size", 8192)
    layer_types = data.get("layer_types") or ["chunked_attention" if no_rope[i] and chunk is not None
                                              else "full_attention" for i in range(n_layers)]
    if not isinstance(layer_types, list) or len(layer_types) < n_layers or any(
            t not in _LAYER_TYPES for t in layer_types[:n_layers]):
        raise CheckpointError(f"config.json: layer_types must be {' or '.join(_LAYER_TYPES)} for each block; other "
                              "attention kinds (sliding windows) are not supported")
    chunked = tuple(i for i in range(n_layers) if layer_types[i] == "chunked_attention")
    if chunked and chunk is None:
        raise CheckpointError("config.json: chunked_attention blocks need attention_chunk_size")
    tuning = bool(data.get("attn_temperature_tuning", True))
    dim = whole_number(data, "hidden_size", 5120)
    n_heads = whole_number(data, "num_attention_heads", 40)
    bos = data.get("bos_token_id", 1)
    eos = stop_ids(data.get("eos_token_id", 2))
    return MobileLLMConfig(
        vocab_size=whole_number(data, "vocab_size", 202048),
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=whole_number(data, "num_key_value_heads", n_heads),
        ffn_dim=whole_number(data, "intermediate_size_mlp", 16384),
        head_dim=whole_number(data, "head_dim", 128),
        rope_theta=plain_rope_theta(data, 500000.0),
        norm_eps=float(data.get("rms_norm_eps", 1e-5)),
        share_embedding=bool(data.get("tie_word_embeddings", False)),
        max_seq_len=whole_number(data, "max_position_embeddings", 131072),
        bos_id=int(bos if bos is not None else 1),
        eos_id=eos[0],
        extra_eos_ids=eos[1:],
        checkpoint_layout="llama4_text",
        qk_norm=bool(data.get("use_qk_norm", True)),
        nope_layers=nope,
        nope_attn_scale=float(data.get("attn_scale", 0.1)) if tuning and nope else 0.0,
        nope_floor_scale=whole_number(data, "floor_scale", 8192),
        attention_chunk=int(chunk) if chunked else 0,
        chunked_layers=chunked,
    )


def config_to_llama4(config: MobileLLMConfig) -> dict[str, Any]:
    """The config.json transformers' Llama4ForCausalLM builds `config` from."""
    return {
        "architectures": [ARCHITECTURE],
        "model_type": MODEL_TYPE,
        **llama_family_fields(config),
        "intermediate_size_mlp": config.ffn_dim,
        "tie_word_embeddings": config.share_embedding,
        "moe_layers": [],
        "num_local_experts": 0,
        "interleave_moe_layer_step": 0,
        "use_qk_norm": config.qk_norm,
        "no_rope_layers": [int(config.uses_rope(i)) for i in range(config.n_layers)],
        "attn_temperature_tuning": config.nope_attn_scale > 0,
        "attn_scale": config.nope_attn_scale,
        "floor_scale": config.nope_floor_scale,
        "attention_chunk_size": config.attention_chunk or None,
        "layer_types": ["chunked_attention" if i in config.chunked_layers else "full_attention"
                        for i in range(config.n_layers)],
    }


def hf_name(name: str) -> str:
    """Our parameter name -> the Llama4-text checkpoint's."""
    if name.startswith("lm_head."):
        return name
    return "model." + name.replace(".mlp.", ".feed_forward.")


def _pair_order(head_dim: int) -> torch.Tensor:
    """Row order within a head that maps adjacent pairs to rotate-half pairs: even rows, then odd."""
    return torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)))


def _permute_heads(weight: torch.Tensor, head_dim: int, order: torch.Tensor) -> torch.Tensor:
    rows, cols = weight.shape
    return weight.reshape(rows // head_dim, head_dim, cols)[:, order].reshape(rows, cols)


def _is_qk(name: str) -> bool:
    return name.endswith(("self_attn.q_proj.weight", "self_attn.k_proj.weight"))


def to_rotate_half(tensors: dict[str, torch.Tensor], head_dim: int) -> dict[str, torch.Tensor]:
    """Checkpoint tensors (adjacent rotary pairs) -> our q/k row order. Other tensors unchanged;
    mis-shaped ones are left for the loader's shape check to name."""
    order = _pair_order(head_dim)
    return {k: _permute_heads(v, head_dim, order) if _is_qk(k) and v.ndim == 2 and v.shape[0] % head_dim == 0 else v
            for k, v in tensors.items()}


def to_adjacent_pairs(tensors: dict[str, torch.Tensor], head_dim: int) -> dict[str, torch.Tensor]:
    """The inverse of `to_rotate_half`, for saving."""
    inverse = torch.argsort(_pair_order(head_dim))
    return {k: _permute_heads(v, head_dim, inverse) if _is_qk(k) else v for k, v in tensors.items()}
