"""llama.cpp as a peer: the same synthetic-weight 125M (non-LS) written as GGUF with the `gguf`
package (Q4_0 and Q8_0, tied embedding: no output.weight, so llama.cpp's output reads
token_embd), run with llama-cpp-python built on this machine, against our best artifacts in the
same script.

    python -m mobilellm_export.benchmarks.peers.llamacpp [--work out/bench/llamacpp-peer]
        [--ours out/bench/suite/125M/executorch-int4 ...]

Decode speed: a 32-token prompt then 64 greedy tokens, 2 threads, rounds alternating between
all models in one process (llama.cpp through its Python binding, ours through this package's
runtime adapters), median of the rounds. The bandwidth probe of the harness gives the physical
limit for each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mobilellm_export.export.plan import artifact_folder
from mobilellm_export.model.sources import load_model
from mobilellm_export.runtimes.base import DecoderRuntime
from mobilellm_export.runtimes.timing import alternating_rounds, synthetic_prompt, time_decode
from mobilellm_export.table import format_table

from .. import results as result_files
from ..harness.run import bandwidth_probe

PROMPT, NEW = 32, 64


def _permute_rope(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """HF's rotate-half q/k rows -> llama.cpp's interleaved-pair rotary layout (as llama.cpp's own
    convert_hf_to_gguf does)."""
    rows, cols = weight.shape
    return weight.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def write_gguf(checkpoint: Path, path: Path, qtype_name: str, context: int) -> Path:
    import gguf

    loaded = load_model(str(checkpoint))
    model, config = loaded.model, loaded.config
    if config.layer_sharing:
        raise ValueError("llama.cpp's llama architecture has no layer sharing; write the non-LS model")
    qtype = getattr(gguf.GGMLQuantizationType, qtype_name)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(checkpoint.name)
    writer.add_context_length(context)
    writer.add_embedding_length(config.dim)
    writer.add_block_count(config.n_layers)
    writer.add_feed_forward_length(config.ffn_dim)
    writer.add_head_count(config.n_heads)
    writer.add_head_count_kv(config.n_kv_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if qtype_name == "F32" else getattr(gguf.LlamaFileType, f"MOSTLY_{qtype_name}"))
    _add_tokenizer(writer, checkpoint / "tokenizer.json", config)

    def matrix(name: str, tensor) -> None:
        data = tensor.detach().float().numpy()
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    def vector(name: str, tensor) -> None:
        writer.add_tensor(name, tensor.detach().float().numpy())

    matrix("token_embd.weight", model.embed_tokens.weight)  # also the output projection (tied)
    vector("output_norm.weight", model.norm.weight)
    for i, layer in enumerate(model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        vector(f"blk.{i}.attn_norm.weight", layer.input_layernorm.weight)
        vector(f"blk.{i}.ffn_norm.weight", layer.post_attention_layernorm.weight)
        q = _permute_rope(attn.q_proj.weight.detach().float().numpy(), config.n_heads)
        k = _permute_rope(attn.k_proj.weight.detach().float().numpy(), config.n_kv_heads)
        writer.add_tensor(f"blk.{i}.attn_q.weight", gguf.quants.quantize(q, qtype), raw_dtype=qtype)
        writer.add_tensor(f"blk.{i}.attn_k.weight", gguf.quants.quantize(k, qtype), raw_dtype=qtype)
        matrix(f"blk.{i}.attn_v.weight", attn.v_proj.weight)
        matrix(f"blk.{i}.attn_output.weight", attn.o_proj.weight)
        matrix(f"blk.{i}.ffn_gate.weight", mlp.gate_proj.weight)
        matrix(f"blk.{i}.ffn_up.weight", mlp.up_proj.weight)
        matrix(f"blk.{i}.ffn_down.weight", mlp.down_proj.weight)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_tokenizer(writer: Any, tokenizer_json: Path, config: Any) -> None:
    """Our byte-level BPE as llama.cpp's "gpt2" tokenizer (tokens, merges, token types)."""
    data = json.loads(tokenizer_json.read_text())
    tokens = [""] * config.vocab_size
    for text, idx in data["model"]["vocab"].items():
        tokens[idx] = text
    types = [1] * config.vocab_size  # normal
    for added in data.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        types[added["id"]] = 3 if added.get("special") else 4  # control / user-defined
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config.bos_id)
    writer.add_eos_token_id(config.eos_id)


def llama_quantize(source: Path, target: Path, ftype: str, threads: int) -> Path:
    """`source` (an F32 GGUF) quantized by llama.cpp's own quantizer (what `llama-quantize` runs),
    e.g. ftype "Q4_0" or "Q4_K_M": llama.cpp picks each tensor's type the way its users get it."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.nthread = threads
    partial = target.with_name(target.name + ".partial")
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params))
    if status != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"llama.cpp could not quantize {source} to {ftype} (status {status})")
    partial.rename(target)
    return target


class LlamaCppRuntime(DecoderRuntime):
    """llama-cpp-python with the same forward(tokens, start_pos) -> logits contract as ours.
    With `every_position`, one evaluation returns the logits of every position (for scoring)."""

    def __init__(self, path: Path, context: int, threads: int, *, every_position: bool = False) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(path), n_ctx=context, n_threads=threads, n_threads_batch=threads,
                         n_batch=512, logits_all=every_position, verbose=False)
        self.every_position = every_position
        self.name = "llama.cpp"
        self.max_context = context
        self.vocab_size = self.llm.n_vocab()

    def reset(self) -> None:
        self.llm.reset()

    def forward(self, tokens: list[int], start_pos: int):
        import torch

        if start_pos == 0:
            self.llm.reset()
        self.llm.eval(tokens)
        return torch.from_numpy(np.array(self.llm.scores[self.llm.n_tokens - 1], dtype=np.float32))

    def logits_all(self, tokens: list[int]):
        if not self.every_position:
            return super().logits_all(tokens)
        import torch

        self.llm.reset()
        self.llm.eval(tokens)
        return torch.from_numpy(np.array(self.llm.scores[:len(tokens)], dtype=np.float32))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("out/bench/llamacpp-peer"))
    parser.add_argument("--checkpoint", type=Path, default=Path("out/bench/suite/checkpoints/125M"))
    suite = Path("out/bench/suite/125M")
    parser.add_argument("--ours", type=Path, nargs="+",
                        default=[suite / artifact_folder(b, q) for b, q in (("executorch", "int4"), ("onnx", "int4"),
                                                                            ("onnx", "int8"))])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from mobilellm_export.quiet import quiet_third_party
    from mobilellm_export.runtimes.registry import open_artifact

    quiet_third_party()
    args.work.mkdir(parents=True, exist_ok=True)
    context = 1024
    runtimes: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    for qtype in ("Q4_0", "Q8_0"):
        path = args.work / f"model-{qtype}.gguf"
        if not path.is_file():
            print(f"writing {path}", flush=True)
            write_gguf(args.checkpoint, path, qtype, context)
        runtimes[f"llama.cpp {qtype}"] = LlamaCppRuntime(path, context, args.threads)
        sizes[f"llama.cpp {qtype}"] = path.stat().st_size
    for directory in args.ours:
        opened = open_artifact(directory, threads=args.threads)
        name = f"ours {directory.parent.name}/{directory.name}"
        runtimes[name] = opened.runtime
        sizes[name] = opened.manifest.total_bytes
    prompt = synthetic_prompt(PROMPT)
    rounds = alternating_rounds({name: (lambda r=runtime: time_decode(r, prompt, NEW)) for name, runtime in runtimes.items()},
                                args.rounds)
    samples = {name: [decode for _, decode in runs] for name, runs in rounds.items()}
    bandwidth = bandwidth_probe()["bytes_per_s"]
    results = {**result_files.header("llamacpp-peer"), "weights": "synthetic 125M (random, seed 0)", "threads": args.threads,
               "bandwidth_bytes_per_s": bandwidth, "models": {}}
    rows = []
    for name, values in samples.items():
        median = statistics.median(values)
        # Bytes per decoded token ~ the weights (file size) + the fp32/fp16 KV cache at the mean position.
        limit = sizes[name] * median / bandwidth
        results["models"][name] = {"bytes": sizes[name], "decode_tokens_per_s": median, "samples": values,
                                   "bandwidth_fraction": limit}
        rows.append([name, sizes[name] / 1e6, median, max(values), 100 * limit])
    table = format_table(["model", "size MB", "decode tok/s (median)", "best round", "% of bandwidth (weights only)"],
                         rows, markdown=True)
    (args.work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.work / "report.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
