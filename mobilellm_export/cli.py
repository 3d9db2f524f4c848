"""The `mobilellm-export` command line.

Each subcommand is a small function over the package's typed APIs; options are parsed into
explicit arguments, never forwarded as loose keyword bags. A `MobileLLMError` is printed as one
line (exit 2) unless `--debug` asks for the traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mobilellm_export.arguments import Parser, int_list, integer, real, text
from mobilellm_export.errors import MobileLLMError, UnsupportedError
from mobilellm_export.interrupts import Interrupted, interruptible
from mobilellm_export.export.plan import DEFAULT_CONTEXT
from mobilellm_export.quant.schemes import DEFAULT_METHOD, METHOD_CHOICES
from mobilellm_export.export.registry import BACKENDS
from mobilellm_export.progress import Progress
from mobilellm_export.quiet import quiet_third_party

if TYPE_CHECKING:
    from mobilellm_export.export.plan import ExportSpec, PlannedExport

PROG = "mobilellm-export"


def _common(*, top: bool) -> argparse.ArgumentParser:
    # Accepted before and after the subcommand. Subcommands suppress their defaults, or argparse
    # would let them overwrite a flag given before the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    default = False if top else argparse.SUPPRESS
    common.add_argument("--quiet", action="store_true", default=default, help="no progress output on stderr")
    common.add_argument("--debug", action="store_true", default=default, help="show tracebacks for errors")
    return common


def _model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", metavar="M",
        help="checkpoint directory, Hugging Face id (org/name), preset name (e.g. 125M, 350M-LS) or "
             "synthetic:<preset>; default: the embedded tiny model",
    )


def _checksum_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-verify-checksums", action="store_true",
                        help="run the artifact even if its files differ from the sizes and sha256 in its manifest")


# -- info ----------------------------------------------------------------------------------------

def cmd_info(args: argparse.Namespace, progress: Progress) -> int:
    from mobilellm_export.info import format_summary, summarize
    from mobilellm_export.model.sources import describe

    config, label = describe(args.model)
    summary = summarize(config, label, context=args.max_context)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


# -- generate ------------------------------------------------------------------------------------

def cmd_generate(args: argparse.Namespace, progress: Progress) -> int:
    from mobilellm_export.runtimes.generate import Sampling, TextStream, generate

    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    if args.artifact is not None:
        if args.model is not None or args.max_context is not None:
            raise UnsupportedError("an artifact directory fixes the model and context; drop --model/--max-context")
        # Running an artifact needs its runtime only: neither the model code nor the exporter.
        from mobilellm_export.runtimes.registry import open_artifact

        progress.step(f"loading {args.artifact}")
        opened = open_artifact(Path(args.artifact), check_files=not args.no_verify_checksums)
        runtime, tokenizer, label = opened.runtime, opened.require_tokenizer(), str(args.artifact)
    else:
        from mobilellm_export.model.reference import EagerRuntime
        from mobilellm_export.model.sources import load_model

        loaded = load_model(args.model, max_context=args.max_context, progress=progress)
        runtime, tokenizer, label = EagerRuntime(loaded.model), loaded.require_tokenizer(), loaded.label
    prompt_ids = tokenizer.encode(args.prompt)
    progress.step(f"generating with {runtime.name} ({len(prompt_ids)} prompt tokens)")

    def emit(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    if not args.json:
        emit(args.prompt)
    stream = TextStream(tokenizer.decode, emit) if not args.json else None
    result = generate(runtime, prompt_ids, max_new_tokens=args.max_new_tokens, eos_ids=tokenizer.eos_ids,
                      sampling=sampling, on_token=stream)
    stats = {
        "runtime": runtime.name, "model": label, "prompt_tokens": len(result.prompt_ids),
        "new_tokens": len(result.new_ids), "stop_reason": result.stop_reason,
        "prefill_tokens_per_s": round(result.prefill_tokens_per_s, 1),
        "decode_tokens_per_s": round(result.decode_tokens_per_s, 1),
    }
    if args.json:
        print(json.dumps({"text": tokenizer.decode(result.new_ids), "token_ids": result.new_ids, **stats}))
    else:
        emit("\n")
        progress.step(
            f"{stats['new_tokens']} tokens ({result.stop_reason}); prefill {stats['prefill_tokens_per_s']} tok/s, "
            f"decode {stats['decode_tokens_per_s']} tok/s"
        )
    return 0


# -- export and verify ---------------------------------------------------------------------------

def cmd_export(args: argparse.Namespace, progress: Progress) -> int:
    from mobilellm_export.export.plan import ExportSpec, existing_targets, plan_exports

    spec = ExportSpec(backends=tuple(args.backend), quants=tuple(args.quant), embedding_quant=args.embedding_quant,
                      group_size=args.group_size, max_context=args.max_context, compute_units=args.compute_units,
                      compute_precision=args.compute_precision, method=args.method,
                      calibration_file=Path(args.calibration) if args.calibration else None)
    output = Path(args.output)
    planned = plan_exports(spec)
    for backend in {p.backend.name: p.backend for p in planned}.values():
        backend.require()  # a missing optional package fails here, before any work
    existing = existing_targets(planned, output)
    if existing and not args.overwrite:
        raise UnsupportedError(f"{existing[0]} already exists; choose another --output or pass --overwrite")

    with interruptible():  # Ctrl-C / SIGTERM stop at the next step, cleaning up (interrupts.py)
        return _export(args, spec, planned, output, progress)


def _export(args: argparse.Namespace, spec: ExportSpec, planned: list[PlannedExport], output: Path,
            progress: Progress) -> int:
    from mobilellm_export.export.pipeline import Quantizer, export_artifact, free_replaced_floats
    from mobilellm_export.export.plan import check_model, resolve_context
    from mobilellm_export.model.sources import load_model

    loaded = load_model(args.model, progress=progress)
    check_model(spec, loaded.config)
    context, note = resolve_context(spec, loaded.config)
    if note:
        progress.step(note)
    if loaded.tokenizer is None:  # said even with --quiet: the artifacts will lack something apps need
        print(f"{PROG}: warning: {loaded.label} has no tokenizer (tokenizer.json or tokenizer.model), so its "
              "artifacts will have none: the apps, `generate` and the stock runners need one", file=sys.stderr)
    # Codes computed once per scheme, for every backend.
    quantizer = Quantizer(loaded, progress, calibration_file=spec.calibration_file)
    if not any(p.backend.reads_replaced_floats for p in planned):
        # Every export of this run serializes the stage's codes, and nothing here reads the float
        # model afterwards: quantize every scheme first, then free the floats the codes replaced,
        # so lowering does not carry them through its peak.
        stage = [quantizer(r.scheme, r.method) for r in (p.request(context) for p in planned)]
        freed = free_replaced_floats(loaded, stage)
        if freed:
            progress.step(f"freed {freed / 1e6:.0f} MB of float weights the codes replace")
    for p in planned:
        target = output / p.folder
        manifest = export_artifact(loaded, p.backend, p.request(context), target, overwrite=args.overwrite,
                                   progress=progress, quantizer=quantizer)
        print(f"{target}  {p.backend.name} {p.scheme.name}  {manifest['total_bytes'] / 1e6:.2f} MB")
    return 0


def cmd_verify(args: argparse.Namespace, progress: Progress) -> int:
    from mobilellm_export.verify import VerificationFailed, format_report, verify_artifact

    failed = []
    if args.target != "host" and args.model is not None:
        raise UnsupportedError(f"--target {args.target} compares the artifact with itself on this host; --model does not apply")
    for directory in args.artifacts:
        if args.target == "host":
            report = verify_artifact(Path(directory), model=args.model, eval_tokens=args.eval_tokens, progress=progress)
        else:
            from mobilellm_export.verify_emulated import verify_emulated

            report = verify_emulated(Path(directory), sysroot=Path(args.sysroot) if args.sysroot else None,
                                     progress=progress)
        print(format_report(report))
        if not report.passed:
            failed.append(directory)
    if failed:
        raise VerificationFailed(f"verification failed for {', '.join(failed)}")
    return 0


def cmd_bench(args: argparse.Namespace, progress: Progress) -> int:
    from mobilellm_export.benchmarks.harness.compare import compare
    from mobilellm_export.benchmarks.harness.report import markdown, plots
    from mobilellm_export.benchmarks.harness.run import BenchOptions, read_results, run_bench

    if not args.artifacts and args.results is None:
        raise UnsupportedError("name artifact directories to measure, or --results FILE to report on an earlier run")
    baseline = read_results(Path(args.compare)) if args.compare else None
    if args.results is not None:
        results = read_results(Path(args.results))
    else:
        options = BenchOptions(target=args.target, threads=args.threads, prompt_lengths=args.prompt_lengths,
                               new_tokens=args.new_tokens, repeats=args.repeats, quality=not args.no_quality,
                               eval_tokens=args.eval_tokens, runner=Path(args.runner) if args.runner else None,
                               sysroot=Path(args.sysroot) if args.sysroot else None,
                               check_files=not args.no_verify_checksums)
        logs = Path(args.json).parent / "bench-logs" if args.json else Path("bench-logs")
        results = run_bench([Path(a) for a in args.artifacts], options, logs, progress)
    report = markdown(results)
    print(report)
    if args.json:
        _write_atomic(Path(args.json), json.dumps(results, indent=2) + "\n")
    if args.report:
        _write_atomic(Path(args.report), report)
    if args.plots:
        for path in plots(results, Path(args.plots)):
            progress.step(f"wrote {path}")
    if baseline is not None:
        regressions = compare(results, baseline, args.max_regression)
        for regression in regressions:
            print(f"REGRESSION {regression.describe()}")
        if regressions:
            raise BenchRegression(f"{len(regressions)} figure(s) regressed by more than {args.max_regression:.0%} "
                                  f"against {args.compare}")
        print(f"no figure regressed by more than {args.max_regression:.0%} against {args.compare}")
    return 0


def cmd_bundle(args: argparse.Namespace, progress: Progress) -> int:
    from mobilellm_export.bundle import bundle

    repo_root = Path(args.repo) if args.repo else Path.cwd()
    target = bundle(Path(args.artifact), args.app, into=Path(args.into) if args.into else None, repo_root=repo_root,
                    max_bytes=args.max_bytes)
    print(f"{target}  {args.app} bundle")
    return 0


class BenchRegression(MobileLLMError):
    exit_code = 1


def cmd_demo(args: argparse.Namespace, progress: Progress) -> int:
    from mobilellm_export.demo import DemoOptions, run_demo

    return run_demo(DemoOptions(output=Path(args.output), eval_tokens=args.eval_tokens, new_tokens=args.new_tokens,
                                threads=args.threads), progress)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# -- parser and entry point ----------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = _common(top=False)
    parser = Parser(
        prog=PROG, parents=[_common(top=True)],
        description="Export Meta's MobileLLM models to phone artifacts (ExecuTorch, Core ML, ONNX), verify and measure them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = sub.add_parser("info", parents=[common], help="architecture, parameter counts and expected artifact sizes")
    _model_arg(info)
    info.add_argument("--max-context", type=integer(2), metavar="N", help="context length for the KV-cache figures")
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")
    info.set_defaults(run=cmd_info)

    gen = sub.add_parser("generate", parents=[common], help="generate text with the eager model or an artifact")
    gen.add_argument("artifact", nargs="?", metavar="ARTIFACT_DIR", help="an exported artifact directory")
    _model_arg(gen)
    gen.add_argument("--prompt", required=True, type=text, help="text to continue")
    gen.add_argument("--max-new-tokens", type=integer(1), default=64, metavar="N")
    gen.add_argument("--temperature", type=real(0, 100, zero_or_at_least=0.01), default=0.0,
                     help="0 = greedy (default); sampling from 0.01")
    gen.add_argument("--top-k", type=integer(1), metavar="K")
    gen.add_argument("--top-p", type=real(0, 1), metavar="P")
    gen.add_argument("--seed", type=int, help="seed for sampling")
    gen.add_argument("--max-context", type=integer(2), metavar="N", help="KV-cache length (default: the model's)")
    gen.add_argument("--json", action="store_true", help="print the result and statistics as JSON")
    _checksum_arg(gen)
    gen.set_defaults(run=cmd_generate)

    exp = sub.add_parser("export", parents=[common], help="write phone artifacts with manifests",
                         description="Export a model to one artifact directory per backend and scheme.")
    _model_arg(exp)
    # "extend": `--backend a b` and `--backend a --backend b` both mean a and b (with nargs alone, a
    # repeated flag silently kept only its last list, and a run exported less than it was asked to).
    exp.add_argument("--backend", nargs="+", action="extend", required=True, metavar="B",
                     help=", ".join(BACKENDS) + " (several, or the flag repeated)")
    exp.add_argument("--quant", nargs="+", action="extend", required=True, metavar="Q",
                     help="; ".join(f"{b.name}: {', '.join(b.schemes)}" for b in BACKENDS.values()))
    exp.add_argument("--embedding-quant", choices=("none", "int8", "int4"),
                     help="format of the one shared embedding/output matrix (default: the scheme's own: "
                          "int8 for int8, int4 and int4-asym, float for float schemes)")
    exp.add_argument("--group-size", type=integer(1), default=32, metavar="G", help="int4 group size (default 32)")
    exp.add_argument("--method", choices=METHOD_CHOICES, default=DEFAULT_METHOD,
                     help="how the quantization stage chooses codes: rtn (round to nearest, extreme kept exact), "
                          "mse (per-group scale search, no data) or gptq (calibrated on text, act-order); "
                          f"default {DEFAULT_METHOD}: gptq for 4-bit linears when there is calibration text "
                          "(a tokenizer or --calibration), else rtn")
    exp.add_argument("--calibration", metavar="FILE",
                     help="gptq: calibration text (UTF-8); default: the embedded model's training corpus, "
                          "disjoint from the held-out text verify scores")
    exp.add_argument("--max-context", type=integer(2), metavar="N",
                     help=f"KV-cache length (default {DEFAULT_CONTEXT}, capped at the model's maximum)")
    exp.add_argument("--compute-units", choices=sorted({u for b in BACKENDS.values() for u in b.compute_units}),
                     help="; ".join(f"{b.name}: the compute units the app should load the artifact with"
                                    for b in BACKENDS.values() if b.compute_units) + " (recorded in the manifest)")
    exp.add_argument("--compute-precision", choices=sorted({p for b in BACKENDS.values() for p in b.compute_precisions}),
                     help="; ".join(f"{b.name}: the type activations are computed in (default {b.compute_precisions[0]})"
                                    for b in BACKENDS.values() if b.compute_precisions)
                          + "; fp32 runs about ten times faster on Core AI's Linux reference runtime, which "
                            "emulates fp16 arithmetic")
    exp.add_argument("--output", default="artifacts", metavar="DIR",
                     help="parent directory; each artifact goes to DIR/<backend>-<quant> (default: artifacts)")
    exp.add_argument("--overwrite", action="store_true", help="replace existing artifact directories")
    exp.set_defaults(run=cmd_export)

    ver = sub.add_parser("verify", parents=[common], help="check artifacts against the eager PyTorch model")
    ver.add_argument("artifacts", nargs="+", metavar="ARTIFACT_DIR")
    ver.add_argument("--model", metavar="M", help="reference model (default: the one named in the manifest)")
    ver.add_argument("--eval-tokens", type=integer(64, why=" (held-out positions to score)"), default=4096, metavar="N", help="positions to score (default 4096)")
    ver.add_argument("--target", choices=("host", "qemu-aarch64"), default="host",
                     help="qemu-aarch64: greedy tokens and logits on an emulated ARM64 CPU against this host's "
                          "(ExecuTorch artifacts; `make arm64-env` sets the emulator up)")
    ver.add_argument("--sysroot", metavar="DIR", help="qemu-aarch64: the arm64 sysroot (default "
                     "$MOBILELLM_ARM64_SYSROOT or ~/.cache/mobilellm-export/arm64-sysroot)")
    ver.set_defaults(run=cmd_verify)

    bench = sub.add_parser("bench", parents=[common], help="latency, memory and quality of artifacts",
                           description="Measure artifacts, each in its own process: load time, time to first "
                                       "token, prefill/decode speed, memory, perplexity and agreement.")
    bench.add_argument("artifacts", nargs="*", metavar="ARTIFACT_DIR")
    bench.add_argument("--target", choices=("host", "adb", "qemu-aarch64"), default="host",
                       help="qemu-aarch64: ExecuTorch artifacts on an emulated ARM64 CPU (an emulator's speed, "
                            "not a device figure)")
    bench.add_argument("--sysroot", metavar="DIR", help="qemu-aarch64: the arm64 sysroot")
    bench.add_argument("--threads", type=integer(1), default=2, metavar="N")
    bench.add_argument("--prompt-lengths", type=int_list(1), default=(32, 128), metavar="L1,L2")
    bench.add_argument("--new-tokens", type=integer(2), default=64, metavar="N")
    bench.add_argument("--repeats", type=integer(1), default=5, metavar="N", help="measured runs after one warm-up")
    bench.add_argument("--eval-tokens", type=integer(64), default=1024, metavar="N", help="held-out positions for quality")
    bench.add_argument("--no-quality", action="store_true", help="skip perplexity and agreement")
    bench.add_argument("--runner", metavar="PATH", help="adb: ExecuTorch's LLM runner binary built for Android")
    bench.add_argument("--json", metavar="FILE", help="write the results (JSON, kind \"bench\")")
    bench.add_argument("--report", metavar="FILE", help="write the Markdown table")
    _checksum_arg(bench)
    bench.add_argument("--plots", metavar="DIR", help="write PNG plots")
    bench.add_argument("--results", metavar="FILE", help="report on (and compare) an earlier --json instead of measuring")
    bench.add_argument("--compare", metavar="BASELINE", help="fail when a figure regressed against this --json")
    bench.add_argument("--max-regression", type=real(0, 0.99), default=0.15, metavar="R",
                       help="allowed relative regression for --compare (default 0.15)")
    bench.set_defaults(run=cmd_bench)

    bun = sub.add_parser("bundle", parents=[common], help="copy an artifact into the Android or iOS sample app",
                         description="Copy an artifact, its tokenizer and a bundle manifest (bundle.json) into "
                                     "the sample app's model folder, or into --into.")
    bun.add_argument("artifact", metavar="ARTIFACT_DIR")
    bun.add_argument("--app", choices=("android", "ios"), required=True)
    bun.add_argument("--into", metavar="PATH", help="parent folder for model/ (default: the app's asset folder)")
    bun.add_argument("--repo", metavar="DIR", help="repository root holding android_demo/ and ios_demo/ (default: .)")
    bun.add_argument("--max-bytes", type=integer(1), metavar="N", help="size limit (default: what the app can ship, 200 MB)")
    bun.set_defaults(run=cmd_bundle)

    demo = sub.add_parser("demo", parents=[common], help="the whole pipeline on the embedded model (make demo)",
                          description="Export the embedded model with every backend and scheme that works here, "
                                      "verify each artifact and print one table of size, speed and quality.")
    demo.add_argument("--output", default="out/demo", metavar="DIR", help="where artifacts are written")
    demo.add_argument("--eval-tokens", type=integer(64), default=4096, metavar="N", help="held-out positions to score")
    demo.add_argument("--new-tokens", type=integer(2), default=48, metavar="N")
    demo.add_argument("--threads", type=integer(1), default=2, metavar="N")
    demo.set_defaults(run=cmd_demo)

    return parser


def _version() -> str:
    from mobilellm_export import __version__

    return __version__


_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO,
                       errno.EMFILE, errno.ENAMETOOLONG}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    progress = Progress(quiet=args.quiet)
    if not args.debug:
        quiet_third_party()
    try:
        return args.run(args, progress)
    except MobileLLMError as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stdout = open(os.devnull, "w")  # keep the interpreter's final flush quiet
        return 0
    except OSError as exc:
        # The machine's, not the tool's: a full disk, a file too large, no permission.
        if args.debug or exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{PROG}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return exc.exit_code if isinstance(exc, Interrupted) else 130


if __name__ == "__main__":
    sys.exit(main())
