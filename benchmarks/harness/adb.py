"""The `adb` bench target: an Android phone or emulator that `adb` sees.

Pushes the artifact (model.pte, model.ptd, tokenizer) to /data/local/tmp/mobilellm/<name>, runs
ExecuTorch's LLM runner binary that the user built for Android (`--runner PATH`, e.g.
`llama_main` from ExecuTorch's examples/models/llama, built with the Android NDK as ExecuTorch
documents) and parses the runner's statistics line with the same parser that reads
`TextLLMRunner`'s output on the host. No device attached: one clear error.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.runtimes.manifest import Manifest
from mobilellm_export.runtimes.registry import ADAPTERS, adapter_for
from mobilellm_export.runtimes.timing import alternating_rounds, summary

from .runner_stats import parse_stats

DEVICE_DIR = "/data/local/tmp/mobilellm"
PROMPT_WORD = "the "


def _adb(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["adb", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise UnsupportedError(f"adb {' '.join(args[:2])} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def require_device() -> str:
    """The serial of the one device adb sees, or a clear error."""
    if shutil.which("adb") is None:
        raise UnsupportedError("--target adb needs adb on PATH (Android SDK platform-tools) and a device or emulator")
    lines = _adb("devices").stdout.splitlines()[1:]
    devices = [line.split("\t")[0] for line in lines if line.strip().endswith("\tdevice")]
    if not devices:
        raise UnsupportedError("no Android device or emulator is visible to adb (`adb devices` lists none)")
    if len(devices) > 1:
        raise UnsupportedError(f"adb sees {len(devices)} devices ({', '.join(devices)}); set ANDROID_SERIAL to one")
    return devices[0]


def bench_on_device(directory: Path, manifest: Manifest, options: Any, log: Path) -> dict[str, Any]:
    if not adapter_for(manifest).device_runner:
        runs = [a.backend for a in ADAPTERS.values() if a.device_runner]
        raise UnsupportedError(f"--target adb runs {' or '.join(runs)} artifacts; {directory} is {manifest.backend}")
    if options.runner is None or not Path(options.runner).is_file():
        raise UnsupportedError("--target adb needs --runner PATH: ExecuTorch's LLM runner binary built for Android")
    program, data, tokenizer = manifest.roles["program"], manifest.roles["data"], manifest.runtime.tokenizer
    if tokenizer is None:
        raise UnsupportedError(f"--target adb needs a tokenizer in the artifact; {directory} has none")
    remote = f"{DEVICE_DIR}/{directory.name}"
    _adb("shell", "mkdir", "-p", remote)
    for name in (program, data, tokenizer):
        _adb("push", str(directory / name), f"{remote}/{name}")
    _adb("push", str(options.runner), f"{remote}/runner")
    _adb("shell", "chmod", "755", f"{remote}/runner")
    per_length: dict[str, Any] = {}
    outputs: list[str] = []
    for length in options.prompt_lengths:
        prompt = (PROMPT_WORD * max(length - 1, 1)).strip()  # about one token per word
        cmd = (f"cd {remote} && ./runner --model_path {program} --data_path {data} "
               f"--tokenizer_path {tokenizer} --prompt '{prompt}' --temperature 0 "
               f"--seq_len {length + options.new_tokens} --cpu_threads {options.threads}")

        def run_once(cmd: str = cmd) -> dict[str, Any]:
            proc = _adb("shell", cmd, check=False)
            outputs.append(proc.stdout + proc.stderr)
            records = parse_stats(proc.stdout + proc.stderr)
            if proc.returncode != 0 or not records:
                log.write_text("\n".join(outputs))
                raise UnsupportedError(f"the runner on the device failed (exit {proc.returncode}); output in {log}")
            return records[-1]

        runs = alternating_rounds({"runner": run_once}, options.repeats)["runner"]
        per_length[str(length)] = {key: summary([r[key] for r in runs])
                                   for key in ("ttft_s", "prefill_tokens_per_s", "decode_tokens_per_s")}
    log.write_text("\n".join(outputs))
    return {"runtime": "executorch llama runner (adb)", "load_s": runs[-1]["load_s"], "prompt_lengths": per_length,
            "note": "resident memory is not read on the device"}
