"""`make bench-quality`: what quantization costs on real weights, by method and backend.

SmolLM2-135M-Instruct (real weights fetched through pip, benchmarks/realweights.py) and the
embedded model, exported by each backend at its 4-bit and 8-bit schemes with each method of the
quantization stage, then scored by `verify` on the held-out text (the same windows for every row),
next to llama.cpp's own quantizations of the same weights: an F32 GGUF quantized by llama.cpp's
quantizer (what `llama-quantize` runs) to Q4_0, Q4_K_M and Q8_0, its logits read through
llama-cpp-python and scored by the same code.

    python -m mobilellm_export.benchmarks.quality [--work out/bench/quality] [--quick] [--no-llamacpp]

Writes results.json (kind "quality") and report.md. Sizes count the files a runtime loads for the
model (ours: program and weights, tokenizer apart; a GGUF holds its tokenizer inside). Core ML
packages execute only on macOS: their rows give size and times; the same codes are scored in the
ONNX rows. Decode speed is a short single-stream run through this package's runtime adapters (and
llama-cpp-python), for the "did the method slow it down" question only; `make bench` measures speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mobilellm_export.export.pipeline import Quantizer, export_artifact
from mobilellm_export.export.plan import ExportSpec, plan_exports
from mobilellm_export.model.heldout import heldout_windows
from mobilellm_export.model.reference import EagerRuntime
from mobilellm_export.model.sources import LoadedModel, describe, load_model
from mobilellm_export.progress import Progress
from mobilellm_export.quant.schemes import QuantScheme
from mobilellm_export.runtimes.manifest import ArtifactError, Manifest, read_manifest
from mobilellm_export.runtimes.registry import adapter_for, open_artifact
from mobilellm_export.runtimes.scoring import Scores, agreement, score
from mobilellm_export.runtimes.timing import synthetic_prompt, time_decode
from mobilellm_export.table import format_table
from mobilellm_export.verify import verify_artifact

from . import results as result_files
from .realweights import ensure_smollm2

CONTEXT = 512
EVAL_TOKENS = 4096  # verify's default: 16 windows of 256 tokens
DECODE_PROMPT, DECODE_NEW, DECODE_ROUNDS = 32, 64, 3


@dataclass(frozen=True)
class Row:
    backend: str
    quant: str
    method: str
    group_size: int = 32

    @property
    def folder(self) -> str:
        return f"{self.backend}-{self.quant}-{self.method}" + ("" if self.group_size == 32 else f"-g{self.group_size}")


def _rows(backend: str, quant: str, methods: tuple[str, ...], group_size: int = 32) -> list[Row]:
    return [Row(backend, quant, m, group_size) for m in methods]


# The methods where a backend's export is quick (ONNX, where the other backends' codes are scored
# too: the codes of a scheme and method are the same numbers everywhere); the default (gptq) where
# it is slow (an ExecuTorch lowering of the 135M takes about ten minutes, a Core ML conversion four).
# Rows that share a (scheme, method) sit together: the stage runs once per pair in a process.
# Core ML's row is for size only (its packages execute on macOS alone), so it is not given a
# GPTQ stage of its own: the codes' quality is the ONNX row's.
REAL_ROWS = (
    _rows("onnx", "int4", ("rtn", "gptq")) + _rows("executorch", "int4", ("gptq",))
    + _rows("onnx", "int4-asym", ("gptq",))
    + _rows("onnx", "int8", ("rtn", "gptq")) + _rows("executorch", "int8", ("gptq",))
    + _rows("coreml", "int4", ("rtn",))
)
EMBEDDED_ROWS = (
    _rows("onnx", "int4", ("rtn", "mse", "gptq")) + _rows("onnx", "int4-asym", ("rtn", "gptq"))
    + _rows("onnx", "int8", ("rtn", "gptq"))
)
QUICK_ROWS = _rows("onnx", "int4", ("rtn", "gptq"))
LLAMACPP_TYPES = ("F32", "Q8_0", "Q4_K_M", "Q4_0")
MODELS = ("smollm2-135m", "embedded")


def _model_bytes(manifest: Manifest) -> int:
    """What a runtime loads for the model: every file of the artifact but the tokenizer's."""
    tokenizer = {manifest.runtime.tokenizer, "tokenizer_config.json"}
    return sum(f["bytes"] for path, f in manifest.files.items() if path not in tokenizer and path != "manifest.json")


def _decode_rate(runtime: Any) -> float:
    prompt = synthetic_prompt(DECODE_PROMPT)
    time_decode(runtime, prompt, 8)  # warm-up
    return statistics.median(time_decode(runtime, prompt, DECODE_NEW)[1] for _ in range(DECODE_ROUNDS))


def _reusable(target: Path, scheme: QuantScheme, method: str) -> bool:
    """Whether `target` is an artifact of an earlier run with this scheme and method (the run is
    resumable: an hour of exports is not redone because the last row failed)."""
    try:
        stage = read_manifest(target).quantization.get("stage", {})
    except ArtifactError:
        return False
    return stage.get("method") == method and {k: stage.get(k) for k in ("linear", "embedding")} == {
        "linear": scheme.linear.to_dict(), "embedding": scheme.embedding.to_dict()}


def measure_ours(loaded: LoadedModel, rows: list[Row], work: Path, progress: Progress, *,
                 saved_only: bool = False) -> list[dict[str, Any]]:
    quantizer = Quantizer(loaded, progress)
    measured = []
    for row in rows:
        (planned,) = plan_exports(ExportSpec(backends=(row.backend,), quants=(row.quant,), group_size=row.group_size,
                                             method=row.method))
        planned.backend.require()  # the bench installs every backend: a missing one is an error
        target, saved = work / row.folder, work / f"{row.folder}.json"
        if saved.is_file() and _reusable(target, planned.scheme, row.method):
            print(f"{loaded.label}: {row.folder} (measured earlier: {saved})", flush=True)
            measured.append(json.loads(saved.read_text()))
            continue
        if saved_only:
            print(f"{loaded.label}: {row.folder} not measured yet (--saved-only)", flush=True)
            continue
        print(f"{loaded.label}: {row.folder}", flush=True)
        stage_s = export_s = None
        if not _reusable(target, planned.scheme, row.method):
            start = time.perf_counter()
            quantizer(planned.scheme, row.method)  # cached per (scheme, method) across backends
            stage_s = time.perf_counter() - start
            start = time.perf_counter()
            export_artifact(loaded, planned.backend, planned.request(loaded.model.max_context), target,
                            overwrite=True, quantizer=quantizer)
            export_s = time.perf_counter() - start
        report = verify_artifact(target, eval_tokens=EVAL_TOKENS)
        manifest = read_manifest(target)
        entry: dict[str, Any] = {
            **asdict(row), "linear": planned.scheme.linear.describe(), "shared_matrix": planned.scheme.embedding.describe(),
            "model_bytes": _model_bytes(manifest), "total_bytes": manifest.total_bytes,
            "stage_s": stage_s, "export_s": export_s, "verify_passed": report.passed,
            "perplexity": report.figures.get("perplexity"),
            "perplexity_increase": report.figures.get("perplexity_increase"),
            "agreement": report.figures.get("agreement"), "decode_tokens_per_s": None,
        }
        if adapter_for(manifest).unavailable() is None:
            # verify_artifact checked the files just now.
            entry["decode_tokens_per_s"] = _decode_rate(open_artifact(target, threads=2, check_files=False).runtime)
        saved.write_text(json.dumps(entry, indent=2) + "\n")
        measured.append(entry)
    return measured


def measure_llamacpp(loaded: LoadedModel, checkpoint: Path, work: Path, windows: list[list[int]],
                     reference: Scores) -> list[dict[str, Any]]:
    """llama.cpp's quantizations of the same weights, scored on the same windows."""
    from .peers.llamacpp import LlamaCppRuntime, llama_quantize, write_gguf

    work.mkdir(parents=True, exist_ok=True)
    f32 = work / "model-F32.gguf"
    if not f32.is_file():
        write_gguf(checkpoint, f32, "F32", CONTEXT)
    measured = []
    for ftype in LLAMACPP_TYPES:
        path = f32 if ftype == "F32" else work / f"model-{ftype}.gguf"
        saved = work / f"{ftype}.json"
        if saved.is_file() and path.is_file():
            measured.append(json.loads(saved.read_text()))
            continue
        quantize_s = None
        if not path.is_file():
            start = time.perf_counter()
            llama_quantize(f32, path, ftype, threads=2)
            quantize_s = time.perf_counter() - start
        print(f"{loaded.label}: llama.cpp {ftype}", flush=True)
        scores = score(LlamaCppRuntime(path, CONTEXT, 2, every_position=True), windows)
        measured.append({
            "system": f"llama.cpp {ftype}", "model_bytes": path.stat().st_size, "quantize_s": quantize_s,
            "perplexity": scores.perplexity, "perplexity_increase": scores.perplexity / reference.perplexity - 1,
            "agreement": agreement(scores, reference),
            "decode_tokens_per_s": _decode_rate(LlamaCppRuntime(path, CONTEXT, 2)),
        })
        saved.write_text(json.dumps(measured[-1], indent=2) + "\n")
    return measured


def _report(name: str, reference: float, ours: list[dict[str, Any]], peers: list[dict[str, Any]]) -> str:
    def pct(value: float | None, signed: bool = False) -> str:
        return "-" if value is None else (f"{value:+.1%}" if signed else f"{value:.1%}")

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = [[r["backend"], r["quant"] + ("" if r["group_size"] == 32 else f" g{r['group_size']}"), r["method"],
             f"{r['linear']}; shared {r['shared_matrix']}", r["model_bytes"] / 1e6, num(r["perplexity"], ".3f"),
             pct(r["perplexity_increase"], True), pct(r["agreement"]), num(r["stage_s"], ".0f"), num(r["export_s"], ".0f"),
             num(r["decode_tokens_per_s"], ".1f"), "passed" if r["verify_passed"] else "FAILED"] for r in ours]
    rows += [[p["system"], "", "", "llama.cpp quantizer", p["model_bytes"] / 1e6, num(p["perplexity"], ".3f"),
              pct(p["perplexity_increase"], True), pct(p["agreement"]), num(p["quantize_s"], ".0f"), "-",
              num(p["decode_tokens_per_s"], ".1f"), ""] for p in peers]
    table = format_table(["backend", "scheme", "method", "stored", "model MB", "perplexity", "vs float", "top-1 agreement",
                          "stage s", "export s", "decode tok/s", "verify"], rows, markdown=True)
    return f"### {name} (float reference perplexity {reference:.3f})\n\n{table}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("out/bench/quality"))
    parser.add_argument("--weights", type=Path, default=Path("out/weights"), help="where the real weights are kept")
    parser.add_argument("--quick", action="store_true", help="two ONNX rows per model (a smoke run)")
    parser.add_argument("--no-llamacpp", action="store_true", help="leave out llama.cpp's rows")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--saved-only", action="store_true",
                        help="report the rows an earlier run measured (each is saved as it finishes); run nothing new")
    args = parser.parse_args(argv)
    from mobilellm_export.quiet import quiet_third_party

    quiet_third_party()
    progress = Progress(quiet=True)
    results = {**result_files.header("quality"), "context": CONTEXT, "eval_tokens": EVAL_TOKENS, "models": {}}
    sections = []
    for key in args.models:
        checkpoint = ensure_smollm2(args.weights) if key == "smollm2-135m" else None
        spec, rows = (str(checkpoint), REAL_ROWS) if checkpoint else (None, EMBEDDED_ROWS)
        loaded = load_model(spec, max_context=min(CONTEXT, describe(spec)[0].max_seq_len))
        windows = heldout_windows(loaded.require_tokenizer(), window=256, max_tokens=EVAL_TOKENS)
        reference = score(EagerRuntime(loaded.model), windows)
        peers = []
        if checkpoint is not None and not args.no_llamacpp:
            peers = measure_llamacpp(loaded, checkpoint, args.work / key / "llamacpp", windows, reference)
        ours = measure_ours(loaded, list(QUICK_ROWS if args.quick else rows), args.work / key, progress,
                            saved_only=args.saved_only)
        results["models"][key] = {"label": loaded.label, "reference_perplexity": reference.perplexity,
                                  "positions": len(reference.nll), "ours": ours, "llamacpp": peers}
        sections.append(_report(loaded.label, reference.perplexity, ours, peers))
        (args.work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report = "\n".join(sections)
    (args.work / "report.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
