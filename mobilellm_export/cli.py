"""The `mobilellm-export` command line.

Each subcommand is a small function over the package's typed APIs; options are parsed into
explicit arguments, never forwarded as loose keyword bags. A `MobileLLMError` is printed as one
line (exit 2) unless `--debug` asks for the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from mobilellm_export.errors import MobileLLMError, UnsupportedError
from mobilellm_export.progress import Progress

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


# -- info ----------------------------------------------------------------------------------------

def cmd_info(args: argparse.Namespace, progress: Progress) -> int:
    from mobilellm_export.model.sources import describe
    from mobilellm_export.model.summary import summarize, format_summary

    config, label = describe(args.model)
    summary = summarize(config, label, context=args.max_context)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


# -- generate ------------------------------------------------------------------------------------

def cmd_generate(args: argparse.Namespace, progress: Progress) -> int:
    from mobilellm_export.model.sources import load_model
    from mobilellm_export.runtimes.eager import EagerRuntime
    from mobilellm_export.runtimes.generate import Sampling, TextStream, generate

    if args.artifact is not None:
        if args.model is not None:
            raise UnsupportedError("give either --model or an artifact directory, not both")
        raise UnsupportedError(
            "running exported artifact directories arrives with the export backends (issues #3-#5); "
            "use --model for eager PyTorch generation"
        )
    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    loaded = load_model(args.model, max_context=args.max_context, progress=progress)
    tokenizer = loaded.require_tokenizer()
    prompt_ids = tokenizer.encode(args.prompt)
    runtime = EagerRuntime(loaded.model)
    progress.step(f"generating with {runtime.name} ({len(prompt_ids)} prompt tokens)")

    def emit(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    if not args.json:
        emit(args.prompt)
    stream = TextStream(tokenizer.decode, emit) if not args.json else None
    result = generate(runtime, prompt_ids, max_new_tokens=args.max_new_tokens, eos_ids=(tokenizer.eos_id,),
                      sampling=sampling, on_token=stream)
    stats = {
        "runtime": runtime.name, "model": loaded.label, "prompt_tokens": len(result.prompt_ids),
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


# -- reserved commands, each filled in by its issue ----------------------------------------------

_RESERVED = {
    "export": ("write a phone artifact (ExecuTorch .pte, Core ML .mlpackage, ONNX) with a manifest",
               "the export backends (issues #3 ExecuTorch, #4 ONNX, #5 Core ML)"),
    "verify": ("check an artifact directory's checksums and compare it with the eager PyTorch model",
               "the export backends (issues #3-#5)"),
    "bench": ("measure load time, time to first token, prefill/decode speed and memory of artifacts",
              "the benchmark harness (issue #6)"),
    "bundle": ("copy an artifact into the Android or iOS sample app with a bundle manifest",
               "the sample apps (issue #7)"),
}


def _reserved(name: str, lands_with: str) -> Callable[[argparse.Namespace, Progress], int]:
    def run(args: argparse.Namespace, progress: Progress) -> int:
        raise UnsupportedError(f"`{name}` is not available in this version yet; it lands with {lands_with}")
    return run


# -- parser and entry point ----------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = _common(top=False)
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[_common(top=True)],
        description="Export Meta's MobileLLM models to phone artifacts (ExecuTorch, Core ML, ONNX), verify and measure them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = sub.add_parser("info", parents=[common], help="architecture, parameter counts and expected artifact sizes")
    _model_arg(info)
    info.add_argument("--max-context", type=int, metavar="N", help="context length for the KV-cache figures")
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")
    info.set_defaults(run=cmd_info)

    gen = sub.add_parser("generate", parents=[common], help="generate text (eager PyTorch; artifact directories later)")
    gen.add_argument("artifact", nargs="?", metavar="ARTIFACT_DIR", help="an exported artifact directory")
    _model_arg(gen)
    gen.add_argument("--prompt", required=True, help="text to continue")
    gen.add_argument("--max-new-tokens", type=int, default=64, metavar="N")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    gen.add_argument("--top-k", type=int, metavar="K")
    gen.add_argument("--top-p", type=float, metavar="P")
    gen.add_argument("--seed", type=int, help="seed for sampling")
    gen.add_argument("--max-context", type=int, metavar="N", help="KV-cache length (default: the model's)")
    gen.add_argument("--json", action="store_true", help="print the result and statistics as JSON")
    gen.set_defaults(run=cmd_generate)

    for name, (summary, lands_with) in _RESERVED.items():
        cmd = sub.add_parser(name, parents=[common], help=f"{summary} (not yet available)",
                             description=f"{summary}. Not yet available: lands with {lands_with}.")
        cmd.set_defaults(run=_reserved(name, lands_with))
    return parser


def _version() -> str:
    from mobilellm_export import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    progress = Progress(quiet=args.quiet)
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
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
