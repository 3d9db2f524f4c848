"""The `adb` bench target: an Android phone or emulator that `adb` sees.

Pushes the artifact (model.pte, model.ptd, tokenizer) to /data/local/tmp/mobilellm/<name>, runs
ExecuTorch's LLM runner binary that the user built for Android (`--runner PATH`, e.g.
`llama_main` from ExecuTorch's examples/models/llama, built with the Android NDK as ExecuTorch
documents) and parses the runner's statistics line with the same parser that reads
`TextLLMRunner`'s output on the host. No device attached: one clear error.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

from mobilellm_export.errors import UnsupportedError

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


def bench_on_device(directory: Path, manifest: dict[str, Any], options: Any, log: Path) -> dict[str, Any]:
    if manifest["backend"] != "executorch":
        raise UnsupportedError(f"--target adb runs ExecuTorch artifacts; {directory} is {manifest['backend']}")
    if options.runner is None or not Path(options.runner).is_file():
        raise UnsupportedError("--target adb needs --runner PATH: ExecuTorch's LLM runner binary built for Android")
    section, settings = manifest["executorch"], manifest["runtime"]
    remote = f"{DEVICE_DIR}/{directory.name}"
    _adb("shell", "mkdir", "-p", remote)
    for name in (section["program"], section["data"], settings["tokenizer"]):
        _adb("push", str(directory / name), f"{remote}/{name}")
    _adb("push", str(options.runner), f"{remote}/runner")
    _adb("shell", "chmod", "755", f"{remote}/runner")
    per_length: dict[str, Any] = {}
    outputs = []
    for length in options.prompt_lengths:
        prompt = (PROMPT_WORD * max(length - 1, 1)).strip()  # about one token per word
        runs = []
        for _ in range(options.repeats + 1):
            cmd = (f"cd {remote} && ./runner --model_path {section['program']} --data_path {section['data']} "
                   f"--tokenizer_path {settings['tokenizer']} --prompt '{prompt}' --temperature 0 "
                   f"--seq_len {length + options.new_tokens} --cpu_threads {options.threads}")
            proc = _adb("shell", cmd, check=False)
            outputs.append(proc.stdout + proc.stderr)
            records = parse_stats(proc.stdout + proc.stderr)
            if proc.returncode != 0 or not records:
                log.write_text("\n".join(outputs))
                raise UnsupportedError(f"the runner on the device failed (exit {proc.returncode}); output in {log}")
            runs.append(records[-1])
        runs = runs[1:]  # the first run warms up
        per_length[str(length)] = {
            key: {"median": statistics.median(r[src] for r in runs), "min": min(r[src] for r in runs),
                  "max": max(r[src] for r in runs)}
            for key, src in (("ttft_s", "ttft_s"), ("prefill_tokens_per_s", "prefill_tokens_per_s"),
                             ("decode_tokens_per_s", "decode_tokens_per_s"))
        }
    log.write_text("\n".join(outputs))
    return {"runtime": "executorch llama runner (adb)", "load_s": runs[-1]["load_s"], "prompt_lengths": per_length,
            "note": "resident memory is not read on the device"}
