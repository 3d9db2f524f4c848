"""The MKL dispatch diagnostic of the llama.cpp peer benchmark: the preloaded shim really moves
libtorch's oneMKL onto another code path (its results change in the last bits and stay correct);
where it cannot apply (Intel CPUs, torch without MKL), the benchmark says why instead."""

import os
import subprocess
import sys

import pytest

from mobilellm_export.benchmarks.peers import mkl_dispatch

# A matrix-vector product through torch, which calls MKL's sgemv: its summation order is the code path's.
PROBE = """
import torch
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
a, x = torch.randn(512, 4096, generator=g), torch.randn(4096, generator=g)
y = torch.mv(a, x)
print(y.numpy().tobytes().hex(), (y.double() - a.double() @ x.double()).abs().max().item())
"""


def _probe(env: dict[str, str]) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0], float(out[1])


def test_intel_cpus_and_cpus_without_avx2_get_no_diagnostic_row(monkeypatch):
    monkeypatch.setattr(mkl_dispatch, "_cpuinfo", lambda: ("GenuineIntel", {"avx2", "fma"}))
    assert "Intel CPU" in mkl_dispatch.unavailable()
    monkeypatch.setattr(mkl_dispatch, "_cpuinfo", lambda: ("AuthenticAMD", {"sse2", "avx"}))
    assert "lacks AVX2" in mkl_dispatch.unavailable()


NOT_HERE = mkl_dispatch.unavailable()


@pytest.mark.skipif(NOT_HERE is not None, reason=str(NOT_HERE))
def test_the_shim_moves_mkl_to_another_code_path(tmp_path):
    stock, stock_error = _probe(dict(os.environ))
    shimmed, shimmed_error = _probe(mkl_dispatch.shim_environment(tmp_path))
    assert stock != shimmed  # another kernel: another summation order
    assert stock_error < 1e-3 and shimmed_error < 1e-3  # both still the product
