"""The main job (`make demo`): the whole pipeline that exists so far, on the embedded model.

Today that is the eager PyTorch reference: load the embedded tiny model, generate from a few
prompts, score it on its held-out text against a unigram baseline, and print one table of size,
speed and quality. Each export backend adds its rows here as it lands (export, verify, measure).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from mobilellm_export.model.evaluate import heldout_windows, oracle_unigram_perplexity, score
from mobilellm_export.model.sources import embedded_dir, load_model
from mobilellm_export.model.summary import format_summary, summarize
from mobilellm_export.progress import Progress
from mobilellm_export.runtimes.eager import EagerRuntime
from mobilellm_export.runtimes.generate import generate

from .report import format_table

PROMPTS = ("Return the number of", "The default value is", "This module provides")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval-tokens", type=int, default=16384, help="held-out tokens to score")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    progress = Progress(quiet=args.quiet)
    torch.set_num_threads(args.threads)

    loaded = load_model(None, progress=progress)
    tokenizer = loaded.require_tokenizer()
    print(format_summary(summarize(loaded.config, loaded.label)))
    print()

    runtime = EagerRuntime(loaded.model)
    progress.step(f"generating from {len(PROMPTS)} prompts")
    runs = []
    for prompt in PROMPTS:
        run = generate(runtime, tokenizer.encode(prompt), max_new_tokens=args.new_tokens, eos_ids=(tokenizer.eos_id,))
        runs.append(run)
        print(f"> {prompt}{tokenizer.decode(run.new_ids)}")
    print()

    progress.step(f"scoring {args.eval_tokens} held-out tokens")
    windows = heldout_windows(tokenizer, window=256, max_tokens=args.eval_tokens)
    reference = score(runtime, windows)
    unigram = oracle_unigram_perplexity([t for w in windows for t in w[1:]])
    record = json.loads((embedded_dir() / "train_record.json").read_text())

    size_mb = (embedded_dir() / "model.safetensors").stat().st_size / 1e6
    rows = [[
        "embedded tiny (reference)", runtime.name, "fp32 (fp16 on disk)", size_mb,
        statistics.median(r.prefill_tokens_per_s for r in runs), statistics.median(r.decode_tokens_per_s for r in runs),
        reference.perplexity, 1.0,
    ]]
    print(format_table(["artifact", "runtime", "scheme", "size MB", "prefill tok/s", "decode tok/s",
                        "held-out ppl", "top-1 vs ref"], rows))
    print()
    print(f"held-out perplexity {reference.perplexity:.2f} over {len(reference.nll)} tokens; "
          f"best possible unigram model on the same text {unigram:.2f}; "
          f"unigram fitted on the training split (whole held-out set) {record['heldout']['unigram_perplexity']:.2f}")
    print("export backends: none landed yet (ExecuTorch #3, ONNX #4, Core ML #5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
