"""Running an artifact needs its runtime only: generate, verify and bench of an ONNX artifact
work in a process where executorch, torchao, coremltools and coreai-torch cannot be imported."""

import json
import subprocess
import sys

import pytest

from ..conftest import cli_export, run_blocked

EXPORTERS = ("executorch", "torchao", "coremltools", "coreai_torch")


@pytest.fixture(scope="module")
def onnx_int4(tmp_path_factory):
    return cli_export(tmp_path_factory.mktemp("onnx"), "onnx", "--quant", "int4", "--method", "rtn")


def test_the_blocker_blocks(tmp_path):
    proc = run_blocked(tmp_path, EXPORTERS, "--version")
    assert proc.returncode == 0
    site = tmp_path / "blocker"
    probe = subprocess.run([sys.executable, "-c", "import torchao"], capture_output=True, text=True,
                           env={"PYTHONPATH": str(site), "MOBILELLM_TEST_BLOCK": "torchao"})
    assert probe.returncode != 0 and "blocked" in probe.stderr


def test_onnx_artifacts_run_without_any_exporter(onnx_int4, tmp_path):
    gen = run_blocked(tmp_path, EXPORTERS, "generate", str(onnx_int4), "--prompt", "The default value is",
                      "--max-new-tokens", "8", "--json")
    assert gen.returncode == 0, gen.stderr
    assert json.loads(gen.stdout)["runtime"] == "onnxruntime-cpu"

    ver = run_blocked(tmp_path, EXPORTERS, "verify", str(onnx_int4), "--eval-tokens", "256")
    assert ver.returncode == 0, ver.stdout + ver.stderr
    assert "result: passed" in ver.stdout

    bench = run_blocked(tmp_path, EXPORTERS, "bench", str(onnx_int4), "--repeats", "1", "--prompt-lengths", "16",
                        "--new-tokens", "4", "--eval-tokens", "256", "--json", str(tmp_path / "r.json"))
    assert bench.returncode == 0, bench.stdout + bench.stderr
    (entry,) = json.loads((tmp_path / "r.json").read_text())["artifacts"]
    assert entry["speed"]["prompt_lengths"]["16"]["decode_tokens_per_s"]["median"] > 0
    assert entry["quality"]["verify_passed"] is True
