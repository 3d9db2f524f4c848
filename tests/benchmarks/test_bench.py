"""The benchmark harness: the regression check, the runner statistics parser (on real output of
ExecuTorch's C++ runner), an end-to-end host run, and the adb target's errors."""

import copy
import json
import subprocess
import sys

import pytest

from mobilellm_export.benchmarks.harness.compare import compare
from mobilellm_export.benchmarks.harness.runner_stats import parse_stats
from mobilellm_export.cli import main

from ..conftest import small_checkpoint_with_tokenizer


def results(decode=100.0, rss=50e6, size=10e6, name="onnx-int4"):
    return {"schema_version": 1, "settings": {"prompt_lengths": [32]}, "artifacts": [{
        "artifact": f"/x/{name}", "size_bytes": size,
        "speed": {"rss_after_load_bytes": rss, "prompt_lengths": {"32": {
            "decode_tokens_per_s": {"median": decode}, "prefill_tokens_per_s": {"median": 1000.0}}}}}]}


def test_compare_flags_only_regressions_beyond_the_ratio():
    base = results()
    assert compare(results(decode=90.0), base, 0.15) == []  # -10%: within
    (slow,) = compare(results(decode=80.0), base, 0.15)  # -20%
    assert slow.figure == "decode_tokens_per_s" and slow.change == pytest.approx(-0.2)
    assert compare(results(decode=200.0), base, 0.15) == []  # faster is never a regression
    (fat,) = compare(results(rss=60e6), base, 0.15)  # +20% memory is worse
    assert fat.figure == "rss_after_load_bytes" and fat.change == pytest.approx(-0.2)
    assert [r.figure for r in compare(results(size=12e6, decode=70.0), base, 0.15)] == ["decode_tokens_per_s",
                                                                                         "size_bytes"]
    assert compare(results(decode=10.0, name="other"), base, 0.15) == []  # different artifacts: not compared
    with pytest.raises(ValueError):
        compare(base, base, 1.5)


@pytest.fixture(scope="module")
def small_artifacts(tmp_path_factory):
    """A small model with the embedded tokenizer, exported to ExecuTorch fp32 and ONNX int4."""
    tmp = tmp_path_factory.mktemp("bench")
    ckpt = tmp / "ckpt"
    small_checkpoint_with_tokenizer(ckpt)
    out = tmp / "out"
    assert main(["--quiet", "export", "--model", str(ckpt), "--backend", "executorch", "onnx", "--quant", "fp32",
                 "--max-context", "64", "--output", str(out)]) == 0
    return out / "executorch-fp32", out / "onnx-fp32"


def test_runner_statistics_parse_the_real_cpp_runner_output(small_artifacts):
    pytest.importorskip("executorch")
    directory = small_artifacts[0]
    script = (
        "import json, executorch.extension.llm.custom_ops.custom_ops, executorch.kernels.quantized\n"
        "from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner\n"
        f"r = TextLLMRunner({str(directory / 'model.pte')!r}, {str(directory / 'tokenizer.json')!r}, "
        f"{str(directory / 'model.ptd')!r})\n"
        "seen = []\n"
        "r.generate('Return the number of', GenerationConfig(max_new_tokens=12, temperature=0.0, echo=False, "
        "num_bos=1), stats_callback=lambda s: seen.append(s.to_json_string()))\n"
        "print('CALLBACK ' + seen[0])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = parse_stats(proc.stdout + proc.stderr)
    assert len(records) == 1  # the line the C++ runner itself printed
    record = records[0]
    callback = json.loads(proc.stdout.split("CALLBACK ", 1)[1].strip())
    assert record["raw"] == callback  # the same statistics the Python binding hands over
    assert record["generated_tokens"] == callback["generated_tokens"] > 0
    assert record["decode_tokens_per_s"] == pytest.approx(callback["decode_token_per_sec"], rel=0.01)
    assert record["ttft_s"] >= 0 and record["load_s"] >= 0


@pytest.mark.parametrize("which", [0, 1])
def test_stock_runners_run_prompts_of_the_asked_length(small_artifacts, which):
    """ExecuTorch's C++ runner and onnxruntime-genai take text; the prompt the harness writes is
    the asked number of tokens in each (their own tokenizers and BOS handling), and the runner's
    own counts come back."""
    from mobilellm_export.benchmarks.harness.child import prompt_text
    from mobilellm_export.runtimes.manifest import read_manifest
    from mobilellm_export.runtimes.registry import adapter_for, artifact_tokenizer

    manifest = read_manifest(small_artifacts[which])
    adapter = adapter_for(manifest)
    assert adapter.stock_runner
    runner = adapter.open_stock(manifest, threads=1)
    for length in (8, 21):
        run = runner.generate(prompt_text(artifact_tokenizer(manifest), length), 12)
        assert run.prompt_tokens == length
        assert 0 < run.generated_tokens <= 11 and 0 <= run.prefill_s <= run.ttft_s


def test_executorch_runner_opens_a_bare_program_as_it_opens_an_artifact(small_artifacts):
    """Peers' programs have no manifest (export_llm's); the peer probe drives them through the same
    runner class, which must run them exactly as it runs ours."""
    from mobilellm_export.runtimes.executorch_runner import ExecuTorchStockRunner
    from mobilellm_export.runtimes.manifest import read_manifest

    manifest = read_manifest(small_artifacts[0])
    assert manifest.backend == "executorch"
    bare = ExecuTorchStockRunner.from_files(manifest.path("program"), manifest.directory / manifest.runtime.tokenizer,
                                            manifest.optional_path("data"), threads=1)
    ours, theirs = (runner.generate("a b c d e f", 9) for runner in (ExecuTorchStockRunner(manifest), bare))
    assert (theirs.prompt_tokens, theirs.generated_tokens) == (ours.prompt_tokens, ours.generated_tokens)
    assert theirs.generated_tokens > 0


def test_bench_end_to_end_and_regression_gate(small_artifacts, tmp_path, capsys):
    onnx_dir = small_artifacts[1]
    out = tmp_path / "r.json"
    assert main(["--quiet", "bench", str(onnx_dir), "--repeats", "1", "--prompt-lengths", "8,16", "--new-tokens", "4",
                 "--json", str(out), "--report", str(tmp_path / "r.md"), "--plots", str(tmp_path / "plots")]) == 0
    data = json.loads(out.read_text())
    assert data["schema_version"] == 2 and data["machine"]["logical_cores"] >= 1
    (entry,) = data["artifacts"]
    speed = entry["speed"]
    # Through the stock runner (onnxruntime-genai), the Python adapter's figures next to it.
    assert speed["runtime"].startswith("onnxruntime-genai") and entry["adapter_speed"]["runtime"] == "onnxruntime-cpu"
    assert set(speed["prompt_lengths"]) == {"8", "16"}
    assert speed["prompt_lengths"]["16"]["prompt_tokens"] == 16
    assert speed["prompt_lengths"]["8"]["generated_tokens"] == 3  # the first token comes from the prefill
    assert speed["prompt_lengths"]["8"]["decode_tokens_per_s"]["median"] > 0
    assert entry["adapter_speed"]["prompt_lengths"]["8"]["decode_tokens_per_s"]["median"] > 0
    # The ratio is achieved bytes/s over the probe's; this tiny model's weights stay in the caches,
    # so it may exceed 1 here (it bounds decode only for weights far larger than the caches).
    limit = entry["physical_limit"]
    assert limit["achieved_bytes_per_s"] == pytest.approx(
        limit["bytes_per_token"] * speed["prompt_lengths"]["8"]["decode_tokens_per_s"]["median"])
    assert limit["fraction"] == pytest.approx(limit["achieved_bytes_per_s"] / data["bandwidth"]["bytes_per_s"])
    # Quality from the same run: this fp32 artifact agrees with its fp32 eager reference everywhere.
    assert entry["quality"]["agreement"] == 1.0
    assert entry["quality"]["perplexity"] == pytest.approx(entry["quality"]["reference_perplexity"], rel=1e-3)
    assert (tmp_path / "plots" / "decode_vs_size.png").stat().st_size > 1000
    assert "| out/onnx-fp32" in (tmp_path / "r.md").read_text()
    capsys.readouterr()
    # The same figures pass against themselves; a baseline twice as fast fails the gate.
    assert main(["--quiet", "bench", "--results", str(out), "--compare", str(out)]) == 0
    fast = copy.deepcopy(data)
    fast["artifacts"][0]["speed"]["prompt_lengths"]["8"]["decode_tokens_per_s"]["median"] *= 2
    (tmp_path / "fast.json").write_text(json.dumps(fast))
    assert main(["--quiet", "bench", "--results", str(out), "--compare", str(tmp_path / "fast.json")]) == 1
    assert "onnx-fp32: decode_tokens_per_s" in capsys.readouterr().out


def test_adb_target_without_a_device_is_one_clear_error(small_artifacts, tmp_path, monkeypatch, capsys):
    directory = small_artifacts[0]
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb at all
    assert main(["--quiet", "bench", str(directory), "--target", "adb"]) == 2
    assert "adb on PATH" in capsys.readouterr().err
    fake = tmp_path / "adb"  # an adb that sees no device
    fake.write_text("#!/bin/sh\necho 'List of devices attached'\necho\n")
    fake.chmod(0o755)
    assert main(["--quiet", "bench", str(directory), "--target", "adb"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Android device" in err[0]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_read_probe_reads_every_byte_once(threads):
    """The probe's figure is the buffer's size over the time of one threaded sum: the sum must
    cover the buffer exactly once, whatever the thread count (odd lengths included)."""
    import numpy as np

    from mobilellm_export.benchmarks.harness.run import bandwidth_probe, threaded_sum

    buffer = np.ones(1_000_003)
    assert threaded_sum(buffer, threads) == buffer.size
    probe = bandwidth_probe(threads, megabytes=8, repeats=1)
    assert probe["probe_bytes"] == 8 << 20 and f"{threads} threads" in probe["method"]
    assert probe["bytes_per_s"] > 0 and probe["copy_bytes_per_s"] > 0


@pytest.mark.parametrize("target, says, never", [
    ("host", "Target host: Some CPU, 2 logical cores; memory read bandwidth 14.3 GB/s", "not a device figure"),
    ("qemu-aarch64", "emulated ARM64 CPU", "Target qemu-aarch64: Some CPU"),
    ("adb", "Android device", "Target adb: Some CPU"),
])
def test_report_header_names_the_host_as_the_host_on_other_targets(target, says, never):
    """The bandwidth probe and CPU name are always this host's; a phone's or emulator's report must
    not present them as the measured CPU's."""
    from mobilellm_export.benchmarks.harness.report import target_line

    results = {"target": target, "machine": {"cpu": "Some CPU", "logical_cores": 2},
               "bandwidth": {"bytes_per_s": 14.3e9, "method": "probe"}, "settings": {"threads": 2}}
    line = target_line(results)
    assert says in line and never not in line
