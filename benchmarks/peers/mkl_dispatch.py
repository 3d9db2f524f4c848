"""A diagnostic for x86 hosts whose CPU is not Intel's: how much of ExecuTorch's gap is oneMKL's
CPU dispatch, not ExecuTorch or our export.

ExecuTorch's Python wheel links libtorch, whose statically linked oneMKL serves the `sgemm_` that
ExecuTorch's `custom_sdpa` calls (attention's matrix products, prefill and decode). oneMKL picks its
code path from its own CPU probe, and on a non-Intel CPU takes the generic one: perf of a decode
after 512 cached tokens on an AMD EPYC shows `mkl_blas_def_xsgemv` and `mkl_blas_def_sgemm_kernel_*`
where an Intel CPU of the same instruction set runs `mkl_blas_avx2_*`. The stock runners of phones
link no MKL (ExecuTorch's own BLAS), so this is a property of the x86 wheel, not of the artifact.

A shim preloaded into the runner's process answers MKL's probe (`mkl_serv_cpu_detect`, an exported
symbol of libtorch_cpu, so the dynamic linker lets the preloaded definition win) with its AVX2 code,
and the same library then runs its AVX2 kernels. The row measured with it is labelled a diagnostic
and never counted for the targets, which are the stock runner's.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

# oneMKL's internal CPU codes (as MKL_DEBUG_CPU_TYPE once took them): 5 is its AVX2 path.
AVX2 = 5
SHIM_SOURCE = f"""/* mobilellm-export benchmark diagnostic: oneMKL's CPU probe answered with its AVX2 code. */
int mkl_serv_cpu_detect(void) {{ return {AVX2}; }}
"""


def _cpuinfo() -> tuple[str, set[str]]:
    vendor, flags = "", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return vendor, flags


def _libtorch_cpu() -> Path:
    import torch

    return Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"


def unavailable() -> str | None:
    """Why the diagnostic does not apply on this host (None: it does)."""
    if not Path("/proc/cpuinfo").is_file():
        return "no /proc/cpuinfo (not Linux)"
    vendor, flags = _cpuinfo()
    if vendor == "GenuineIntel":
        return "an Intel CPU: oneMKL already takes its optimized paths"
    if "avx2" not in flags or "fma" not in flags:
        return f"the CPU ({vendor or 'unknown vendor'}) lacks AVX2/FMA, which MKL's AVX2 path needs"
    library = _libtorch_cpu()
    if not library.is_file():
        return f"no {library.name} beside torch"
    try:
        if not hasattr(ctypes.CDLL(str(library)), "mkl_serv_cpu_detect"):
            return f"{library.name} exports no mkl_serv_cpu_detect (torch built without oneMKL)"
    except OSError as e:
        return f"cannot load {library.name}: {e}"
    if not (shutil.which("cc") or shutil.which("gcc")):
        return "no C compiler to build the shim"
    return None


def shim_environment(work: Path) -> dict[str, str]:
    """This process's environment with the shim (built in `work`) preloaded: a child's whole env."""
    return {**os.environ, "LD_PRELOAD": str(build_shim(work))}


def build_shim(work: Path) -> Path:
    """The shim as a shared library in `work` (rebuilt each run: a few milliseconds)."""
    work.mkdir(parents=True, exist_ok=True)
    source, library = work / "mkl_avx2_dispatch.c", work / "mkl_avx2_dispatch.so"
    source.write_text(SHIM_SOURCE)
    compiler = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(source)], check=True,
                   capture_output=True, text=True)
    return library
