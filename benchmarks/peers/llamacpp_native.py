"""llama.cpp built natively, the way its users build it (`cmake -DGGML_NATIVE=ON`, `-march=native`),
from the source that the pinned llama-cpp-python release vendors, and run through its own tools:
`llama-bench` (speed), `llama-perplexity` (quality: perplexity and KL divergence against the F32
model, with its "same top p" agreement), `llama-quantize` (Q4_0 / Q8_0 from an F32 GGUF).

Why the build is keyed by the host's instruction set: a native build is only valid on a CPU with
the instructions it was compiled for. The earlier native llama.cpp of this project crashed in
`llama_decode` while a native `llama-bench` built on the same VM ran. It does not reproduce on a
Zen 3 (AVX2) VM, where the native library runs standalone and through the binding alike; the likely
cause is that the binding had been built by pip, which caches the wheels it builds keyed by the
source alone (not CMAKE_ARGS, not the CPU), so a wheel compiled with `-march=native` on one VM
(these sessions land on different ones: AVX-512/AMX on some, AVX2 only on others) is reinstalled
on the next. Here the build
folder's name carries a fingerprint of the ISA extensions `-march=native` enables on this host, a
build is reused only on a host with the same fingerprint, and a tool that dies of SIGILL is
reported as built for another CPU. (Two OpenMP runtimes in one process were ruled out: torch's
bundled libgomp and the system's share the SONAME libgomp.so.1, so the loader keeps one; the
native library ran through llama-cpp-python with torch loaded first and last.)

`--fallback-avx2` builds the portable AVX2/FMA/F16C variant instead (GGML_NATIVE=OFF): the
documented fallback for a compiler or CPU on which the native build fails; reports name it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The llama-cpp-python release of pyproject's `llamacpp` extra: its sdist vendors llama.cpp.
BINDING = "llama-cpp-python==0.3.36"
TOOLS = ("llama-bench", "llama-perplexity", "llama-quantize")
# Static libraries: the tools are self-contained files, kept after the build tree is gone.
COMMON = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
          "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF"]
NATIVE = ["-DGGML_NATIVE=ON"]
FALLBACK_AVX2 = ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
                 "-DGGML_AVX512=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]


class LlamaCppError(RuntimeError):
    """A llama.cpp tool that could not be built or run (its output's tail is in the message)."""


def native_isa() -> tuple[str, list[str]]:
    """The -march the compiler picks for this host and the ISA extensions -march=native enables."""
    out = subprocess.run(["gcc", "-march=native", "-Q", "--help=target"], capture_output=True, text=True,
                         check=True).stdout
    march = re.search(r"^\s*-march=\s*(\S+)", out, re.M)
    enabled = sorted(m.group(1) for m in re.finditer(r"^\s*-m([a-z0-9][a-z0-9.-]*)\s+\[enabled\]", out, re.M)
                     if not m.group(1).startswith(("arch", "tune", "abi", "cmodel")))
    return (march.group(1) if march else "unknown"), enabled


@dataclass(frozen=True)
class NativeTools:
    directory: Path
    variant: str  # "native (-march=znver3)" or "fallback AVX2"
    info: dict[str, Any]

    def tool(self, name: str) -> Path:
        return self.directory / "bin" / name


def ensure_build(work: Path, *, fallback_avx2: bool = False) -> NativeTools:
    """llama.cpp's tools built for this host in `work` (reused when the host's ISA fingerprint matches)."""
    march, enabled = native_isa()
    flags = FALLBACK_AVX2 if fallback_avx2 else NATIVE
    key = hashlib.sha256(json.dumps([BINDING, march, enabled, flags]).encode()).hexdigest()[:12]
    variant = "fallback AVX2" if fallback_avx2 else f"native (-march={march})"
    directory = work / f"llama.cpp-{key}"
    info_file = directory / "build-info.json"
    if info_file.is_file() and all((directory / "bin" / t).is_file() for t in TOOLS):
        return NativeTools(directory, variant, json.loads(info_file.read_text()))
    shutil.rmtree(directory, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        print(f"downloading the source of {BINDING} (it vendors llama.cpp)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        "-d", tmp, BINDING], check=True)
        (sdist,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
        (source,) = Path(tmp).glob("*/vendor/llama.cpp")
        build = Path(tmp) / "build"
        print(f"building llama.cpp {variant} (about ten minutes on 2 cores)", flush=True)
        start = time.perf_counter()
        for cmd in (["cmake", "-S", str(source), "-B", str(build), *COMMON, *flags],
                    ["cmake", "--build", str(build), "--target", *TOOLS, "-j", "2"]):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise LlamaCppError(f"building llama.cpp failed: {' '.join(cmd[:3])}: {_tail(proc)}")
        partial = directory.with_name(directory.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        (partial / "bin").mkdir(parents=True)
        for tool in TOOLS:
            shutil.copy2(build / "bin" / tool, partial / "bin" / tool)
        info = {"binding": BINDING, "variant": variant, "march": march, "isa": enabled, "cmake_flags": COMMON + flags,
                "build_s": time.perf_counter() - start}
        (partial / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
        partial.rename(directory)
    return NativeTools(directory, variant, info)


def _tail(proc: subprocess.CompletedProcess, lines: int = 3) -> str:
    return " | ".join((proc.stderr or proc.stdout or "no output").strip().splitlines()[-lines:])


def run_tool(tools: NativeTools, name: str, args: list[str]) -> str:
    proc = subprocess.run([str(tools.tool(name)), *args], capture_output=True, text=True)
    if proc.returncode == -signal.SIGILL:
        raise LlamaCppError(f"{name} died of an illegal instruction: the build in {tools.directory} was made for "
                            f"another CPU; delete it to rebuild for this one")
    if proc.returncode != 0:
        raise LlamaCppError(f"{name} failed (exit {proc.returncode}): {_tail(proc)}")
    return proc.stdout + proc.stderr


def quantize(tools: NativeTools, source: Path, target: Path, qtype: str, threads: int) -> Path:
    if not target.is_file():
        partial = target.with_name(target.name + ".partial")
        run_tool(tools, "llama-quantize", [str(source), str(partial), qtype, str(threads)])
        partial.rename(target)
    return target


def bench(tools: NativeTools, model: Path, *, threads: int, prompt_lengths: tuple[int, ...], new_tokens: int,
          depths: tuple[int, ...], repeats: int) -> dict[str, Any]:
    """llama-bench's own figures: tokens/s of prompt processing per length (from an empty cache), and
    of generating `new_tokens` after each of `depths` tokens already in the cache (its `-d`), so that
    decode is timed at the positions ours is: after a prompt of that length."""
    common = ["-m", str(model), "-t", str(threads), "-r", str(repeats), "-o", "json"]
    prefill = _bench_tests(run_tool(tools, "llama-bench", [*common, "-p", ",".join(map(str, prompt_lengths)), "-n", "0"]))
    decode = _bench_tests(run_tool(tools, "llama-bench", [*common, "-p", "0", "-n", str(new_tokens),
                                                          "-d", ",".join(map(str, depths))]))
    figures: dict[str, Any] = {"prefill_tokens_per_s": {}, "decode_tokens_per_s": {},
                               "model_bytes": prefill[0]["model_size"], "build_commit": prefill[0].get("build_commit")}
    for t in prefill:
        figures["prefill_tokens_per_s"][str(t["n_prompt"])] = {"mean": t["avg_ts"], "samples": t["samples_ts"]}
    for t in decode:
        figures["decode_tokens_per_s"][str(t.get("n_depth", 0))] = {"mean": t["avg_ts"], "samples": t["samples_ts"]}
    return figures


def _bench_tests(out: str) -> list[dict[str, Any]]:
    """llama-bench's JSON list (it prints after log lines on the same streams)."""
    return json.loads(out[out.index("["):out.rindex("]") + 1])


STAT = {"ppl_ratio": r"Mean PPL\(Q\)/PPL\(base\)\s*:\s*([\d.]+)", "ppl": r"Mean PPL\(Q\)\s*:\s*([\d.]+)",
        "ppl_base": r"Mean PPL\(base\)\s*:\s*([\d.]+)", "mean_kld": r"Mean\s+KLD:\s*([\d.]+)",
        "same_top_p": r"Same top p:\s*([\d.]+)"}


def perplexity(tools: NativeTools, base: Path, models: dict[str, Path], text: Path, *, context: int, chunks: int,
               threads: int, work: Path) -> dict[str, dict[str, float]]:
    """llama-perplexity on `text`: the base (F32) model's logits saved once, then every model's
    perplexity ratio, mean KL divergence and same-top-token rate against them."""
    logits = work / f"{base.stem}-c{context}-{chunks}.kld"
    common = ["-c", str(context), "--chunks", str(chunks), "-t", str(threads)]
    if not logits.is_file():
        run_tool(tools, "llama-perplexity", ["-m", str(base), "-f", str(text), *common, "--kl-divergence-base",
                                             str(logits)])
    found = {}
    for name, model in models.items():
        out = run_tool(tools, "llama-perplexity", ["-m", str(model), *common, "--kl-divergence-base", str(logits),
                                                   "--kl-divergence"])
        stats = {key: float(m.group(1)) for key, pattern in STAT.items() if (m := re.search(pattern, out))}
        if "same_top_p" in stats:
            stats["same_top_p"] /= 100
        found[name] = stats
    return found
