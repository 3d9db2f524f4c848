"""`mobilellm-export demo` (`make demo`): the whole pipeline on the embedded default model.

Exports the embedded model with every backend and scheme that works on this machine, verifies
each artifact against the eager PyTorch reference, and prints one table of size, speed and
quality (the eager reference is the first row). Speed is measured through this package's runtime
adapters and, for backends with one, through the stock runner apps use (ExecuTorch's C++ runner,
onnxruntime-genai). Where an emulated ARM64 environment has been made (`make arm64-env`), the
ExecuTorch artifacts are also checked there against this host.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from mobilellm_export.errors import MobileLLMError, UnsupportedError
from mobilellm_export.export.pipeline import Quantizer, export_artifact
from mobilellm_export.export.plan import ExportSpec, plan_exports, resolve_context
from mobilellm_export.export.registry import BACKENDS
from mobilellm_export.info import format_summary, summarize
from mobilellm_export.model.heldout import heldout_windows, oracle_unigram_perplexity
from mobilellm_export.model.reference import EagerRuntime
from mobilellm_export.model.sources import embedded_dir, load_model
from mobilellm_export.progress import Progress
from mobilellm_export.quant.schemes import WeightFormat
from mobilellm_export.runtimes.base import DecoderRuntime
from mobilellm_export.runtimes.generate import generate
from mobilellm_export.runtimes.manifest import Manifest, read_manifest
from mobilellm_export.runtimes.registry import ADAPTERS, open_artifact
from mobilellm_export.runtimes.scoring import score
from mobilellm_export.runtimes.timing import alternating_rounds, time_decode
from mobilellm_export.table import format_table
from mobilellm_export.verify import PROMPTS, verify_artifact

HEADERS = ["artifact", "runtime", "weights", "size MB", "prefill tok/s", "decode tok/s", "stock runner decode tok/s",
           "held-out ppl", "top-1 vs ref", "verify"]


@dataclass(frozen=True)
class DemoOptions:
    output: Path = Path("out/demo")
    eval_tokens: int = 4096
    new_tokens: int = 48
    threads: int = 2


def speed(runtime: DecoderRuntime, prompts: list[list[int]], new_tokens: int) -> tuple[float, float]:
    """Median prefill and decode tokens/s over the prompts (decode runs all `new_tokens`, no eos stop)."""
    runs = {i: (lambda ids=ids: time_decode(runtime, ids, new_tokens - 1)) for i, ids in enumerate(prompts)}
    samples = [s for results in alternating_rounds(runs, rounds=1).values() for s in results]
    return statistics.median(p for p, _ in samples), statistics.median(d for _, d in samples)


def stock_decode(manifest: Manifest, new_tokens: int, threads: int) -> float | None:
    """Median decode tokens/s over the demo prompts in the backend's stock runner (None without
    one). A runner stops at an end-of-sequence token; the rate is over the steps it ran."""
    adapter = ADAPTERS[manifest.backend]
    if adapter.stock_runner is None or manifest.runtime.tokenizer is None:
        return None
    runner = adapter.open_stock(manifest, threads=threads)
    runner.generate(PROMPTS[0], 2)  # the runner loads its program on the first call
    rates = [runner.generate(p, new_tokens).decode_tokens_per_s for p in PROMPTS]
    rates = [r for r in rates if r]
    return statistics.median(rates) if rates else None


def check_emulated_arm64(targets: list[Path], progress: Progress) -> list[str]:
    """ExecuTorch artifacts on the emulated ARM64 CPU, when its sysroot exists; the failures."""
    from mobilellm_export.runtimes.emulated.qemu import TARGET, Emulator
    from mobilellm_export.verify import format_report
    from mobilellm_export.verify_emulated import verify_emulated

    runs = [t for t in targets if TARGET in ADAPTERS[read_manifest(t).backend].emulated_targets]
    try:
        Emulator.find()
    except UnsupportedError as exc:
        print(f"emulated ARM64 not checked: {exc}")
        return []
    failed = []
    for target in runs:
        report = verify_emulated(target, progress=progress)
        print(format_report(report))
        if not report.passed:
            failed.append(f"{target} (emulated ARM64)")
    return failed


def weights_label(quantization: dict) -> str:
    """Linear / shared-matrix formats: the stage's numbers for integer formats (backends differ only
    in layout), what the files hold for float ones (Core ML stores float weights in fp16)."""
    def label(kind: str) -> str:
        stage, stored = WeightFormat(**quantization["stage"][kind]), WeightFormat(**quantization[kind])
        return (stored if stored.is_float else stage).describe()
    return f"{label('linear')} / emb {label('embedding')}"


def run_demo(options: DemoOptions, progress: Progress) -> int:
    import torch

    torch.set_num_threads(options.threads)
    loaded = load_model(None, progress=progress)
    tokenizer = loaded.require_tokenizer()
    print(format_summary(summarize(loaded.config, loaded.label)))
    print()
    reference = EagerRuntime(loaded.model)
    for prompt in PROMPTS:
        out = generate(reference, tokenizer.encode(prompt), max_new_tokens=options.new_tokens,
                       eos_ids=tokenizer.eos_ids)
        print(f"> {prompt}{tokenizer.decode(out.new_ids)}")
    print()

    prompts = [tokenizer.encode(p) for p in PROMPTS]
    windows = heldout_windows(tokenizer, window=256, max_tokens=options.eval_tokens)
    progress.step(f"scoring the reference on {sum(len(w) - 1 for w in windows)} held-out positions")
    ref_scores = score(reference, windows)
    prefill, decode = speed(reference, prompts, options.new_tokens)
    rows = [["embedded tiny (reference)", reference.name, "fp32 (fp16 file)",
             (embedded_dir() / "model.safetensors").stat().st_size / 1e6, prefill, decode, None,
             ref_scores.perplexity, 1.0, "-"]]
    targets = []

    available = []
    for backend in BACKENDS.values():
        try:
            backend.require()
            available.append(backend.name)
        except MobileLLMError as exc:
            print(f"skipping {backend.name}: {exc}")
    # Core AI's Linux reference runtime emulates fp16 arithmetic (about ten times slower than fp32),
    # so the demo exports Core AI with fp32 activations over the same stored weights; its fp16
    # default is tested on a small model (tests/export/test_coreai.py).
    takes_fp32 = any("fp32" in BACKENDS[name].compute_precisions for name in available)
    spec = ExportSpec(backends=tuple(available), compute_precision="fp32" if takes_fp32 else None)
    context, _ = resolve_context(spec, loaded.config)
    failures, not_run = [], set()
    quantizer = Quantizer(loaded, progress)
    for planned in plan_exports(spec):
        target = options.output / planned.folder
        manifest = export_artifact(loaded, planned.backend, planned.request(context), target, overwrite=True,
                                   progress=progress, quantizer=quantizer)
        report = verify_artifact(target, eval_tokens=options.eval_tokens, progress=progress)
        if not report.passed:
            failures.append(str(target))
        unavailable = ADAPTERS[planned.backend.name].unavailable()
        if unavailable:  # Core ML off macOS: converted and checked structurally, not run
            not_run.add(f"{planned.backend.name}: {unavailable}")
            runtime_name, prefill, decode, stock = f"{planned.backend.name} (not run here)", None, None, None
        else:
            runtime = open_artifact(target, check_files=False).runtime  # verify checked the files just now
            runtime_name = runtime.name
            prefill, decode = speed(runtime, prompts, options.new_tokens)
            stock = stock_decode(read_manifest(target), options.new_tokens, options.threads)
            targets.append(target)
        weights = weights_label(manifest["quantization"])
        rows.append([str(target), runtime_name, weights, manifest["total_bytes"] / 1e6, prefill, decode, stock,
                     report.figures.get("perplexity"), report.figures.get("agreement"),
                     "passed" if report.passed else "FAILED"])

    print(format_table(HEADERS, rows))
    print()
    failures += check_emulated_arm64(targets, progress)
    unigram = oracle_unigram_perplexity([t for w in windows for t in w[1:]])
    print(f"held-out perplexity over {len(ref_scores.nll)} positions; the best possible unigram model "
          f"scores {unigram:.1f} on the same text. Speeds: {options.threads} threads, {options.new_tokens} new "
          "tokens, median of 3 prompts; the stock runner is ExecuTorch's C++ runner (what Android's LlmModule "
          "and the iOS runner wrap) or onnxruntime-genai, timed by the runner's own statistics (ms clock) or "
          "around its calls.")
    for reason in sorted(not_run):
        print(f"not run here: {reason} (structural verification only)")
    if failures:
        print(f"verification FAILED for: {', '.join(failures)}")
        return 1
    return 0
