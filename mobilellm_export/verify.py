"""`mobilellm-export verify`: an artifact against the eager PyTorch model it came from.

Checks, in order: every file's sha256 against the manifest; what the backend stored (the shared
matrix once, stored bytes = unique parameters x bits + scales); structure checks a backend adds
(Core ML, whose packages run only on macOS); the runtime's metadata; greedy generation against
the reference; and, on the embedded model's held-out text (random tokens for synthetic weights),
top-1 next-token agreement and perplexity. Thresholds depend on the narrowest weight format in
the artifact.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mobilellm_export.errors import MobileLLMError
from mobilellm_export.export.contract import StorageReport
from mobilellm_export.export.registry import get_backend
from mobilellm_export.model.heldout import heldout_windows
from mobilellm_export.model.reference import EagerRuntime
from mobilellm_export.model.sources import EMBEDDED, load_model
from mobilellm_export.progress import Progress
from mobilellm_export.runtimes.generate import generate
from mobilellm_export.runtimes.manifest import Manifest, checksum_problems, read_manifest
from mobilellm_export.runtimes.registry import adapter_for, open_artifact
from mobilellm_export.runtimes.scoring import agreement, score

PROMPTS = ("Return the number of", "The default value is", "This module provides")


@dataclass(frozen=True)
class Tolerance:
    min_agreement: float
    max_ppl_increase: float  # relative
    greedy_equal: bool


# Keyed by the narrowest weight width in the artifact. The quantized bounds come from real weights
# (SmolLM2-135M, `make bench` quality report, README "Quantization"), where the gaps are widest:
# - 8 bits: calibrated int8 loses about +0.5% perplexity (weights-level checks; llama.cpp's Q8_0 of
#   the same weights +0.3%); round to nearest with XNNPACK's per-token int8 activations +2.1%. The
#   bound (+1.5%, 90% agreement) passes the default and fails an uncalibrated or mis-scaled int8.
# - 4 bits: the calibrated default loses +7.7% (ONNX) to +9.3% (ExecuTorch) at 82-86% agreement;
#   round to nearest +29% at 71%, llama.cpp's own Q4_0 +21% at 74%. The bound (+15%, 80%) passes
#   the default with a margin and fails plain rounding. On the embedded model every quantized
#   artifact is far inside both bounds (int4 +0.4%).
TOLERANCES = {
    32: Tolerance(min_agreement=0.99, max_ppl_increase=0.005, greedy_equal=True),
    16: Tolerance(min_agreement=0.97, max_ppl_increase=0.01, greedy_equal=False),
    8: Tolerance(min_agreement=0.90, max_ppl_increase=0.015, greedy_equal=False),
    4: Tolerance(min_agreement=0.80, max_ppl_increase=0.15, greedy_equal=False),
}


class VerificationFailed(MobileLLMError):
    exit_code = 1


@dataclass
class Check:
    name: str
    passed: bool | None  # None: a figure reported without a threshold
    detail: str


@dataclass
class Report:
    directory: Path
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed is not False for c in self.checks)

    def add(self, name: str, passed: bool | None, detail: str) -> None:
        self.checks.append(Check(name, passed, detail))


def verify_artifact(directory: Path, *, model: str | None = None, eval_tokens: int = 4096,
                    progress: Progress | None = None) -> Report:
    progress = progress or Progress(quiet=True)
    directory = Path(directory)
    report = Report(directory)
    manifest = read_manifest(directory)
    problems = checksum_problems(manifest)
    report.add("checksums", not problems, "; ".join(problems) or f"{len(manifest.files)} files match the manifest")
    if problems:
        return report

    backend = get_backend(manifest.backend)
    backend.require()
    _check_storage(report, backend.inspect_storage(manifest), manifest)

    settings = manifest.runtime
    source = model if model is not None else manifest.model.source
    progress.step(f"loading the reference ({source})")
    reference = load_model(None if source == EMBEDDED else source, max_context=settings.max_context)
    same_model = reference.config.to_dict() == manifest.model.config
    report.add("reference", same_model, f"{source}" + ("" if same_model else
               " has another architecture than the one this artifact was exported from"))
    if not same_model:
        return report
    # Backends whose artifacts cannot always run here (Core ML off macOS) check their structure
    # against the reference instead: interface, states, and the stored weights themselves.
    for check in backend.check_structure(manifest, reference.model):
        report.add(check.name, check.passed, check.detail)
    unavailable = adapter_for(manifest).unavailable()
    if unavailable:
        report.add("execution", None, f"skipped: {unavailable}")
        return report

    progress.step(f"opening {directory} ({manifest.backend})")
    artifact = open_artifact(directory, check_files=False)  # checked above, as part of the report
    runtime = artifact.runtime
    same = runtime.max_context == settings.max_context and runtime.vocab_size == settings.vocab_size
    report.add("metadata", same, f"context {runtime.max_context}, vocabulary {runtime.vocab_size}")
    ref_runtime = EagerRuntime(reference.model)
    tolerance = TOLERANCES[manifest.narrowest_bits]

    tokenizer = artifact.tokenizer
    prompts = [tokenizer.encode(p) for p in PROMPTS] if tokenizer else _random_prompts(reference.config.vocab_size)
    progress.step("greedy generation against the reference")
    equal = 0
    for ids in prompts:
        ours = generate(runtime, ids, max_new_tokens=32, eos_ids=settings.eos_ids).new_ids
        theirs = generate(ref_runtime, ids, max_new_tokens=32, eos_ids=settings.eos_ids).new_ids
        equal += ours == theirs
    report.add("greedy tokens", (equal == len(prompts)) if tolerance.greedy_equal else None,
               f"{equal}/{len(prompts)} prompts give the reference's 32 greedy tokens")

    window = min(256, settings.max_context)
    if tokenizer is not None and not manifest.model.synthetic:
        windows = heldout_windows(tokenizer, window=window, max_tokens=eval_tokens)
        text = "held-out text"
    else:
        rng = random.Random(0)
        n = max(eval_tokens // window, 1)
        windows = [[rng.randrange(reference.config.vocab_size) for _ in range(window)] for _ in range(n)]
        text = "random tokens (synthetic weights: perplexity is not meaningful)"
    progress.step(f"scoring {sum(len(w) - 1 for w in windows)} positions of {text}")
    ours, theirs = score(runtime, windows), score(ref_runtime, windows)
    agree = agreement(ours, theirs)
    report.figures.update(agreement=agree, positions=len(ours.nll), text=text)
    if manifest.model.synthetic and manifest.narrowest_bits < 16:
        # The quantized bounds come from trained weights. Random weights give near-uniform logits
        # whose top-1 a 4-bit rounding reorders by chance (synthetic R1-140M int4: 40%), so here
        # the figure is reported, not judged; float artifacts of random weights are still held
        # to their bounds, which is what checks the arithmetic.
        report.add("top-1 agreement", None, f"{agree:.2%} of {len(ours.nll)} positions (random weights: the "
                   f">= {tolerance.min_agreement:.0%} bound is for trained weights)")
    else:
        report.add("top-1 agreement", agree >= tolerance.min_agreement,
                   f"{agree:.2%} of {len(ours.nll)} positions (needs >= {tolerance.min_agreement:.0%})")
    if text == "held-out text":
        increase = ours.perplexity / theirs.perplexity - 1
        report.figures.update(perplexity=ours.perplexity, reference_perplexity=theirs.perplexity,
                              perplexity_increase=increase)
        report.add("perplexity", increase <= tolerance.max_ppl_increase,
                   f"{ours.perplexity:.3f} vs reference {theirs.perplexity:.3f} ({increase:+.2%}, "
                   f"allowed {tolerance.max_ppl_increase:+.1%})")
    return report


def _check_storage(report: Report, storage: StorageReport, manifest: Manifest) -> None:
    report.add("embedding once", storage.shared_matrix_once,
               "the lookup and the output projection read the same stored bytes ("
               + ", ".join(f"{k} also read by {', '.join(v) or 'nothing'}" for k, v in storage.shared_matrix_readers.items())
               + ")")
    expected = manifest.expected_weight_bytes + storage.non_weight_bytes
    ratio = storage.stored_bytes / expected
    report.figures.update(stored_bytes=storage.stored_bytes, expected_bytes=expected)
    report.add("stored bytes", abs(ratio - 1) <= 0.03,
               f"{storage.stored_bytes:,} stored vs {expected:,} from unique parameters x bits + scales "
               f"(+ RoPE tables), ratio {ratio:.4f}")


def _random_prompts(vocab_size: int) -> list[list[int]]:
    rng = random.Random(1)
    return [[rng.randrange(vocab_size) for _ in range(8)] for _ in range(3)]


def format_report(report: Report) -> str:
    marks = {True: "ok  ", False: "FAIL", None: "info"}
    lines = [f"verify {report.directory}"]
    lines += [f"  {marks[c.passed]}  {c.name:<16} {c.detail}" for c in report.checks]
    lines.append("  result: " + ("passed" if report.passed else "FAILED"))
    return "\n".join(lines)
