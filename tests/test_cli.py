"""The command line as users run it: the console script in a subprocess, and in-process calls."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mobilellm_export.cli import main
from mobilellm_export.model.sources import load_model
from mobilellm_export.model.reference import EagerRuntime
from mobilellm_export.runtimes.generate import generate

EXE = Path(sys.executable).parent / "mobilellm-export"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=120)


def test_info_on_the_embedded_model(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "embedded tiny model" in out and "5 unique, 10 executed" in out and "each block runs twice" in out


def test_info_json_for_presets_and_directories(capsys, ls_checkpoint):
    assert main(["info", "--model", "1.5B", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"]["unique"] == 1_511_188_800
    assert info["expected_weight_bytes"]["fp16"] == 2 * 1_511_188_800
    assert main(["info", "--model", str(ls_checkpoint), "--json", "--max-context", "64"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["executed_layers"] == 6 and info["kv_cache_bytes"]["context"] == 64


def test_generate_json_matches_the_library(capsys):
    assert main(["generate", "--prompt", "Return the number of", "--max-new-tokens", "12", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    loaded = load_model(None)
    tok = loaded.require_tokenizer()
    expected = generate(EagerRuntime(loaded.model), tok.encode("Return the number of"), max_new_tokens=12,
                        eos_ids=(tok.eos_id,)).new_ids
    assert result["token_ids"] == expected and result["text"] == tok.decode(expected)


def test_console_script_streams_text_and_reports_progress():
    proc = run("generate", "--prompt", "The default value is", "--max-new-tokens", "8")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("The default value is") and len(proc.stdout) > len("The default value is")
    assert "loading embedded tiny model" in proc.stderr and "decode" in proc.stderr
    quiet = run("--quiet", "generate", "--prompt", "The default value is", "--max-new-tokens", "8")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == proc.stdout


@pytest.mark.parametrize("args, message", [
    (["info", "--model", "no/such/dir"], "is neither a directory"),
    (["generate", "--model", "125M", "--prompt", "x"], "architecture without weights"),
    (["generate", "--prompt", "word " * 400], "the context holds 256"),
    (["generate", "--prompt", "x", "--top-p", "2"], "argument --top-p: must be between 0 and 1, got 2"),
    (["generate", "--model", "synthetic:125M", "--prompt", "x"], "has no tokenizer"),
    (["bench"], "name artifact directories to measure"),
    (["bundle", "no/such/dir", "--app", "android"], "does not exist"),
])
def test_errors_are_one_line_with_nonzero_exit(args, message):
    proc = run(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("mobilellm-export: error: ") and message in lines[-1]
    assert "Traceback" not in proc.stderr


def test_debug_shows_the_traceback():
    proc = run("--debug", "info", "--model", "no/such/dir")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "CheckpointError" in proc.stderr


def test_corrupt_checkpoint_is_one_line(ls_checkpoint):
    (ls_checkpoint / "model.safetensors").write_bytes(b"\x00" * 10)
    proc = run("generate", "--model", str(ls_checkpoint), "--prompt", "x")
    assert proc.returncode == 2 and "corrupt or truncated" in proc.stderr and "Traceback" not in proc.stderr


def test_every_command_has_help():
    for name in ("info", "generate", "export", "verify", "bench", "bundle"):
        proc = run(name, "--help")
        assert proc.returncode == 0 and "usage: mobilellm-export " + name in proc.stdout


@pytest.mark.parametrize("argv", [
    ["--backend", "onnx", "executorch", "--quant", "int4", "fp32"],
    ["--backend", "onnx", "--backend", "executorch", "--quant", "int4", "--quant", "fp32"],
    ["--backend", "onnx", "--quant", "int4", "--backend", "executorch", "onnx", "--quant", "fp32"],
])
def test_export_takes_backends_and_schemes_as_lists_or_repeated_flags(argv):
    from mobilellm_export.cli import build_parser
    from mobilellm_export.export.plan import ExportSpec, plan_exports

    args = build_parser().parse_args(["export", *argv, "--output", "out"])
    planned = plan_exports(ExportSpec(backends=tuple(args.backend), quants=tuple(args.quant)))
    assert sorted((p.backend.name, p.scheme.name) for p in planned) == [
        ("executorch", "fp32"), ("executorch", "int4"), ("onnx", "fp32"), ("onnx", "int4")]
