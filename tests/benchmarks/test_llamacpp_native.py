"""The native llama.cpp peer's guards: the build key follows the host's instruction set, and a tool
that dies of an illegal instruction (a build made for another CPU) says so in one line."""

import json
import shutil

import pytest

from mobilellm_export.benchmarks.peers import llamacpp_native as native


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_the_host_isa_is_what_march_native_enables():
    march, enabled = native.native_isa()
    assert march and march != "unknown"
    assert "sse2" in enabled  # every x86-64 and the baseline of -march=native there
    flags = set(open("/proc/cpuinfo").read().split())
    # AVX2 is in the fingerprint exactly when the CPU reports it.
    assert ("avx2" in enabled) == ("avx2" in flags)


def _tools(tmp_path, script: str) -> native.NativeTools:
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "llama-bench"
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)
    return native.NativeTools(tmp_path, "native (-march=test)", {})


def test_a_tool_killed_by_sigill_is_reported_as_built_for_another_cpu(tmp_path):
    tools = _tools(tmp_path, "kill -ILL $$\n")
    with pytest.raises(native.LlamaCppError, match="illegal instruction.*another CPU"):
        native.run_tool(tools, "llama-bench", [])


def test_llama_bench_json_becomes_prefill_per_length_and_decode(tmp_path):
    tests = [{"n_prompt": 32, "n_gen": 0, "avg_ts": 400.0, "samples_ts": [399.0, 401.0], "model_size": 91726080},
             {"n_prompt": 128, "n_gen": 0, "avg_ts": 330.0, "samples_ts": [330.0], "model_size": 91726080},
             {"n_prompt": 0, "n_gen": 64, "avg_ts": 87.0, "samples_ts": [86.0, 88.0], "model_size": 91726080}]
    # llama-bench prints its JSON after log lines on the same streams.
    tools = _tools(tmp_path, f"echo 'load_backend: loaded CPU backend' >&2\ncat <<'EOF'\n{json.dumps(tests)}\nEOF\n")
    got = native.bench(tools, tmp_path / "m.gguf", threads=2, prompt_lengths=(32, 128), new_tokens=64, repeats=2)
    assert got["prefill_tokens_per_s"]["32"]["mean"] == 400.0 and got["prefill_tokens_per_s"]["128"]["mean"] == 330.0
    assert got["decode_tokens_per_s"]["samples"] == [86.0, 88.0] and got["model_bytes"] == 91726080
