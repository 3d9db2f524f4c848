"""Reading fields of a Hugging Face config.json exactly: shared by the Llama and Llama4 mappings."""

from __future__ import annotations

import math
from typing import Any

from mobilellm_export.errors import CheckpointError

from .config import MobileLLMConfig


def whole_number(data: dict[str, Any], key: str, default: int | None = None) -> int:
    """config.json's `key` as an int: a JSON integer (or a float that is one, like 576.0), never
    a bool, a string or 192.7 silently truncated. Missing or null: `default` (KeyError if none)."""
    value = data.get(key)
    if value is None:
        if default is None:
            raise KeyError(key)
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value):
        raise CheckpointError(f"config.json: {key} must be a whole number, got {value!r}")
    return int(value)


def plain_rope_theta(data: dict[str, Any], default: float) -> float:
    """The rotary base of a config without RoPE scaling; scaled variants are refused."""
    rope = data.get("rope_parameters") or {}  # transformers >= 5 nests rope settings here
    if not isinstance(rope, dict):
        raise CheckpointError(f"config.json: rope_parameters must be an object, got {rope!r}")
    if data.get("rope_scaling") or rope.get("rope_type", "default") != "default":
        raise CheckpointError("rope scaling is not supported (MobileLLM uses plain RoPE)")
    return float(rope.get("rope_theta", data.get("rope_theta", default)))


def stop_ids(value: Any) -> tuple[int, ...]:
    """eos_token_id as a tuple, the primary id first (an int, a list of them, or null: 2)."""
    ids = value if isinstance(value, list) else [2 if value is None else value]
    if not ids or any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
        raise CheckpointError(f"config.json: eos_token_id must be an integer or a list of them, got {value!r}")
    return tuple(ids)


def llama_family_fields(config: MobileLLMConfig) -> dict[str, Any]:
    """The config.json keys Llama, MobileLLM and Llama4-text spell alike."""
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.dim,
        "intermediate_size": config.ffn_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "bos_token_id": config.bos_id,
        "eos_token_id": list(config.eos_ids) if config.extra_eos_ids else config.eos_id,
    }
