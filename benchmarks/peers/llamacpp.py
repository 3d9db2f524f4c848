"""llama.cpp as a peer, measured the way its users run it, next to ours measured the way phones run
ours, in one script: `make bench-peers`.

    python -m mobilellm_export.benchmarks.peers.llamacpp [--work out/bench/llamacpp-peer]
        [--models smollm2-135m 125M] [--rounds 3] [--fallback-avx2]

- llama.cpp: built natively from the source the pinned llama-cpp-python vendors (llamacpp_native.py:
  why the build is keyed by the host's instruction set); the same weights written as an F32 GGUF
  (tied embedding: no output.weight, llama.cpp's output reads token_embd) and quantized by its own
  `llama-quantize` to Q4_0 and Q8_0; speed from `llama-bench`, quality from `llama-perplexity`
  (perplexity ratio, KL divergence and same-top-token rate against the F32 model).
- ours: ExecuTorch int4 and ONNX int4 artifacts of the same checkpoint (exported here with the
  default method, GPTQ, when missing), speed through the stock runners (`bench`'s child with
  --stock: ExecuTorch's C++ runner, onnxruntime-genai) with the Python adapter's figure next to
  it, quality from `verify` (perplexity against the float reference, top-1 agreement).
- a diagnostic row on x86 hosts with non-Intel CPUs: the ExecuTorch artifact in the same runner with
  oneMKL's CPU probe answered as AVX2 (mkl_dispatch.py), labelled, never counted for the targets;
  it measures how much of the gap is the x86 wheel's MKL taking its generic path there.
- Rounds alternate between all systems (each a process of its own), so drift of a shared machine
  hits all of them alike; figures are medians over the rounds. The read-bandwidth probe of the
  harness gives each system's decode as a fraction of the physical limit (weights read per token).

Models: SmolLM2-135M (real weights, fetched through pip, never committed) and the synthetic-weight
125M of `make bench` (out/bench/suite; its artifacts are reused from there).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mobilellm_export.model.corpus import read_jsonl
from mobilellm_export.model.sources import embedded_dir, load_model
from mobilellm_export.runtimes.base import DecoderRuntime
from mobilellm_export.runtimes.manifest import read_manifest
from mobilellm_export.table import format_table

from .. import results as result_files
from ..harness.run import bandwidth_probe, machine, run_child
from ..realweights import ensure_smollm2
from ..suite import ensure_artifact, ensure_checkpoint, ensure_together
from . import mkl_dispatch
from .llamacpp_native import NativeTools, bench, ensure_build, perplexity, quantize

NEW = 64


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


MODELS = ("smollm2-135m", "125M")
LENGTHS = (32, 128)  # prefill, from an empty cache
# Decode after this many tokens: ours after a prompt that long, llama.cpp's after `llama-bench -d`,
# so both are timed at the same positions. The deeper one shows attention's cost, which grows
# with the cache while the weights read per token stay the same.
DEPTHS = (32, 512)
OURS = (("executorch", "int4"), ("onnx", "int4"))
TARGETS = {"decode": 1.25, "prefill": 1.0, "bandwidth": 0.85}
DIAGNOSTIC = "MKL AVX2 dispatch (diagnostic)"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _child_median(runs: list[dict[str, Any]], length: int, figure: str) -> float | None:
    """A figure of `bench`'s child at one prompt length, the median over the rounds."""
    return _median([x["prompt_lengths"][str(length)][figure]["median"] for x in runs
                    if figure in x["prompt_lengths"][str(length)]])


def _speed_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Decode after each depth and prefill of each length, medians over the rounds of our runs."""
    return {"decode_at_depth": {str(d): _child_median(runs, d, "decode_tokens_per_s") for d in DEPTHS},
            "prefill_tokens_per_s": {str(n): _child_median(runs, n, "prefill_tokens_per_s") for n in LENGTHS}}


def measure_model(key: str, checkpoint: Path, ours: list[Path], tools: NativeTools, args: argparse.Namespace,
                  bandwidth: float, shim_env: dict[str, str] | None) -> dict[str, Any]:
    """`shim_env`: mkl_dispatch's environment; ExecuTorch artifacts then get a diagnostic row run in it."""
    work = args.work / key
    work.mkdir(parents=True, exist_ok=True)
    f32 = work / "model-F32.gguf"
    if not f32.is_file():
        print(f"writing {f32}", flush=True)
        write_gguf(checkpoint, f32, "F32", 2048)
    ggufs = {f"llama.cpp {q}": quantize(tools, f32, work / f"model-{q}.gguf", q, args.threads) for q in ("Q4_0", "Q8_0")}
    speed_args = ["--threads", str(args.threads), "--prompt-lengths", ",".join(map(str, sorted({*LENGTHS, *DEPTHS}))),
                  "--new-tokens", str(NEW), "--repeats", "5"]
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in [*ggufs, *(str(d) for d in ours)]}
    adapter: dict[str, list[dict[str, Any]]] = {str(d): [] for d in ours}
    dispatch: dict[str, list[dict[str, Any]]] = {
        str(d): [] for d in ours if shim_env is not None and read_manifest(d).backend == "executorch"}
    for r in range(args.rounds):
        print(f"{key}: round {r + 1} of {args.rounds}", flush=True)
        for name, gguf in ggufs.items():
            rounds[name].append(bench(tools, gguf, threads=args.threads, prompt_lengths=LENGTHS, new_tokens=NEW,
                                      depths=DEPTHS, repeats=5))
            args.build_commit = rounds[name][-1]["build_commit"]
        for directory in ours:
            logs = work / "logs"
            rounds[str(directory)].append(run_child([str(directory), *speed_args, "--stock"], logs / f"{directory.name}-stock.log"))
            adapter[str(directory)].append(run_child([str(directory), *speed_args], logs / f"{directory.name}-adapter.log"))
            if str(directory) in dispatch:
                dispatch[str(directory)].append(run_child([str(directory), *speed_args, "--stock"],
                                                          logs / f"{directory.name}-stock-mkl-avx2.log", env=shim_env))
    synthetic = read_manifest(ours[0]).model.synthetic if ours else True
    quality: dict[str, dict[str, float]] = {}
    if not synthetic:
        quality = perplexity(tools, f32, ggufs, args.heldout, context=256, chunks=args.chunks, threads=args.threads,
                             work=work)
    systems: dict[str, Any] = {}
    for name, gguf in ggufs.items():
        runs = rounds[name]
        systems[name] = {
            "runner": f"llama-bench ({tools.variant})", "size_bytes": gguf.stat().st_size,
            "weight_bytes": gguf.stat().st_size,
            "decode_at_depth": {str(d): _median([x["decode_tokens_per_s"][str(d)]["mean"] for x in runs]) for d in DEPTHS},
            "prefill_tokens_per_s": {str(n): _median([x["prefill_tokens_per_s"][str(n)]["mean"] for x in runs])
                                     for n in LENGTHS},
            "quality": quality.get(name, {}),
        }
    for directory in ours:
        manifest = read_manifest(directory)
        runs, plain = rounds[str(directory)], adapter[str(directory)]
        entry: dict[str, Any] = {
            "runner": runs[0]["runtime"], "size_bytes": manifest.total_bytes,
            "weight_bytes": manifest.expected_weight_bytes, **_speed_figures(runs),
            "prompt_tokens": {str(n): runs[0]["prompt_lengths"][str(n)]["prompt_tokens"] for n in LENGTHS},
            "adapter_decode_tokens_per_s": _child_median(plain, DEPTHS[0], "decode_tokens_per_s"),
            "adapter_prefill_tokens_per_s": {str(n): _child_median(plain, n, "prefill_tokens_per_s") for n in LENGTHS},
            "quantization": manifest.quantization,
        }
        if not synthetic:
            q = run_child([str(directory), "--quality", "--eval-tokens", "4096"], work / "logs" / f"{directory.name}-quality.log")
            entry["quality"] = {"ppl_ratio": q["perplexity"] / q["reference_perplexity"], "ppl": q["perplexity"],
                                "ppl_base": q["reference_perplexity"], "same_top_p": q["agreement"]}
        name = f"ours {manifest.backend} {manifest.quantization['name']}"
        systems[name] = entry
        if str(directory) in dispatch:
            runs = dispatch[str(directory)]
            systems[f"{name}, {DIAGNOSTIC}"] = {
                **entry, "runner": f"{runs[0]['runtime']}, oneMKL AVX2 dispatch preloaded", **_speed_figures(runs),
                "adapter_decode_tokens_per_s": None, "adapter_prefill_tokens_per_s": {}, "diagnostic": True}
    for entry in systems.values():
        entry["decode_tokens_per_s"] = entry["decode_at_depth"][str(DEPTHS[0])]  # the targets' figure
        if entry["decode_tokens_per_s"]:
            entry["bandwidth_fraction"] = entry["weight_bytes"] * entry["decode_tokens_per_s"] / bandwidth
    return {"checkpoint": str(checkpoint), "synthetic_weights": synthetic, "systems": systems,
            "targets": targets(systems)}


def ratios(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    """One of our systems against a peer: decode at each depth, prefill at each length, size."""
    out: dict[str, Any] = {
        "decode_ratio": ours["decode_tokens_per_s"] / peer["decode_tokens_per_s"],
        "decode_ratio_at_depth": {d: ours["decode_at_depth"][d] / peer["decode_at_depth"][d]
                                  for d in ours["decode_at_depth"] if ours["decode_at_depth"][d] and peer["decode_at_depth"].get(d)},
        "size_ratio": ours["size_bytes"] / peer["size_bytes"],
        "bandwidth_fraction": ours.get("bandwidth_fraction"),
    }
    for n, value in ours["prefill_tokens_per_s"].items():
        if value and peer["prefill_tokens_per_s"].get(n):
            out[f"prefill_{n}_ratio"] = value / peer["prefill_tokens_per_s"][n]
    return out


def targets(systems: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, ExecuTorch through its stock C++ runner against llama.cpp Q4_0; the
    diagnostic row's ratios beside them, never counted."""
    peer, ours = systems.get("llama.cpp Q4_0"), systems.get("ours executorch int4")
    if not peer or not ours or not ours["decode_tokens_per_s"]:
        return {}
    out = ratios(ours, peer)
    out["met"] = {"decode >= 1.25x Q4_0 at <= its size": out["decode_ratio"] >= TARGETS["decode"] and out["size_ratio"] <= 1,
                  "decode >= 85% of read bandwidth": (out["bandwidth_fraction"] or 0) >= TARGETS["bandwidth"],
                  **{f"prefill {n} >= 1.0x": out.get(f"prefill_{n}_ratio", 0) >= TARGETS["prefill"] for n in
                     ours["prefill_tokens_per_s"]}}
    diagnostic = systems.get(f"ours executorch int4, {DIAGNOSTIC}")
    if diagnostic and diagnostic["decode_tokens_per_s"]:
        out["diagnostic"] = ratios(diagnostic, peer)
    return out


def _ratio_line(label: str, t: dict[str, Any]) -> str:
    deep = ", ".join(f"{r:.2f}x after {d}" for d, r in t.get("decode_ratio_at_depth", {}).items())
    return (f"{label} vs llama.cpp Q4_0: decode {deep or format(t['decode_ratio'], '.2f') + 'x'} at "
            f"{t['size_ratio']:.2f}x the size; prefill " + ", ".join(
                f"{n}: {t[f'prefill_{n}_ratio']:.2f}x" for n in LENGTHS if f"prefill_{n}_ratio" in t)
            + f"; {100 * (t['bandwidth_fraction'] or 0):.0f}% of read bandwidth.")


def report(results: dict[str, Any]) -> str:
    lines = [f"llama.cpp {results['llama_cpp']['variant']} (build {results['llama_cpp'].get('build_commit')}), "
             f"{results['threads']} threads, {results['machine']['cpu']}; read bandwidth "
             f"{results['bandwidth']['bytes_per_s'] / 1e9:.1f} GB/s. Prefill of {LENGTHS} tokens from an empty cache; "
             f"decode of {NEW} tokens after {' and after '.join(map(str, DEPTHS))} tokens in the cache; "
             f"medians over {results['rounds']} alternating rounds.", ""]
    for key, model in results["models"].items():
        lines.append(f"### {key}{' (synthetic weights: speed only)' if model['synthetic_weights'] else ''}\n")
        rows = []
        for name, e in model["systems"].items():
            q = e.get("quality", {})
            rows.append([name, e["runner"], e["size_bytes"] / 1e6, *(e["prefill_tokens_per_s"].get(str(n)) for n in LENGTHS),
                         *(e["decode_at_depth"].get(str(d)) for d in DEPTHS), e.get("adapter_decode_tokens_per_s"),
                         100 * e["bandwidth_fraction"] if e.get("bandwidth_fraction") else None,
                         f"{100 * (q['ppl_ratio'] - 1):+.1f}%" if "ppl_ratio" in q else None,
                         f"{100 * q['same_top_p']:.1f}%" if "same_top_p" in q else None])
        lines.append(format_table(["system", "runner", "size MB", *(f"prefill {n} tok/s" for n in LENGTHS),
                                   *(f"decode tok/s after {d}" for d in DEPTHS),
                                   f"adapter decode tok/s after {DEPTHS[0]}", "% of read bandwidth",
                                   "perplexity vs F32", "same top-1"], rows, markdown=True))
        t = model["targets"]
        if t:
            lines.append("")
            lines.append(_ratio_line("ExecuTorch int4 (C++ runner)", t))
            lines += [f"- {'met' if ok else 'NOT met'}: {name}" for name, ok in t["met"].items()]
            if "diagnostic" in t:
                lines += ["", _ratio_line("Diagnostic, not counted (MKL AVX2 dispatch)", t["diagnostic"]),
                          "The same artifact and runner with oneMKL's CPU probe answered as AVX2 "
                          "(benchmarks/peers/mkl_dispatch.py): the share of the gap that is the x86 wheel's "
                          "MKL taking its generic path on this non-Intel CPU. Phones' runners link no MKL."]
        lines.append("")
    lines.append("Quality protocols differ: llama.cpp's rows are llama-perplexity's (256-token chunks, second halves "
                 "scored, against the F32 GGUF); ours are verify's (256-token windows, every position, against the "
                 "float reference). Both are ratios to the same float weights.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("out/bench/llamacpp-peer"))
    parser.add_argument("--weights", type=Path, default=Path("out/weights"), help="where the real weights are kept")
    parser.add_argument("--suite", type=Path, default=Path("out/bench/suite"), help="make bench's work folder (125M)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=32, help="llama-perplexity chunks of 256 tokens")
    parser.add_argument("--fallback-avx2", action="store_true", help="the portable AVX2 build instead of native")
    args = parser.parse_args(argv)
    from mobilellm_export.quiet import quiet_third_party

    quiet_third_party()
    args.work.mkdir(parents=True, exist_ok=True)
    tools = ensure_build(args.work / "build", fallback_avx2=args.fallback_avx2)
    not_here = mkl_dispatch.unavailable()
    shim_env = None if not_here else mkl_dispatch.shim_environment(args.work / "mkl-dispatch")
    print(f"MKL dispatch diagnostic: {not_here or 'on (a labelled extra row for ExecuTorch)'}", flush=True)
    args.heldout = args.work / "heldout.txt"
    docs = read_jsonl(embedded_dir() / "heldout.jsonl")
    args.heldout.write_text("\n\n".join(d.text for d in docs))
    bandwidth = bandwidth_probe(args.threads)
    results = {**result_files.header("llamacpp-peer"), "machine": machine(), "threads": args.threads,
               "rounds": args.rounds, "bandwidth": bandwidth,
               "llama_cpp": {"variant": tools.variant, **tools.info},
               "mkl_dispatch_diagnostic": not_here or "on", "models": {}}
    for key in args.models:
        if key == "smollm2-135m":
            checkpoint = ensure_smollm2(args.weights)
            ours = ensure_together(checkpoint, args.work / key / "ours", OURS)
        else:
            checkpoint = ensure_checkpoint(args.suite, key)
            ours = [ensure_artifact(args.suite, key, checkpoint, b, q) for b, q in OURS]
        results["models"][key] = measure_model(key, checkpoint, ours, tools, args, bandwidth["bytes_per_s"], shim_env)
        results["llama_cpp"]["build_commit"] = args.build_commit
        # Per model too, so a run of one model never overwrites another's figures.
        one = {**results, "models": {key: results["models"][key]}}
        (args.work / key / "results.json").write_text(json.dumps(one, indent=2) + "\n")
        (args.work / key / "report.md").write_text(report(one))
        (args.work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = report(results)
    (args.work / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
