"""Synthetic-weight checkpoints with the published shapes, for size and speed work.

Random weights (the seed of `synthetic:<preset>`) say nothing about quality, and every report
labels them so. The checkpoint directory also gets a 32000-token byte-level BPE tokenizer
(trained on the embedded model's corpus, padded with reserved tokens to the vocabulary size) so
that stock runners can load the artifacts, and, for ExecuTorch's own exporter, the same weights
in its llama layout (params.json + consolidated.00.pth, HF rotary layout).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mobilellm_export.model import corpus
from mobilellm_export.model.checkpoint import save_checkpoint
from mobilellm_export.model.modeling import MobileLLM
from mobilellm_export.model.sources import load_model
from mobilellm_export.model.train import train_tokenizer


def write_synthetic_checkpoint(preset: str, directory: Path) -> MobileLLM:
    loaded = load_model(f"synthetic:{preset}")
    model = loaded.model
    save_checkpoint(model, directory, synthetic=True)
    write_padded_tokenizer(model.config.vocab_size, directory)
    return model


def write_padded_tokenizer(vocab_size: int, directory: Path) -> None:
    train_docs, _ = corpus.split(corpus.build_corpus())
    train_tokenizer([d.text for d in train_docs], vocab_size, directory)
    path = directory / "tokenizer.json"
    data = json.loads(path.read_text())
    have = max(data["model"]["vocab"].values()) + 1
    added = data.setdefault("added_tokens", [])
    for i in range(have, vocab_size):
        added.append({"id": i, "content": f"<|reserved_{i}|>", "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
    path.write_text(json.dumps(data, ensure_ascii=False))


def write_llama_layout(model: MobileLLM, directory: Path) -> tuple[Path, Path]:
    """The same weights as ExecuTorch's llama example model reads them (for its export_llm)."""
    config = model.config
    directory.mkdir(parents=True, exist_ok=True)
    names = {"q_proj": "attention.wq", "k_proj": "attention.wk", "v_proj": "attention.wv", "o_proj": "attention.wo",
             "gate_proj": "feed_forward.w1", "down_proj": "feed_forward.w2", "up_proj": "feed_forward.w3",
             "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm"}
    state: dict[str, torch.Tensor] = {"tok_embeddings.weight": model.embed_tokens.weight,
                                      "norm.weight": model.norm.weight,
                                      "output.weight": model.embed_tokens.weight}
    for i, layer in enumerate(model.layers):
        for name, tensor in layer.state_dict().items():
            module = name.rsplit(".", 1)[0].split(".")[-1]
            state[f"layers.{i}.{names[module]}.weight"] = tensor
    torch.save({k: v.detach().clone().contiguous() for k, v in state.items()}, directory / "consolidated.00.pth")
    params = {"dim": config.dim, "n_layers": config.n_layers, "n_heads": config.n_heads,
              "n_kv_heads": config.n_kv_heads, "vocab_size": config.vocab_size, "hidden_dim": config.ffn_dim,
              "head_dim": config.head_dim, "norm_eps": config.norm_eps, "rope_theta": config.rope_theta,
              "use_hf_rope": True, "use_scaled_rope": False}
    (directory / "params.json").write_text(json.dumps(params, indent=2))
    return directory / "params.json", directory / "consolidated.00.pth"


def write_hf_llama_layout(model: MobileLLM, directory: Path, tokenizer_from: Path) -> Path:
    """The same weights as a Hugging Face `LlamaForCausalLM` checkpoint with tied embeddings, for
    peers that only know Llama (onnxruntime-genai's builder). Llama has no layer sharing, so an
    LS model is written unrolled: every executed block as its own layer, each stored block twice."""
    import shutil

    from safetensors.torch import save_file

    config = model.config
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {"model.embed_tokens.weight": model.embed_tokens.weight, "model.norm.weight": model.norm.weight}
    for i, block in enumerate(config.execution_order):
        for name, tensor in model.layers[block].state_dict().items():
            tensors[f"model.layers.{i}.{name}"] = tensor
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    hf = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": config.vocab_size,
          "hidden_size": config.dim, "intermediate_size": config.ffn_dim,
          "num_hidden_layers": config.n_executed_layers, "num_attention_heads": config.n_heads,
          "num_key_value_heads": config.n_kv_heads, "head_dim": config.head_dim, "hidden_act": "silu",
          "max_position_embeddings": config.max_seq_len, "rms_norm_eps": config.norm_eps,
          "rope_theta": config.rope_theta, "attention_bias": False, "mlp_bias": False,
          "tie_word_embeddings": True, "bos_token_id": config.bos_id, "eos_token_id": config.eos_id,
          "torch_dtype": "float32"}
    (directory / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (tokenizer_from / name).is_file():
            shutil.copy2(tokenizer_from / name, directory / name)
    return directory
