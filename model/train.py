"""Train the embedded default model (`make tiny-model`): the `tiny` preset on Python's own docs.

Reproducible from its seed on the same torch build and CPU: the corpus comes from the Python
install (its digest is recorded), the tokenizer and the model are trained with fixed seeds, and
batches are drawn from a seeded generator. A few minutes on 2 CPU cores. The result is written in
Hugging Face layout with fp16 weights (under 10 MB) and committed, so nobody has to retrain it:

    config.json  model.safetensors  tokenizer.json  tokenizer_config.json
    heldout.jsonl  train_record.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from mobilellm_export.progress import Progress
from mobilellm_export.runtimes.generate import generate
from mobilellm_export.runtimes.scoring import score
from mobilellm_export.runtimes.tokenizer import load_tokenizer

from . import corpus as corpus_mod
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TINY, MobileLLMConfig
from .heldout import oracle_unigram_perplexity, token_stream, unigram_perplexity, windows
from .modeling import MobileLLM
from .reference import EagerRuntime
from .sources import embedded_dir

SAMPLE_PROMPTS = ("Return the number of", "The default value is", "This module provides")


def train_tokenizer(texts: list[str], vocab_size: int, out: Path) -> None:
    """A GPT-2-style byte-level BPE: the one tokenizer.json shape that ExecuTorch's C++ tokenizer,
    onnxruntime-genai and HF `tokenizers` all encode identically (no normalizer, no prefix space)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = bos_template()
    tok.save(str(out / "tokenizer.json"))
    # Runners find bos/eos by name from this file (the C++ tokenizer cannot guess them from "<s>").
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "add_bos_token": False, "add_eos_token": False,
        "clean_up_tokenization_spaces": False, "model_max_length": TINY.max_seq_len,
    }, indent=2) + "\n", encoding="utf-8")


def bos_template():
    """Prepend <s> when a caller asks for special tokens. ExecuTorch's C++ tokenizer adds BOS only
    through this post-processor, so without it the LLM runners would prompt the model without the
    BOS it was trained with. (This package's own encode adds BOS itself.)"""
    from tokenizers import processors

    return processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", TINY.bos_id)])


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(config: MobileLLMConfig, stream: torch.Tensor, *, steps: int, batch: int, seq_len: int, lr: float,
          seed: int, progress: Progress) -> tuple[MobileLLM, list[float]]:
    model = MobileLLM(config, max_context=seq_len).init_weights(seed)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(seed + 1)
    losses: list[float] = []
    offsets = torch.arange(seq_len + 1)
    started = time.perf_counter()
    for step in range(steps):
        starts = torch.randint(0, len(stream) - seq_len - 1, (batch,), generator=gen)
        chunk = stream[starts[:, None] + offsets]
        # bf16 autocast roughly doubles CPU training speed (oneDNN's AMX/AVX-512 bf16 kernels);
        # the weights and optimizer state stay fp32.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model.logits(chunk[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, config.vocab_size), chunk[:, 1:].reshape(-1))
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=max(steps // 20, 1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 200 == 0 or step == steps - 1:
            recent = sum(losses[-200:]) / len(losses[-200:])
            elapsed = time.perf_counter() - started
            progress.step(f"step {step + 1}/{steps}  loss {recent:.3f}  {elapsed:.0f}s")
    model.eval()
    return model, losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=embedded_dir())
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    progress = Progress(quiet=args.quiet)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    progress.step("reading the corpus from the Python install")
    docs = corpus_mod.build_corpus()
    train_docs, heldout_docs = corpus_mod.split(docs)
    progress.step(f"{len(train_docs)} training / {len(heldout_docs)} held-out documents, "
                  f"{sum(len(d.text) for d in train_docs) / 1e6:.2f} M training characters")

    work = Path(tempfile.mkdtemp(prefix=".tiny-", dir=args.output.parent if args.output.parent.exists() else None))
    try:
        progress.step("training the byte-level BPE tokenizer")
        train_tokenizer([d.text for d in train_docs], TINY.vocab_size, work)
        tok = load_tokenizer(work / "tokenizer.json", bos_id=TINY.bos_id, eos_ids=TINY.eos_ids)
        encode = lambda text: tok.encode(text, bos=False)  # noqa: E731
        stream = token_stream((d.text for d in train_docs), encode, TINY.bos_id, TINY.eos_id)
        progress.step(f"{len(stream)} training tokens ({sum(len(d.text) for d in train_docs) / len(stream):.2f} chars/token)")

        model, losses = train(TINY, torch.tensor(stream), steps=args.steps, batch=args.batch, seq_len=args.seq_len,
                              lr=args.lr, seed=args.seed, progress=progress)
        train_s = time.perf_counter() - t0
        save_checkpoint(model, work, dtype=torch.float16)
        corpus_mod.write_jsonl(heldout_docs, work / "heldout.jsonl")

        # Evaluate what is committed: the fp16 weights, loaded back through the normal path.
        progress.step("evaluating the saved fp16 weights on the held-out split")
        saved = load_checkpoint(work)
        runtime = EagerRuntime(saved.model)
        heldout_stream = token_stream((d.text for d in heldout_docs), encode, TINY.bos_id, TINY.eos_id)
        wins = windows(heldout_stream, args.seq_len)
        targets = [t for w in wins for t in w[1:]]
        ppl = score(runtime, wins).perplexity
        record = {
            "preset": "tiny",
            "seed": args.seed, "steps": args.steps, "batch": args.batch, "seq_len": args.seq_len, "lr": args.lr,
            "threads": args.threads, "autocast": "bf16", "train_seconds": round(train_s, 1),
            "tokens_seen": args.steps * args.batch * args.seq_len,
            "final_train_loss": round(sum(losses[-200:]) / len(losses[-200:]), 4),
            "corpus": {"sha256": corpus_mod.corpus_digest(docs), "documents": len(docs),
                       "train_documents": len(train_docs), "heldout_documents": len(heldout_docs),
                       "train_tokens": len(stream), "heldout_tokens": len(heldout_stream)},
            "heldout": {"window": args.seq_len, "scored_tokens": len(targets),
                        "perplexity": round(ppl, 3),
                        "unigram_perplexity": round(unigram_perplexity(Counter(stream), targets, TINY.vocab_size), 3),
                        "oracle_unigram_perplexity": round(oracle_unigram_perplexity(targets), 3)},
            "samples": {p: tok.decode(generate(runtime, tok.encode(p), max_new_tokens=60, eos_ids=(tok.eos_id,)).new_ids)
                        for p in SAMPLE_PROMPTS},
            "python": platform.python_version(), "torch": torch.__version__,
        }
        (work / "train_record.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        progress.step(f"held-out perplexity {ppl:.2f} (unigram {record['heldout']['unigram_perplexity']:.2f})")
        for path in (work, *work.iterdir()):  # mkdtemp and safetensors create owner-only files
            path.chmod(0o755 if path.is_dir() else 0o644)
        if args.output.exists():
            shutil.rmtree(args.output)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        work.rename(args.output)
    finally:
        if work.exists():
            shutil.rmtree(work)
    progress.step(f"wrote {args.output} in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
