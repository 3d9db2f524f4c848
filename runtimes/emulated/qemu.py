"""The host side of the emulated ARM64 target: find the emulator and its sysroot, run the driver
there and natively, and compare.

The sysroot (`make arm64-env`, runtimes/emulated/arm64_setup.sh) is an arm64 Debian with Python
3.11 and PyPI's aarch64 torch and executorch wheels, a Cortex-A76 /proc/cpuinfo and MIDR sysfs
files (pytorch's cpuinfo aborts on the host's x86 ones; qemu-user's -L makes the guest open
SYSROOT/<path> where that file exists). The CPU model is cortex-a76 (NEON + dot product, what
most phones of the last years have): qemu 7.2's plain `max` turns on SME, whose emulation computed
wrong int8 results (logits off by up to 29), and cortex-a53 lacks the LSE atomics the wheels use.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobilellm_export.errors import UnsupportedError

QEMU = "qemu-aarch64-static"
CPU = "cortex-a76"
TARGET = "qemu-aarch64"
DRIVER = Path(__file__).with_name("greedy_driver.py")
SETUP = Path(__file__).with_name("arm64_setup.sh")
SYSROOT_ENV = "MOBILELLM_ARM64_SYSROOT"


def default_sysroot() -> Path:
    return Path(os.environ.get(SYSROOT_ENV) or Path.home() / ".cache" / "mobilellm-export" / "arm64-sysroot")


def describe() -> str:
    return f"emulated ARM64 (qemu-user, -cpu {CPU})"


@dataclass(frozen=True)
class Emulator:
    sysroot: Path

    @classmethod
    def find(cls, sysroot: Path | None = None) -> Emulator:
        """The emulator with its sysroot, or one clear error saying how to make them."""
        root = Path(sysroot or default_sysroot())
        if shutil.which(QEMU) is None:
            raise UnsupportedError(f"--target {TARGET} needs {QEMU} and an arm64 sysroot: run `make arm64-env` "
                                   f"(Debian's qemu-user-static, about 500 MB from Debian and PyPI)")
        python = root / "usr" / "bin" / "python3.11"
        if not python.is_file() or not (root / "site" / "executorch").is_dir():
            raise UnsupportedError(f"no arm64 sysroot at {root} (set {SYSROOT_ENV} or run `make arm64-env`)")
        return cls(root)

    def command(self) -> list[str]:
        # The guest inherits the host's environment: drop what would point its loader or
        # interpreter at host files.
        return [QEMU, "-L", str(self.sysroot), "-cpu", CPU, "-U", "LD_PRELOAD", "-U", "LD_LIBRARY_PATH",
                "-U", "PYTHONHOME", "-U", "PYTHONSTARTUP", "-E", f"PYTHONPATH={self.sysroot / 'site'}",
                "-E", "PYTHONWARNINGS=ignore", "-E", "PYTHONDONTWRITEBYTECODE=1",
                str(self.sysroot / "usr" / "bin" / "python3.11")]


def run_driver(artifact: Path, request: dict[str, Any], emulator: Emulator | None) -> tuple[dict[str, Any], list[Any]]:
    """The driver's result and per-prompt logits, under the emulator or (None) natively."""
    import torch

    python = emulator.command() if emulator else [sys.executable]
    with tempfile.TemporaryDirectory() as tmp:
        request_file = Path(tmp) / "request.json"
        request_file.write_text(json.dumps(request))
        proc = subprocess.run([*python, str(DRIVER), str(artifact.resolve()), str(request_file), tmp],
                              capture_output=True, text=True)
        result_file = Path(tmp) / "result.json"
        if proc.returncode != 0 or not result_file.is_file():
            where = describe() if emulator else "the host"
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UnsupportedError(f"running {artifact} on {where} failed (exit {proc.returncode}): {tail}")
        result = json.loads(result_file.read_text())
        logits = [torch.load(Path(tmp) / f"logits-{i}.pt", weights_only=True) for i in range(len(result.get("tokens", [])))]
    return result, logits


@dataclass(frozen=True)
class Comparison:
    prompts: int
    steps: int
    tokens_equal: bool
    first_difference: tuple[int, int] | None  # (prompt, step) where the greedy tokens part
    # At that step: the host's top-1 margin, and the largest logit difference of the earlier steps
    # (same tokens fed): a margin below it is a near-tie under the kernels' measured disagreement.
    margin_at_difference: float | None
    difference_before: float | None
    max_logit_diff: float  # over the steps both runs saw the same tokens
    min_margin: float  # smallest x86 top-1 minus top-2 logit gap: a flip needs a difference this big
    emulated_machine: str
    emulated_seconds: float


def compare_on_arm64(artifact: Path, prompts: list[list[int]], steps: int, emulator: Emulator) -> Comparison:
    request = {"prompts": prompts, "steps": steps}
    host, host_logits = run_driver(artifact, request, None)
    arm, arm_logits = run_driver(artifact, request, emulator)
    return compare_runs(host, host_logits, arm, arm_logits, steps)


def compare_runs(host: dict[str, Any], host_logits: list[Any], arm: dict[str, Any], arm_logits: list[Any],
                 steps: int) -> Comparison:
    """Greedy tokens and per-step logits [steps + 1, vocab] of the same prompts on two CPUs."""
    first, diff, margin, at, before = None, 0.0, float("inf"), None, None
    for i, (a, b) in enumerate(zip(host["tokens"], arm["tokens"])):
        same = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        # Up to and including the first differing step both runs were fed the same tokens.
        upto = min(same + 1, len(a))
        per_step = (host_logits[i][:upto] - arm_logits[i][:upto]).abs().amax(dim=-1)
        diff = max(diff, float(per_step.max()))
        top2 = host_logits[i].topk(2, dim=-1).values
        margins = top2[:, 0] - top2[:, 1]
        margin = min(margin, float(margins.min()))
        if same < len(a) and first is None:
            first, at = (i, same), float(margins[same])
            before = float(per_step[:same].max()) if same else 0.0
    return Comparison(prompts=len(host["tokens"]), steps=steps, tokens_equal=first is None, first_difference=first,
                      margin_at_difference=at, difference_before=before,
                      max_logit_diff=diff, min_margin=margin, emulated_machine=arm["machine"],
                      emulated_seconds=arm.get("startup_s", 0.0) + arm.get("run_s", 0.0))


def emulated_speed(artifact: Path, prompt_length: int, new_tokens: int, repeats: int,
                   emulator: Emulator) -> dict[str, Any]:
    result, _ = run_driver(artifact, {"timing": {"prompt_length": prompt_length, "new_tokens": new_tokens,
                                                 "repeats": repeats}}, emulator)
    return {**result["timing"], "machine": result["machine"], "threads": result["threads"]}
