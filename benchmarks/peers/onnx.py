"""Our ONNX export against onnxruntime-genai's own model builder, same weights, int4, CPU.

    python -m mobilellm_export.benchmarks.peers.onnx [--preset 125M] [--work out/bench/onnx-peer]

The builder reads Hugging Face `LlamaForCausalLM` checkpoints, so the synthetic-weight model
(random weights with the published shapes) is given to it as one, with tied embeddings; it exports
int4 (MatMulNBits, block 32, accuracy level 4: int8 compute on CPU, as ours). Llama cannot express
layer sharing, so for the LS model the builder gets the unrolled checkpoint (every executed block
as its own layer). Each export and each memory reading runs in its own child process; decode
speed is measured for all artifacts in one process through onnxruntime-genai with alternating
rounds. Writes results.json and report.md into --work.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

from mobilellm_export.export.plan import artifact_folder
from mobilellm_export.model.config import get_preset
from mobilellm_export.table import format_table
from mobilellm_export.versions import library_versions

from .. import results as result_files
from ..synthetic import write_hf_llama_layout, write_synthetic_checkpoint
from .measure import python_cmd, run_json_probe, run_measured

CONTEXT = 1024
GROUP = 32


def export_builder(work: Path, hf_dir: Path, name: str) -> dict[str, Any]:
    out = work / name
    cmd = python_cmd("-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out), "-p", "int4",
                     "-e", "cpu", "-c", str(work / "builder-cache"),
                     "--extra_options", "accuracy_level=4", f"block_size={GROUP}")
    measured = run_measured(cmd, work / f"{name}-export.log")
    return _run(cmd, measured, out)


def export_ours(work: Path, checkpoint_dir: Path, name: str) -> dict[str, Any]:
    out = work / name
    cmd = python_cmd("-m", "mobilellm_export.cli", "--quiet", "export", "--model", str(checkpoint_dir),
                     "--backend", "onnx", "--quant", "int4", "--group-size", str(GROUP),
                     "--max-context", str(CONTEXT), "--output", str(out), "--overwrite")
    measured = run_measured(cmd, work / f"{name}-export.log")
    return _run(cmd, measured, out / artifact_folder("onnx", "int4"))


def _run(cmd: list[str], measured: Any, directory: Path) -> dict[str, Any]:
    files = [p for p in directory.glob("model.onnx*")] if directory.is_dir() else []
    return {"command": " ".join(cmd[1:]), "seconds": measured.seconds, "peak_rss_bytes": measured.peak_rss_bytes,
            "returncode": measured.returncode, "directory": str(directory),
            "bytes": sum(f.stat().st_size for f in files) or None}


def probe(work: Path, log_name: str, args: list[str]) -> dict[str, Any]:
    return run_json_probe("mobilellm_export.benchmarks.peers.onnx_probe", work / f"{log_name}.log", args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="125M")
    parser.add_argument("--work", type=Path, default=Path("out/bench/onnx-peer"))
    parser.add_argument("--rounds", type=int, default=10, help="alternating decode rounds per artifact")
    parser.add_argument("--reuse", action="store_true",
                        help="keep checkpoints and exports from an earlier run in --work; measure again")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)

    results_path = work / "results.json"
    previous = json.loads(results_path.read_text())["runs"] if args.reuse and results_path.exists() else {}
    config = get_preset(args.preset)
    checkpoint_dir, ls_dir = work / "checkpoint", work / "checkpoint-ls"
    if not previous:
        print(f"writing synthetic {args.preset} and {args.preset}-LS checkpoints (random weights)", flush=True)
        model = write_synthetic_checkpoint(args.preset, checkpoint_dir)
        write_hf_llama_layout(model, work / "hf-llama", checkpoint_dir)
        del model
        ls_model = write_synthetic_checkpoint(f"{args.preset}-LS", ls_dir)
        write_hf_llama_layout(ls_model, work / "hf-llama-ls-unrolled", ls_dir)
        del ls_model

    def export(name: str, run) -> dict[str, Any]:
        old = previous.get(name)
        if old and old.get("returncode") == 0 and Path(old["directory"]).is_dir():
            return {k: old[k] for k in ("command", "seconds", "peak_rss_bytes", "returncode", "directory", "bytes")}
        return run()

    runs: dict[str, dict[str, Any]] = {}
    print("exporting with onnxruntime-genai's builder (the peer)", flush=True)
    runs["builder"] = export("builder", lambda: export_builder(work, work / "hf-llama", "builder"))
    print("exporting with mobilellm-export", flush=True)
    runs["ours"] = export("ours", lambda: export_ours(work, checkpoint_dir, "ours"))
    print(f"exporting {args.preset}-LS: the builder on the unrolled checkpoint, ours on the LS one", flush=True)
    runs["builder_ls"] = export("builder_ls", lambda: export_builder(work, work / "hf-llama-ls-unrolled", "builder_ls"))
    runs["ours_ls"] = export("ours_ls", lambda: export_ours(work, ls_dir, "ours_ls"))
    ok = {name: run for name, run in runs.items() if run["returncode"] == 0}

    print("measuring memory, one process per model and reading", flush=True)
    for name, run in ok.items():
        arg = ["--artifact", f"{name}={run['directory']}"]
        run["memory"] = probe(work, f"{name}-memory", ["--memory", *arg]).get(name, {})
        run["session"] = probe(work, f"{name}-session", ["--session", *arg]).get(name, {})
        run["session_no_prepack"] = probe(work, f"{name}-session-noprepack", ["--session", "--no-prepack", *arg]).get(name, {})
    print("measuring decode speed in onnxruntime-genai, alternating rounds in one process", flush=True)
    speed = probe(work, "decode", [*(a for n, r in ok.items() for a in ("--artifact", f"{n}={r['directory']}")),
                                   "--rounds", str(args.rounds)])
    for name, run in ok.items():
        run["decode"] = speed.get(name, speed)

    embedding_int4 = config.vocab_size * config.dim // 2 + config.vocab_size * config.dim // GROUP * 4
    results = {
        **result_files.header("onnx-peer"), "preset": args.preset, "weights": "synthetic (random, seed 0)",
        "recipe": f"int4 MatMulNBits block {GROUP}, accuracy level 4, shared 4-bit embedding, CPU, fp32 activations",
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version()},
        "versions": library_versions(), "runs": runs,
        "embedding_int4_bytes": embedding_int4, "ratios": ratios(runs),
    }
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report = render(results)
    (work / "report.md").write_text(report + "\n")
    print(report)
    return 0 if len(ok) == len(runs) else 1


def _decode(run: dict[str, Any]) -> float | None:
    return run.get("decode", {}).get("genai", {}).get("decode_tokens_per_s")


def ratios(runs: dict[str, dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for suffix in ("", "_ls"):
        ours, peer = runs[f"ours{suffix}"], runs[f"builder{suffix}"]
        if ours.get("bytes") and peer.get("bytes"):
            out[f"size{suffix}"] = ours["bytes"] / peer["bytes"]
        if _decode(ours) and _decode(peer):
            out[f"decode{suffix}"] = _decode(ours) / _decode(peer)
        rss_ours = ours.get("memory", {}).get("rss_after_generation_bytes")
        rss_peer = peer.get("memory", {}).get("rss_after_generation_bytes")
        if rss_ours and rss_peer:
            out[f"rss{suffix}"] = rss_ours / rss_peer
    return out


def render(results: dict[str, Any]) -> str:
    labels = {"builder": "onnxruntime-genai builder", "ours": "mobilellm-export",
              "builder_ls": "builder, LS model unrolled", "ours_ls": "mobilellm-export, LS model"}
    rows = []
    for name, label in labels.items():
        run = results["runs"][name]
        mem, session, nopack = run.get("memory", {}), run.get("session", {}), run.get("session_no_prepack", {})
        dec = run.get("decode", {})
        mb = lambda d, key: (d.get(key) or 0) / 1e6  # noqa: E731
        rows.append([label, run["seconds"], (run["bytes"] or 0) / 1e6, mb(mem, "rss_after_load_bytes"),
                     mb(mem, "rss_after_generation_bytes"), mb(session, "rss_after_prefill_bytes"),
                     mb(nopack, "rss_after_prefill_bytes"), dec.get("genai", {}).get("decode_tokens_per_s"),
                     dec.get("adapter", {}).get("decode_tokens_per_s")])
    table = format_table(["exporter", "export s", "file MB", "genai RSS after load MB", "genai RSS after generation MB",
                          "session RSS after prefill MB", "same, no prepacking MB", "decode tok/s (genai)",
                          "decode tok/s (our adapter)"], rows, markdown=True)
    lines = [f"{results['preset']} ({results['weights']}), {results['recipe']}", "", table, ""]
    r = results["ratios"]
    if "size" in r:
        lines.append(f"- size ours/builder: {r['size']:.3f} (target <= 1); LS model: {r.get('size_ls', float('nan')):.3f}")
    if "decode" in r:
        lines.append(f"- decode speed ours/builder in onnxruntime-genai: {r['decode']:.2f} (target >= 1); "
                     f"LS model: {r.get('decode_ls', float('nan')):.2f}")
    if "rss" in r:
        lines.append(f"- memory after generation in onnxruntime-genai, ours/builder: {r['rss']:.2f}; LS model: "
                     f"{r.get('rss_ls', float('nan')):.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
