"""What `mobilellm-export info` reports: architecture, parameter counts, and expected sizes."""

from __future__ import annotations

from typing import Any

from mobilellm_export.model.config import MobileLLMConfig
from mobilellm_export.quant.schemes import SCHEMES, expected_weight_bytes

MB = 1e6


def kv_cache_bytes(config: MobileLLMConfig, context: int, bytes_per_value: int) -> int:
    """Keys and values for every *executed* block (an LS block's two runs have separate slots)."""
    return 2 * config.n_executed_layers * config.n_kv_heads * config.head_dim * context * bytes_per_value


def summarize(config: MobileLLMConfig, label: str, *, context: int | None = None) -> dict[str, Any]:
    context = context or config.max_seq_len
    counts = config.parameter_counts()
    return {
        "model": label,
        "architecture": config.to_dict(),
        "executed_layers": config.n_executed_layers,
        "parameters": counts,
        "kv_cache_bytes": {"context": context, "fp32": kv_cache_bytes(config, context, 4),
                           "fp16": kv_cache_bytes(config, context, 2)},
        # Weights only, each shared matrix stored once; a backend adds its program on top.
        "expected_weight_bytes": {name: expected_weight_bytes(config, scheme) for name, scheme in SCHEMES.items()},
    }


def format_summary(summary: dict[str, Any]) -> str:
    arch = summary["architecture"]
    counts = summary["parameters"]
    kv = summary["kv_cache_bytes"]
    sharing = []
    if arch["share_embedding"]:
        sharing.append("embedding shared with output projection")
    if arch["layer_sharing"]:
        sharing.append("each block runs twice in a row (LS)")
    attention = [f"{arch['n_heads']} heads, {arch['n_kv_heads']} KV heads, head_dim {arch['head_dim']}, "
                 f"RoPE theta {arch['rope_theta']:g}"]
    if arch["checkpoint_layout"] == "llama4_text":
        attention.append("adjacent rotary pairs (Llama4-text)")
    if arch["qk_norm"]:
        attention.append("qk norm")
    if arch["nope_layers"]:
        tuned = f", query temperature {arch['nope_attn_scale']:g}" if arch["nope_attn_scale"] else ""
        attention.append(f"no RoPE on blocks {arch['nope_layers']}{tuned}")
    if arch["chunked_layers"]:
        attention.append(f"chunks of {arch['attention_chunk']} on {len(arch['chunked_layers'])} blocks")
    stops = ", ".join(str(i) for i in [arch["eos_id"], *arch["extra_eos_ids"]])
    lines = [
        f"model            {summary['model']}",
        f"blocks           {arch['n_layers']} unique, {summary['executed_layers']} executed",
        f"width            dim {arch['dim']}, FFN {arch['ffn_dim']} (SwiGLU)",
        f"attention        {'; '.join(attention)}",
        f"vocabulary       {arch['vocab_size']} (bos {arch['bos_id']}, eos {stops}), "
        f"max context {arch['max_seq_len']}",
        f"sharing          {'; '.join(sharing) or 'none'}",
        f"parameters       {counts['unique']:,} unique (stored), {counts['executed']:,} executed per token",
        f"                 embedding {counts['embedding']:,}, per block {counts['block']:,}",
        f"KV cache         {kv['fp32'] / MB:.1f} MB fp32 / {kv['fp16'] / MB:.1f} MB fp16 at context {kv['context']}",
        "expected weights (shared matrices stored once):",
    ]
    for name, nbytes in summary["expected_weight_bytes"].items():
        lines.append(f"  {name:<10} {nbytes / MB:10.2f} MB   {SCHEMES[name].description}")
    return "\n".join(lines)
