"""The main job (`make demo`): the whole pipeline that exists, on the embedded default model.

Exports the embedded model with every registered backend and scheme that works on this machine,
verifies each artifact against the eager PyTorch reference, and prints one table of size, speed
and quality (the eager reference is the first row).
"""

from __future__ import annotations

import os

# coremltools draws a tqdm bar for every pass; tqdm reads this when it is first imported, which
# the imports below already do.
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import statistics
import sys
from pathlib import Path

import torch

from mobilellm_export.errors import MobileLLMError
from mobilellm_export.export.pipeline import export_artifact
from mobilellm_export.export.registry import BACKENDS, ExportRequest
from mobilellm_export.export.verify import verify_artifact
from mobilellm_export.model.evaluate import heldout_windows, oracle_unigram_perplexity, score
from mobilellm_export.model.sources import embedded_dir, load_model
from mobilellm_export.model.summary import format_summary, summarize
from mobilellm_export.progress import Progress
from mobilellm_export.quant.schemes import WeightFormat, embedding_format, get_scheme
from mobilellm_export.quiet import quiet_third_party
from mobilellm_export.runtimes.artifacts import open_artifact
from mobilellm_export.runtimes.base import DecoderRuntime
from mobilellm_export.runtimes.eager import EagerRuntime
from mobilellm_export.runtimes.generate import generate

from .report import format_table

PROMPTS = ("Return the number of", "The default value is", "This module provides")
HEADERS = ["artifact", "runtime", "weights", "size MB", "prefill tok/s", "decode tok/s", "held-out ppl",
           "top-1 vs ref", "verify"]


def speed(runtime: DecoderRuntime, prompts: list[list[int]], new_tokens: int, eos: int) -> tuple[float, float]:
    """Median prefill and decode tokens/s over the prompts (decode runs to `new_tokens`, no eos stop)."""
    generate(runtime, prompts[0], max_new_tokens=4)  # warm-up
    runs = [generate(runtime, ids, max_new_tokens=new_tokens) for ids in prompts]
    return (statistics.median(r.prefill_tokens_per_s for r in runs),
            statistics.median(r.decode_tokens_per_s for r in runs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("out/demo"), help="where artifacts are written")
    parser.add_argument("--eval-tokens", type=int, default=4096, help="held-out positions to score")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    quiet_third_party()
    progress = Progress(quiet=args.quiet)
    torch.set_num_threads(args.threads)

    loaded = load_model(None, progress=progress)
    tokenizer = loaded.require_tokenizer()
    print(format_summary(summarize(loaded.config, loaded.label)))
    print()
    reference = EagerRuntime(loaded.model)
    for prompt in PROMPTS:
        out = generate(reference, tokenizer.encode(prompt), max_new_tokens=args.new_tokens, eos_ids=(tokenizer.eos_id,))
        print(f"> {prompt}{tokenizer.decode(out.new_ids)}")
    print()

    prompts = [tokenizer.encode(p) for p in PROMPTS]
    windows = heldout_windows(tokenizer, window=256, max_tokens=args.eval_tokens)
    progress.step(f"scoring the reference on {sum(len(w) - 1 for w in windows)} held-out positions")
    ref_scores = score(reference, windows)
    prefill, decode = speed(reference, prompts, args.new_tokens, tokenizer.eos_id)
    rows = [["embedded tiny (reference)", reference.name, "fp32 (fp16 file)",
             (embedded_dir() / "model.safetensors").stat().st_size / 1e6, prefill, decode,
             ref_scores.perplexity, 1.0, "-"]]

    failures, not_run = [], set()
    for backend in BACKENDS.values():
        try:
            backend.load()
        except MobileLLMError as exc:
            print(f"skipping {backend.name}: {exc}")
            continue
        for quant in backend.schemes:
            scheme = get_scheme(quant).with_embedding(embedding_format(backend.default_embedding[quant], 32))
            target = args.output / f"{backend.name}-{quant}"
            manifest = export_artifact(loaded, ExportRequest(backend.name, scheme, loaded.config.max_seq_len),
                                       target, overwrite=True, progress=progress)
            report = verify_artifact(target, eval_tokens=args.eval_tokens, progress=progress)
            if not report.passed:
                failures.append(str(target))
            unavailable = backend.runtime_unavailable()
            if unavailable:  # Core ML off macOS: converted and checked structurally, not run
                not_run.add(f"{backend.name}: {unavailable}")
                runtime_name, prefill, decode = f"{backend.name} (not run here)", None, None
            else:
                runtime = open_artifact(target).runtime
                runtime_name = runtime.name
                prefill, decode = speed(runtime, prompts, args.new_tokens, tokenizer.eos_id)
            stored = manifest["quantization"]  # as the backend stores it (e.g. MatMulNBits int8 is per block)
            weights = (f"{WeightFormat(**stored['linear']).describe()} / "
                       f"emb {WeightFormat(**stored['embedding']).describe()}")
            rows.append([str(target), runtime_name, weights, manifest["total_bytes"] / 1e6, prefill, decode,
                         report.figures.get("perplexity"), report.figures.get("agreement"),
                         "passed" if report.passed else "FAILED"])

    print(format_table(HEADERS, rows))
    print()
    unigram = oracle_unigram_perplexity([t for w in windows for t in w[1:]])
    print(f"held-out perplexity over {len(ref_scores.nll)} positions; the best possible unigram model "
          f"scores {unigram:.1f} on the same text. Speeds: {args.threads} threads, {args.new_tokens} new tokens, "
          "median of 3 prompts.")
    for reason in sorted(not_run):
        print(f"not run here: {reason} (structural verification only)")
    if failures:
        print(f"verification FAILED for: {', '.join(failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
