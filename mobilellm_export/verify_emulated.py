"""`mobilellm-export verify ARTIFACT --target qemu-aarch64`: the artifact's greedy generation and
per-step logits on an emulated ARM64 CPU (the kernels phones run) against the same driver on this
host. The largest logit difference and the smallest top-1 margin of the host run are reported next
to the verdict (a difference larger than a margin can flip that token).

Float artifacts pass only when every greedy token matches. Quantized artifacts quantize their
activations per token at run time, so one activation rounding the other way on another CPU moves
logits by a few tenths: they pass when every token matches, or when the runs part at a near-tie,
a step whose host top-1 margin is below the logit difference the two CPUs already showed on earlier
steps fed the same tokens (measured, not assumed; a program computing something else parts with a
margin far above that, or shows no such difference first)."""

from __future__ import annotations

from pathlib import Path

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.progress import Progress
from mobilellm_export.runtimes.emulated.qemu import TARGET, Emulator, compare_on_arm64, describe
from mobilellm_export.runtimes.manifest import read_manifest, require_intact
from mobilellm_export.runtimes.registry import adapter_for, artifact_tokenizer
from mobilellm_export.runtimes.timing import synthetic_prompt

from .verify import PROMPTS, Report

STEPS = 16


def verify_emulated(directory: Path, *, sysroot: Path | None = None, progress: Progress | None = None) -> Report:
    progress = progress or Progress(quiet=True)
    directory = Path(directory)
    manifest = read_manifest(directory)
    if TARGET not in adapter_for(manifest).emulated_targets:
        raise UnsupportedError(f"--target {TARGET} runs ExecuTorch artifacts; {directory} is {manifest.backend}")
    require_intact(manifest, "run it")
    emulator = Emulator.find(sysroot)
    tokenizer = artifact_tokenizer(manifest)
    if tokenizer is not None:
        prompts = [tokenizer.encode(p) for p in PROMPTS]
    else:
        prompts = [synthetic_prompt(n, vocab_size=manifest.runtime.vocab_size, bos_id=manifest.runtime.bos_id)
                   for n in (6, 13, 24)]
    progress.step(f"running {directory} on this host and on {describe()} (about a minute)")
    result = compare_on_arm64(directory, prompts, STEPS, emulator)
    report = Report(directory)
    report.add("arm64 machine", result.emulated_machine == "aarch64",
               f"{describe()}: platform.machine() {result.emulated_machine}, {result.emulated_seconds:.0f} s")
    quantized = manifest.narrowest_bits < 16
    near_tie = result.first_difference is not None and result.margin_at_difference <= result.difference_before
    if result.first_difference is None:
        where = ""
    else:
        prompt, step = result.first_difference
        where = (f"; prompt {prompt + 1} parts at step {step}, where this host's top-1 margin is "
                 f"{result.margin_at_difference:.3g} and earlier steps already differed by up to "
                 f"{result.difference_before:.3g}" + (" (a near-tie)" if near_tie else ""))
    report.add("arm64 greedy", result.tokens_equal or (quantized and near_tie),
               f"{result.prompts} prompts x {result.steps + 1} tokens {'equal to' if result.tokens_equal else 'differ from'} "
               f"this host's{where}")
    report.add("arm64 logits", None, f"max |difference| {result.max_logit_diff:.3g}; smallest top-1 margin on this "
               f"host {result.min_margin:.3g}")
    report.figures.update(max_logit_diff=result.max_logit_diff, min_margin=result.min_margin,
                          tokens_equal=result.tokens_equal, near_tie=near_tie)
    return report
