"""Bad export requests: one clear error line, non-zero exit, nothing left behind."""

import subprocess
import sys
from pathlib import Path

import pytest

from mobilellm_export.cli import main
from mobilellm_export.errors import MissingDependencyError
from mobilellm_export.export import pipeline
from mobilellm_export.export.contract import ExportRequest
from mobilellm_export.export.registry import get_backend
from mobilellm_export.model.sources import load_model
from mobilellm_export.quant.schemes import get_scheme

EXE = Path(sys.executable).parent / "mobilellm-export"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--backend", "executorch", "--quant", "int4-asym"], "--quant int4-asym is not supported by the executorch backend"),
    (["--backend", "tflite", "--quant", "fp32"], "unknown backend 'tflite'"),
    (["--backend", "executorch", "--quant", "int4", "--group-size", "5"], "--group-size must be an even number"),
    (["--backend", "executorch", "--quant", "int4", "--group-size", "128"], "does not divide the model width 192"),
    (["--backend", "executorch", "--quant", "fp32", "--model", "125M"], "architecture without weights"),
])
def test_bad_requests_fail_fast_with_one_line(tmp_path, args, message):
    proc = run("export", "--output", str(tmp_path / "out"), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unwritable_output_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = run("export", "--backend", "executorch", "--quant", "fp32", "--output", str(blocker / "sub"))
    assert proc.returncode == 2 and "cannot write to" in proc.stderr and "Traceback" not in proc.stderr


def test_existing_output_is_refused_without_overwrite(tmp_path):
    (tmp_path / "executorch-fp32").mkdir()
    proc = run("export", "--backend", "executorch", "--quant", "fp32", "--output", str(tmp_path))
    assert proc.returncode == 2 and "already exists" in proc.stderr


def test_a_failing_export_leaves_nothing_behind(tmp_path, monkeypatch):
    backend = get_backend("executorch")

    def broken(model, quantized, request, out_dir, progress):
        (out_dir / "model.pte").write_bytes(b"half")
        raise MissingDependencyError("simulated failure halfway")

    monkeypatch.setattr(backend, "export", broken)
    loaded = load_model(None)
    with pytest.raises(MissingDependencyError):
        pipeline.export_artifact(loaded, backend, ExportRequest(get_scheme("fp32"), 64), tmp_path / "a")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("backend, package, quant, message", [
    ("executorch", "executorch", "fp32", "needs the executorch package"),
    ("coreai", "coreai", "int4", "mobilellm-export[coreai]"),
])
def test_missing_backend_package_is_a_clear_error(monkeypatch, capsys, tmp_path, backend, package, quant, message):
    import builtins

    real_import = builtins.__import__

    def without_package(name, *args, **kwargs):
        if name.startswith(package):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_package)
    out = tmp_path / "never"
    assert main(["--quiet", "export", "--backend", backend, "--quant", quant, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()
