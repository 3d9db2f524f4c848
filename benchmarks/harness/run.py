"""`mobilellm-export bench`: latency, memory and quality of artifacts, whatever backend wrote them.

Every artifact is measured in child processes of its own (child.py on the host;
ExecuTorch's runner binary on an adb device), so figures never mix: one process for speed and
memory, another for quality. Speed is measured where phones and users measure it: through the
backend's stock runner when it has one (ExecuTorch's C++ LLM runner, onnxruntime-genai), with this
package's Python adapter as a second figure (`adapter_speed`); backends without a stock runner
this package drives (Core AI) are measured through the adapter only. `--target qemu-aarch64` runs
ExecuTorch artifacts on an emulated ARM64 CPU (an emulator's speed, labelled so). The run also
measures the machine's memory read bandwidth with a short probe (threads summing a buffer far
larger than the caches) and sets each artifact's decode speed against it: bytes read per decoded
token (weights + the KV cache read at the mean position) x tokens/s, as a fraction of what the
memory system read in the probe.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobilellm_export.errors import MobileLLMError, UnsupportedError
from mobilellm_export.model.config import MobileLLMConfig
from mobilellm_export.runtimes.manifest import Manifest, read_manifest, require_intact
from mobilellm_export.runtimes.registry import adapter_for
from mobilellm_export.runtimes.timing import alternating_rounds
from mobilellm_export.versions import library_versions

from .. import results as result_files
from .child import RESULT

KIND = "bench"


@dataclass(frozen=True)
class BenchOptions:
    target: str = "host"  # host | adb | qemu-aarch64
    threads: int = 2
    prompt_lengths: tuple[int, ...] = (32, 128)
    new_tokens: int = 64
    repeats: int = 5
    quality: bool = True
    eval_tokens: int = 1024
    runner: Path | None = None  # adb: ExecuTorch's llama runner binary built for Android
    check_files: bool = True  # sizes and sha256 against the manifest before measuring
    sysroot: Path | None = None  # qemu-aarch64: the arm64 sysroot (runtimes/emulated)


class BenchError(MobileLLMError):
    """A measurement that could not be taken (the child's error is in the message)."""


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "versions": library_versions()}


def threaded_sum(buffer: Any, threads: int) -> float:
    """The sum of `buffer`, each of `threads` threads reducing its own contiguous share (numpy's
    reductions release the GIL, so the shares are read in parallel); every byte is read once."""
    import threading

    import numpy as np

    parts = np.array_split(buffer, threads)
    sums = [0.0] * threads

    def work(i: int) -> None:
        sums[i] = float(parts[i].sum())

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(sums)


def bandwidth_probe(threads: int = 2, megabytes: int = 512, repeats: int = 5) -> dict[str, Any]:
    """The memory bandwidth decode is bounded by: *reads*. `threads` threads sum a buffer far
    larger than the caches, best of `repeats` rounds; bytes/s = the buffer's size over the time.
    A copy (read + write, as the earlier probe timed it) is kept for reference."""
    import numpy as np

    src = np.ones(megabytes * (1 << 20) // 8, dtype=np.float64)
    dst = np.ones_like(src)  # written once, so the timed copies do not count page faults

    def read() -> float:
        start = time.perf_counter()
        threaded_sum(src, threads)
        return time.perf_counter() - start

    def copy() -> float:
        start = time.perf_counter()
        np.copyto(dst, src)
        return time.perf_counter() - start

    best = {name: min(times) for name, times in alternating_rounds({"read": read, "copy": copy}, repeats).items()}
    return {"bytes_per_s": src.nbytes / best["read"], "probe_bytes": src.nbytes,
            "method": f"numpy sum over {megabytes} MB in {threads} threads, best of {repeats}",
            "copy_bytes_per_s": 2 * src.nbytes / best["copy"]}


def read_results(path: Path) -> dict[str, Any]:
    """An earlier `bench --json` file (for --results and --compare)."""
    return result_files.read(path, KIND)


def kv_bytes_per_token(manifest: Manifest, position: float) -> float:
    """Bytes of KV cache one decode step reads at `position` (keys and values of every executed
    block up to that position, at the runtime's cache precision)."""
    config = MobileLLMConfig.from_dict(manifest.model.config)
    return 2 * config.n_executed_layers * config.kv_dim * manifest.runtime.kv_cache_bytes_per_value * position


def run_child(args: list[str], log: Path, *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """One child run (`env`: its whole environment; None: this process's)."""
    proc = subprocess.run([sys.executable, "-m", "mobilellm_export.benchmarks.harness.child", *args],
                          capture_output=True, text=True, env=env)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr)
    lines = [line[line.find(RESULT) + len(RESULT):] for line in proc.stdout.splitlines() if RESULT in line]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"measuring {args[0]} failed: {tail} (log: {log})")
    return json.loads(lines[-1])


def bench_artifact(directory: Path, options: BenchOptions, logs: Path, bandwidth: float) -> dict[str, Any]:
    manifest = read_manifest(directory)
    entry: dict[str, Any] = {
        "artifact": str(directory), "backend": manifest.backend, "scheme": manifest.quantization["name"],
        "quantization": manifest.quantization, "model": manifest.model.label,
        "synthetic_weights": manifest.model.synthetic, "size_bytes": manifest.total_bytes,
    }
    adapter = adapter_for(manifest)
    unavailable = adapter.unavailable()
    if unavailable:
        entry["skipped"] = unavailable
        return entry
    name = directory.name
    if options.target == "adb":
        from .adb import bench_on_device

        entry["speed"] = bench_on_device(directory, manifest, options, logs / f"{name}-adb.log")
    elif options.target == "qemu-aarch64":
        entry["speed"] = bench_emulated(directory, manifest, options)
    else:
        speed_args = [str(directory), "--threads", str(options.threads),
                      "--prompt-lengths", ",".join(map(str, options.prompt_lengths)),
                      "--new-tokens", str(options.new_tokens), "--repeats", str(options.repeats)]
        adapter_speed = run_child(speed_args, logs / f"{name}-speed.log")
        if adapter.stock_runner is None:
            entry["speed"] = adapter_speed
        elif manifest.runtime.tokenizer is None:
            entry["speed"] = adapter_speed
            entry["stock_skipped"] = f"{adapter.stock_runner} takes text and the artifact has no tokenizer"
        else:
            entry["speed"] = run_child([*speed_args, "--stock"], logs / f"{name}-stock.log")
            entry["adapter_speed"] = adapter_speed
    if options.target == "qemu-aarch64":
        entry["quality"] = {"note": "emulated target: quality is verify --target qemu-aarch64's (tokens and logits "
                                    "against this host)"}
    elif options.quality and manifest.model.synthetic:
        entry["quality"] = {"note": "synthetic weights: perplexity and agreement are not meaningful and were not measured"}
    elif options.quality:
        entry["quality"] = run_child([str(directory), "--quality", "--eval-tokens", str(options.eval_tokens)],
                                     logs / f"{name}-quality.log")
    # The probe reads this host's memory: it bounds nothing on a phone or on an emulated CPU.
    entry["physical_limit"] = physical_limit(manifest, entry["speed"], options, bandwidth) \
        if options.target == "host" else None
    return entry


def bench_emulated(directory: Path, manifest: Manifest, options: BenchOptions) -> dict[str, Any]:
    """Speed on the emulated ARM64 CPU: an emulator's figure, labelled so, never a device's."""
    from mobilellm_export.runtimes.emulated.qemu import Emulator, describe, emulated_speed
    from mobilellm_export.runtimes.timing import summary

    emulator = Emulator.find(options.sysroot)
    per_length = {}
    for length in options.prompt_lengths:
        got = emulated_speed(directory, length, options.new_tokens, options.repeats, emulator)
        per_length[str(length)] = {key: summary(got[key]) for key in ("prefill_tokens_per_s", "decode_tokens_per_s")}
    return {"runtime": f"executorch, {describe()}: an emulator's speed, not a device figure", "emulated": True,
            "prompt_lengths": per_length}


def physical_limit(manifest: Manifest, speed: dict[str, Any], options: BenchOptions,
                   bandwidth: float) -> dict[str, Any] | None:
    """Achieved bytes/s of the decode at the first prompt length against the probe's bandwidth."""
    length = str(options.prompt_lengths[0])
    figures = speed.get("prompt_lengths", {}).get(length, {})
    if "decode_tokens_per_s" not in figures:
        return None
    mean_position = int(length) + options.new_tokens / 2
    # The stored weights (each shared matrix once) are read once per token.
    per_token = manifest.expected_weight_bytes + kv_bytes_per_token(manifest, mean_position)
    achieved = per_token * figures["decode_tokens_per_s"]["median"]
    return {"bytes_per_token": per_token, "achieved_bytes_per_s": achieved, "bandwidth_bytes_per_s": bandwidth,
            "fraction": achieved / bandwidth, "prompt_length": int(length)}


def run_bench(directories: list[Path], options: BenchOptions, logs: Path, progress: Any = None) -> dict[str, Any]:
    if options.target not in ("host", "adb", "qemu-aarch64"):
        raise UnsupportedError(f"unknown --target {options.target!r}; choose host, adb or qemu-aarch64")
    if options.target == "adb":
        from .adb import require_device

        require_device()  # one clear error before any work when no device is attached
    for directory in directories:  # every argument a whole artifact that can take the lengths, or one error now
        manifest = read_manifest(directory)
        if options.check_files:
            require_intact(manifest, "measure it")
        if options.target == "qemu-aarch64" and options.target not in adapter_for(manifest).emulated_targets:
            raise UnsupportedError(f"--target {options.target} runs ExecuTorch artifacts; {directory} is "
                                   f"{manifest.backend}")
        too_long = [n for n in options.prompt_lengths if n + options.new_tokens > manifest.runtime.max_context]
        if too_long:
            raise UnsupportedError(f"prompt length {too_long[0]} + {options.new_tokens} new tokens exceed the context "
                                   f"{manifest.runtime.max_context} of {directory}")
    say = progress.step if progress is not None else (lambda message: None)
    say("measuring memory read bandwidth (threaded sum probe)")
    bandwidth = bandwidth_probe(options.threads)
    results = []
    for directory in directories:
        say(f"measuring {directory} ({options.target})")
        results.append(bench_artifact(Path(directory), options, logs, bandwidth["bytes_per_s"]))
    return {**result_files.header(KIND), "target": options.target, "machine": machine(), "bandwidth": bandwidth,
            "settings": {"threads": options.threads, "prompt_lengths": list(options.prompt_lengths),
                         "new_tokens": options.new_tokens, "repeats": options.repeats, "warmup_runs": 1,
                         "statistic": "median (min/max kept)", "eval_tokens": options.eval_tokens},
            "artifacts": results}
