"""genai_config.json: how onnxruntime-genai loads the directory."""

from __future__ import annotations

from typing import Any

from mobilellm_export.model.config import MobileLLMConfig

GENAI_CONFIG = "genai_config.json"


def genai_config(config: MobileLLMConfig, model_file: str, max_context: int) -> dict[str, Any]:
    """onnxruntime-genai's description of the directory. Its parser rejects unknown keys, so
    only fields it knows are written."""
    return {
        "model": {
            "bos_token_id": config.bos_id,
            # Several stop tokens as a list (Llama-3 tokenizers); genai takes either form.
            "eos_token_id": list(config.eos_ids) if config.extra_eos_ids else config.eos_id,
            "pad_token_id": config.eos_id,
            "context_length": max_context,
            "vocab_size": config.vocab_size,
            "type": "llama",
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": model_file,
                "head_size": config.head_dim,
                "hidden_size": config.dim,
                "num_attention_heads": config.n_heads,
                "num_hidden_layers": config.n_executed_layers,
                "num_key_value_heads": config.n_kv_heads,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
            },
        },
        "search": {
            "do_sample": False,
            "max_length": max_context,
            "min_length": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": True,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }
