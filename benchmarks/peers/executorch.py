"""Our ExecuTorch export against ExecuTorch's own `export_llm`, same weights, same recipe.

    python -m mobilellm_export.benchmarks.peers.executorch [--preset 125M] [--work out/bench/executorch-peer]

Both export the same synthetic-weight checkpoint (random weights with the published shapes) with
8da4w (int4 weights in groups of 32, int8 dynamic activations), a 4-bit group-32 embedding,
XNNPACK, the KV cache with custom SDPA and a context of 1024. Each export and each decode
measurement runs in its own child process; the script reports export wall time, peak export RSS,
artifact size, decode tokens/s (two harnesses over the same runtime) and memory after load, plus
the ratios the issue sets as targets. Writes JSON and Markdown next to the artifacts.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

from mobilellm_export.export.plan import artifact_folder
from mobilellm_export.table import format_table
from mobilellm_export.versions import library_versions

from .. import results as result_files
from ..synthetic import write_llama_layout, write_synthetic_checkpoint
from .measure import python_cmd, run_json_probe, run_measured

CONTEXT = 1024


def export_peer(work: Path, params: Path, checkpoint: Path, config: Any) -> dict[str, Any]:
    out = work / "peer"
    out.mkdir(parents=True, exist_ok=True)
    metadata = json.dumps({"get_bos_id": config.bos_id, "get_eos_ids": list(config.eos_ids)})
    cmd = python_cmd(
        "-m", "executorch.extension.llm.export.export_llm",
        "base.model_class=llama3", f"base.params={params}", f"base.checkpoint={checkpoint}",
        f"base.metadata='{metadata}'",
        "model.use_kv_cache=True", "model.use_sdpa_with_kv_cache=True", "model.enable_dynamic_shape=True",
        "quantization.qmode=8da4w", "quantization.group_size=32", "quantization.embedding_quantize='4,32'",
        "backend.xnnpack.enabled=True",
        f"export.max_seq_length={CONTEXT}", f"export.max_context_length={CONTEXT}",
        f"export.output_dir={out}", "export.output_name=model.pte",
    )
    # export_llm writes its .pte and hydra's outputs/ relative to the working directory.
    measured = run_measured(cmd, work / "peer-export.log", cwd=out)
    pte = out / "model.pte"
    return {"command": " ".join(cmd[1:]), "seconds": measured.seconds, "peak_rss_bytes": measured.peak_rss_bytes,
            "returncode": measured.returncode, "program": str(pte),
            "bytes": pte.stat().st_size if pte.exists() else None}


def export_ours(work: Path, checkpoint_dir: Path, name: str, method: str) -> dict[str, Any]:
    """`method`: rtn is export_llm's own 8da4w rounding (the like-for-like run the ratios use);
    auto is our default, GPTQ calibrated on text, which adds its minutes to the export."""
    out = work / name
    cmd = python_cmd("-m", "mobilellm_export.cli", "--quiet", "export", "--model", str(checkpoint_dir),
                     "--backend", "executorch", "--quant", "int4", "--embedding-quant", "int4", "--group-size", "32",
                     "--method", method, "--max-context", str(CONTEXT), "--output", str(out), "--overwrite")
    measured = run_measured(cmd, work / f"{name}-export.log")
    artifact = out / artifact_folder("executorch", "int4", "int4")
    files = [artifact / "model.pte", artifact / "model.ptd"]
    return {"command": " ".join(cmd[1:]), "method": method, "seconds": measured.seconds,
            "peak_rss_bytes": measured.peak_rss_bytes,
            "returncode": measured.returncode, "program": str(files[0]), "data": str(files[1]),
            "bytes": sum(f.stat().st_size for f in files) if all(f.exists() for f in files) else None}


def probe(work: Path, log_name: str, args: list[str]) -> dict[str, Any]:
    return run_json_probe("mobilellm_export.benchmarks.peers.executorch_probe", work / f"{log_name}.log", args)


def artifact_arg(name: str, run: dict[str, Any]) -> str:
    return f"{name}={run['program']}" + (f",{run['data']}" if run.get("data") else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="125M")
    parser.add_argument("--work", type=Path, default=Path("out/bench/executorch-peer"))
    parser.add_argument("--reuse", action="store_true",
                        help="keep exports (and their figures) from an earlier run in --work; measure again")
    parser.add_argument("--rounds", type=int, default=15, help="alternating decode rounds per artifact")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.exists() else {}

    def reused(name: str, method: str | None = None) -> dict[str, Any] | None:
        run = previous.get(name) if args.reuse else None
        if not (run and run.get("returncode") == 0 and Path(run["program"]).exists()
                and run.get("method", "auto" if name != "peer" else None) == method):
            return None
        run["bytes"] = sum(Path(run[k]).stat().st_size for k in ("program", "data") if run.get(k))
        return run

    checkpoint_dir, ls_dir = work / "checkpoint", work / "checkpoint-ls"
    print(f"writing synthetic {args.preset} and {args.preset}-LS checkpoints (random weights)", flush=True)
    model = write_synthetic_checkpoint(args.preset, checkpoint_dir)
    params, pth = write_llama_layout(model, work / "llama")
    config = model.config
    del model
    write_synthetic_checkpoint(f"{args.preset}-LS", ls_dir)

    runs: dict[str, dict[str, Any]] = {}
    print("exporting with ExecuTorch's export_llm (the peer)", flush=True)
    runs["peer"] = reused("peer") or export_peer(work, params, pth, config)
    print("exporting with mobilellm-export, round to nearest as export_llm", flush=True)
    runs["ours"] = reused("ours", "rtn") or export_ours(work, checkpoint_dir, "ours", "rtn")
    print("exporting with mobilellm-export, its default (GPTQ)", flush=True)
    runs["ours_gptq"] = reused("ours_gptq", "auto") or export_ours(work, checkpoint_dir, "ours_gptq", "auto")
    print(f"exporting {args.preset}-LS with mobilellm-export", flush=True)
    # LS: measured for memory after load, which the rounding does not change.
    runs["ours_ls"] = reused("ours_ls", "auto") or export_ours(work, ls_dir, "ours_ls", "auto")
    ok = {name: run for name, run in runs.items() if run["returncode"] == 0}

    print("measuring memory after load, one process per artifact", flush=True)
    for name, run in ok.items():
        run["memory"] = probe(work, f"{name}-memory", ["--memory", "--artifact", artifact_arg(name, run)])[name]
    print("measuring decode speed, alternating peer and ours in one process", flush=True)
    speed_names = [n for n in ("peer", "ours") if n in ok]
    speed = probe(work, "decode", [*(a for n in speed_names for a in ("--artifact", artifact_arg(n, ok[n]))),
                                   "--tokenizer", str(checkpoint_dir / "tokenizer.json"), "--rounds", str(args.rounds)])
    for name in speed_names:
        ok[name]["decode"] = speed.get(name, speed)
    peer, ours, ours_ls = runs["peer"], runs["ours"], runs["ours_ls"]

    embedding_int4 = config.vocab_size * config.dim // 2 + config.vocab_size * config.dim // 32 * 2
    results = {
        **result_files.header("executorch-peer"), "preset": args.preset, "weights": "synthetic (random, seed 0)",
        "recipe": "8da4w g32, embedding int4 g32, XNNPACK, KV cache + custom SDPA, context 1024",
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version()},
        "versions": library_versions(), "peer": peer, "ours": ours, "ours_ls": ours_ls,
        "ours_gptq": runs["ours_gptq"],
        "embedding_int4_bytes": embedding_int4,
    }
    if peer.get("bytes") and ours.get("bytes"):
        results["ratios"] = {
            "size_saving_bytes": peer["bytes"] - ours["bytes"],
            "size_saving_vs_embedding": (peer["bytes"] - ours["bytes"]) / embedding_int4,
            "export_time": ours["seconds"] / peer["seconds"],
            "export_peak_rss": ours["peak_rss_bytes"] / peer["peak_rss_bytes"],
        }
        if "decode_tokens_per_s" in peer.get("decode", {}) and "decode_tokens_per_s" in ours.get("decode", {}):
            results["ratios"]["decode"] = ours["decode"]["decode_tokens_per_s"] / peer["decode"]["decode_tokens_per_s"]
            results["ratios"]["decode_best"] = (ours["decode"]["decode_tokens_per_s_best"]
                                                / peer["decode"]["decode_tokens_per_s_best"])
            if peer["decode"].get("runner_decode_tokens_per_s") and ours["decode"].get("runner_decode_tokens_per_s"):
                results["ratios"]["runner_decode"] = (ours["decode"]["runner_decode_tokens_per_s"]
                                                      / peer["decode"]["runner_decode_tokens_per_s"])
    if "memory" in ours and "memory" in ours_ls:
        results["ratios"] = {**results.get("ratios", {}),
                             "ls_rss_after_load": ours_ls["memory"]["rss_after_load_bytes"] / ours["memory"]["rss_after_load_bytes"]}
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    report = render(results)
    (work / "report.md").write_text(report + "\n")
    print(report)
    return 0 if len(ok) == len(runs) else 1


def render(results: dict[str, Any]) -> str:
    labels = {"peer": "ExecuTorch export_llm", "ours": "mobilellm-export (rtn)",
              "ours_gptq": "mobilellm-export (default: gptq)", "ours_ls": "mobilellm-export, LS model (gptq)"}
    rows = []
    for name, label in labels.items():
        if name not in results:  # results written before the GPTQ row existed
            continue
        run = results[name]
        dec, mem = run.get("decode", {}), run.get("memory", {})
        rows.append([label, run["seconds"], run["peak_rss_bytes"] / 1e9, (run["bytes"] or 0) / 1e6,
                     dec.get("decode_tokens_per_s"), dec.get("runner_decode_tokens_per_s"),
                     (mem.get("rss_after_load_bytes") or 0) / 1e6])
    table = format_table(["exporter", "export s", "export peak GB", "artifact MB", "decode tok/s (runtime)",
                          "decode tok/s (TextLLMRunner)", "RSS after load MB"], rows, markdown=True)
    lines = [f"{results['preset']} ({results['weights']}), {results['recipe']}", "", table]
    ratios = results.get("ratios", {})
    if "size_saving_bytes" in ratios:
        lines += ["", f"- size: ours is {ratios['size_saving_bytes'] / 1e6:.2f} MB smaller "
                      f"({ratios['size_saving_vs_embedding']:.2f}x one int4 embedding matrix; target >= 1)",
                  f"- export time ratio ours/peer: {ratios['export_time']:.2f} (target <= 0.5; both round to nearest); "
                  f"peak RSS ratio {ratios['export_peak_rss']:.2f}"]
    if "decode" in ratios:
        lines.append(f"- decode speed ratio ours/peer: {ratios['decode']:.2f} (median round) / "
                     f"{ratios['decode_best']:.2f} (best round) in executorch.runtime, "
                     f"{ratios.get('runner_decode', float('nan')):.2f} in TextLLMRunner (target >= 1; "
                     "alternating rounds in one process)")
    if "ls_rss_after_load" in ratios:
        lines.append(f"- memory after load, LS / non-LS: {ratios['ls_rss_after_load']:.2f} "
                     "(same stored weights; above 1 means blocks run twice are packed twice)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
