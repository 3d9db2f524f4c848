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


def test_llama_bench_json_becomes_prefill_per_length_and_decode_per_depth(tmp_path):
    prefill = [{"n_prompt": 32, "n_gen": 0, "n_depth": 0, "avg_ts": 400.0, "samples_ts": [399.0, 401.0],
                "model_size": 91726080},
               {"n_prompt": 128, "n_gen": 0, "n_depth": 0, "avg_ts": 330.0, "samples_ts": [330.0], "model_size": 91726080}]
    decode = [{"n_prompt": 0, "n_gen": 64, "n_depth": 32, "avg_ts": 87.0, "samples_ts": [86.0, 88.0], "model_size": 91726080},
              {"n_prompt": 0, "n_gen": 64, "n_depth": 512, "avg_ts": 52.0, "samples_ts": [52.0], "model_size": 91726080}]
    # llama-bench prints its JSON after log lines on the same streams; the decode call is the one with -d.
    tools = _tools(tmp_path, "echo 'load_backend: loaded CPU backend' >&2\n"
                             f"case \"$*\" in *' -d '*) echo '{json.dumps(decode)}';; *) echo '{json.dumps(prefill)}';; esac\n")
    got = native.bench(tools, tmp_path / "m.gguf", threads=2, prompt_lengths=(32, 128), new_tokens=64,
                       depths=(32, 512), repeats=2)
    assert got["prefill_tokens_per_s"]["32"]["mean"] == 400.0 and got["prefill_tokens_per_s"]["128"]["mean"] == 330.0
    assert got["decode_tokens_per_s"]["32"]["samples"] == [86.0, 88.0] and got["decode_tokens_per_s"]["512"]["mean"] == 52.0
    assert got["model_bytes"] == 91726080


def test_peer_report_compares_decode_at_matching_depths():
    """Ours after a prompt of N tokens against llama-bench -d N: the ratios are per depth, the
    targets use the first depth, and the report says which depth each decode column is."""
    from mobilellm_export.benchmarks.peers import llamacpp as peer

    def system(runner, size, prefill, decode):
        return {"runner": runner, "size_bytes": size, "weight_bytes": size, "quality": {},
                "prefill_tokens_per_s": dict(zip(map(str, peer.LENGTHS), prefill)),
                "decode_at_depth": dict(zip(map(str, peer.DEPTHS), decode)),
                "decode_tokens_per_s": decode[0]}

    systems = {"llama.cpp Q4_0": system("llama-bench", 100e6, (400.0, 440.0), (100.0, 50.0)),
               "ours executorch int4": system("TextLLMRunner", 90e6, (200.0, 220.0), (130.0, 40.0))}
    got = peer.targets(systems)
    assert got["decode_ratio"] == pytest.approx(1.3)
    assert got["decode_ratio_at_depth"] == {str(peer.DEPTHS[0]): pytest.approx(1.3), str(peer.DEPTHS[1]): pytest.approx(0.8)}
    assert got["met"]["decode >= 1.25x Q4_0 at <= its size"] and not got["met"]["prefill 32 >= 1.0x"]
    results = {"llama_cpp": {"variant": "native"}, "threads": 2, "machine": {"cpu": "x"}, "rounds": 1,
               "bandwidth": {"bytes_per_s": 1e10}, "models": {"m": {"synthetic_weights": True, "systems": systems,
                                                                   "targets": got}}}
    text = peer.report(results)
    assert f"decode tok/s after {peer.DEPTHS[1]}" in text and f"0.80x after {peer.DEPTHS[1]}" in text


def test_the_mkl_diagnostic_row_gets_its_own_ratios_and_never_counts_for_the_targets():
    from mobilellm_export.benchmarks.peers import llamacpp as peer

    def system(prefill, decode):
        return {"runner": "r", "size_bytes": 90e6, "weight_bytes": 90e6, "quality": {},
                "prefill_tokens_per_s": dict(zip(map(str, peer.LENGTHS), prefill)),
                "decode_at_depth": dict(zip(map(str, peer.DEPTHS), decode)), "decode_tokens_per_s": decode[0]}

    systems = {"llama.cpp Q4_0": system((400.0, 400.0), (100.0, 50.0)),
               "ours executorch int4": system((200.0, 200.0), (80.0, 30.0)),
               f"ours executorch int4, {peer.DIAGNOSTIC}": system((420.0, 420.0), (130.0, 60.0))}
    got = peer.targets(systems)
    assert not any(got["met"].values())  # the stock row's, though the diagnostic row would meet some
    assert got["diagnostic"]["decode_ratio"] == pytest.approx(1.3)
    assert got["diagnostic"]["prefill_32_ratio"] == pytest.approx(1.05)
    results = {"llama_cpp": {"variant": "native"}, "threads": 2, "machine": {"cpu": "x"}, "rounds": 1,
               "bandwidth": {"bytes_per_s": 1e10}, "models": {"m": {"synthetic_weights": True, "systems": systems,
                                                                   "targets": got}}}
    text = peer.report(results)
    assert "Diagnostic, not counted" in text and "1.30x after 32" in text and "- NOT met: prefill 32 >= 1.0x" in text
