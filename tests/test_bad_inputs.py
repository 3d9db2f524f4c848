"""Every bad input we know of, kept tried: crafted checkpoints, manifests, artifacts and arguments.

Each case runs the command line in this process and checks the promise: exit 2 (or the stated
code), exactly one `mobilellm-export: error:` line on stderr and no traceback, nothing left in
the case's folder that was not there before (no half-written artifact, no stray bundle), and
nothing written outside it. Cases are named after the hardening issue's list (S: security,
A: silent acceptance, T: tracebacks, I: interruptions).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mobilellm_export.cli import main
from mobilellm_export.model.checkpoint import save_checkpoint

from .conftest import cli_export, random_model, small_checkpoint_with_tokenizer, small_config

ERROR = "mobilellm-export: error: "


# -- fixtures: one small checkpoint and one ONNX artifact, copied into each case's folder --------

@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs")
    small_checkpoint_with_tokenizer(root / "ck")
    cli_export(root / "out", "onnx", "--model", str(root / "ck"), "--quant", "fp32", "--max-context", "64")
    (root / "out" / "onnx-fp32").rename(root / "art")
    (root / "out").rmdir()
    return root


def snapshot(root: Path) -> dict[str, float]:
    return {p.relative_to(root).as_posix(): p.lstat().st_mtime for p in root.rglob("*")}


def run_cli(workdir: Path, argv: list[str], capsys) -> tuple[int, str, str]:
    """main(argv) with the working directory at `workdir`; (exit code, stdout, stderr)."""
    before = Path.cwd()
    os.chdir(workdir)
    try:
        code = main(["--quiet", *argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    finally:
        os.chdir(before)
    out, err = capsys.readouterr()
    return code, out, err


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]  # "{art}", "{ck}" and "{case}" are replaced by the case's copies
    message: str  # a fragment of the one error line
    prepare: Callable[[Path], None] = lambda case: None
    code: int = 2
    allowed: tuple[str, ...] = ()  # paths under the case folder the command may create


def _set_weight(case: Path, value: float) -> None:
    from safetensors.torch import load_file, save_file

    path = case / "ck" / "model.safetensors"
    tensors = load_file(str(path))
    tensors["model.layers.0.mlp.up_proj.weight"][0, 0] = value
    save_file(tensors, str(path), metadata={"format": "pt"})


def _shard_index(case: Path, shard: str) -> None:
    ck = case / "ck"
    (ck / "model.safetensors").rename(ck / "shard.safetensors")
    from safetensors.torch import load_file

    names = list(load_file(str(ck / "shard.safetensors")))
    weight_map = {n: "shard.safetensors" for n in names}
    weight_map[names[0]] = shard
    (ck / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def _manifest(change: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda case: edit_json(case / "art" / "manifest.json", change)


def _as_executorch(case: Path) -> None:
    """The ONNX artifact relabelled as one the Android app runs: bundle checks the manifest, the
    roles and the checksums, never the program inside."""
    edit_json(case / "art" / "manifest.json", lambda d: d.update(
        backend="executorch", roles={"program": "model.onnx", "data": "genai_config.json"}))


def _symlinked_role(case: Path) -> None:
    _as_executorch(case)
    os.symlink("/etc", case / "art" / "sys")

    def change(d: dict) -> None:
        d["files"]["sys/passwd"] = {"sha256": "0" * 64, "bytes": 1}
        d["total_bytes"] += 1
        d["roles"]["data"] = "sys/passwd"
    edit_json(case / "art" / "manifest.json", change)


def _no_tokenizer(case: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (case / "ck" / name).unlink()


def _bench_results(case: Path) -> None:
    (case / "bad.json").write_text(json.dumps({"kind": "bench", "schema_version": 2, "artifacts": []}))


CASES = [
    # S: paths that leave the artifact or the target, and tampered artifacts run anyway
    Case("S01 bundle copies a role path with ../", ["bundle", "{art}", "--app", "android", "--into", "{case}/into"],
         "'../../../../etc/passwd' is not allowed", _manifest(lambda d: d["roles"].update(model="../../../../etc/passwd"))),
    Case("S02 bundle follows a symlink out of the artifact", ["bundle", "{art}", "--app", "android", "--into",
         "{case}/into"], "'sys/passwd' lies outside the artifact", _symlinked_role),
    Case("S05 verify with a files entry outside the artifact", ["verify", "{art}", "--eval-tokens", "64"],
         "'../../etc/passwd' is not allowed", _manifest(lambda d: d["files"].update({"../../etc/passwd": d["files"]["model.onnx"]}))),
    Case("S06 verify with an unlisted file", ["verify", "{art}", "--eval-tokens", "64"], "verification failed",
         lambda case: (case / "art" / "notes.txt").write_text("x"), code=1),
    Case("S08 verify with a stray model.onnx.data", ["verify", "{art}", "--eval-tokens", "64"], "verification failed",
         lambda case: (case / "art" / "model.onnx.data").write_bytes(b"\0" * 16), code=1),
    Case("S09 generate runs a tampered artifact", ["generate", "{art}", "--prompt", "hello", "--max-new-tokens", "2"],
         "model.onnx does not match its sha256", lambda case: flip_byte(case / "art" / "model.onnx")),
    Case("S10 bench measures a tampered artifact", ["bench", "{art}", "--prompt-lengths", "4", "--new-tokens", "2",
         "--repeats", "1", "--no-quality"], "model.onnx does not match its sha256",
         lambda case: flip_byte(case / "art" / "model.onnx")),
    Case("S11 shard index names ../", ["generate", "--model", "{ck}", "--prompt", "hi"], "outside the checkpoint",
         lambda case: _shard_index(case, "../elsewhere.safetensors")),
    Case("S12 shard index names an absolute path", ["generate", "--model", "{ck}", "--prompt", "hi"],
         "outside the checkpoint", lambda case: _shard_index(case, "/etc/passwd")),
    # A: what used to be accepted silently
    Case("A01 export with a NaN weight", ["export", "--model", "{ck}", "--backend", "onnx", "--quant", "fp32",
         "--output", "{case}/out"], "NaN or infinite", lambda case: _set_weight(case, float("nan"))),
    Case("A02 export with an infinite weight", ["export", "--model", "{ck}", "--backend", "onnx", "--quant", "fp32",
         "--output", "{case}/out"], "NaN or infinite", lambda case: _set_weight(case, float("inf"))),
    Case("A03 generate with a NaN weight", ["generate", "--model", "{ck}", "--prompt", "hi"], "NaN or infinite",
         lambda case: _set_weight(case, float("nan"))),
    Case("A04 hidden_size 64.7", ["generate", "--model", "{ck}", "--prompt", "hi"], "hidden_size must be a whole number",
         lambda case: edit_json(case / "ck" / "config.json", lambda d: d.update(hidden_size=64.7))),
    Case("A07 verify --eval-tokens 0", ["verify", "{art}", "--eval-tokens", "0"], "must be at least 64"),
    Case("A08 verify --eval-tokens -5", ["verify", "{art}", "--eval-tokens", "-5"], "must be at least 64"),
    Case("A09 generate --max-context 0", ["generate", "--prompt", "hi", "--max-context", "0"], "must be at least 2"),
    Case("A10 info --max-context 0", ["info", "--max-context", "0"], "must be at least 2"),
    Case("A11 info --max-context -3", ["info", "--max-context", "-3"], "must be at least 2"),
    Case("A12 bench a prompt longer than the context", ["bench", "{art}", "--prompt-lengths", "100000",
         "--no-quality"], "exceed the context 64"),
    Case("A13 bundle into the artifact itself", ["bundle", "{art}", "--app", "android", "--into", "{art}"],
         "into or over the artifact", _as_executorch),
    Case("A13 bundle over the artifact (named model/)", ["bundle", "{case}/into/model", "--app", "android", "--into",
         "{case}/into"], "into or over the artifact",
         lambda case: (_as_executorch(case), (case / "into").mkdir(), (case / "art").rename(case / "into" / "model"))),
    Case("A14 bundle outside the repository without --into", ["bundle", "{art}", "--app", "android"],
         "holds no android_demo/", _as_executorch),
    # T: what used to be a traceback
    Case("T01 vocab_size 1e12", ["generate", "--model", "{ck}", "--prompt", "hi"], "more than this machine's",
         lambda case: edit_json(case / "ck" / "config.json", lambda d: d.update(vocab_size=10**12))),
    Case("T05 manifest with no eos id", ["generate", "{art}", "--prompt", "hi"], "eos_ids: [] should be non-empty",
         _manifest(lambda d: d["runtime"].update(eos_ids=[]))),
    Case("T10 manifest without a scheme name", ["bundle", "{art}", "--app", "android", "--into", "{case}/into"],
         "'name' is a required property",
         lambda case: (_as_executorch(case), edit_json(case / "art" / "manifest.json",
                                                      lambda d: d["quantization"].pop("name")))),
    Case("T11 verify --eval-tokens 1", ["verify", "{art}", "--eval-tokens", "1"], "must be at least 64"),
    Case("T12 --temperature nan", ["generate", "{art}", "--prompt", "hi", "--temperature", "nan"], "finite number"),
    Case("T13 --temperature 1e-45", ["generate", "{art}", "--prompt", "hi", "--temperature", "1e-45"],
         "must be 0 or at least 0.01"),
    Case("T14 a prompt that is not UTF-8", ["generate", "--model", "{ck}", "--prompt", "caf\udce9"], "not valid UTF-8"),
    Case("T15 a prompt that is not UTF-8, artifact, --json", ["generate", "{art}", "--prompt", "caf\udce9", "--json"],
         "not valid UTF-8"),
    Case("T17 bench --results missing keys", ["bench", "--results", "{case}/bad.json"], "is not a complete bench result",
         _bench_results),
    Case("T19 --max-regression -1", ["bench", "--results", "{case}/bad.json", "--max-regression", "-1"],
         "must be between 0 and 0.99"),
    Case("T20 --max-regression nan", ["bench", "--results", "{case}/bad.json", "--max-regression", "nan"],
         "finite number"),
    # I: interruptions and waits (the signals themselves: tests below)
    Case("I06 a missing local path is not a hub id", ["generate", "--model", "{case}/ck/x", "--prompt", "hi"],
         "does not exist"),
    Case("I06 relative, next to an existing folder", ["generate", "--model", "ck/x", "--prompt", "hi"],
         "ck/ exists here, so this is read as a local path"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line_and_leaves_nothing(case: Case, base: Path, tmp_path: Path, capsys) -> None:
    shutil.copytree(base / "ck", tmp_path / "ck")
    shutil.copytree(base / "art", tmp_path / "art", symlinks=True)
    case.prepare(tmp_path)
    outside = snapshot(tmp_path.parent)
    before = snapshot(tmp_path)
    argv = [a.replace("{art}", str(tmp_path / "art")).replace("{ck}", str(tmp_path / "ck"))
            .replace("{case}", str(tmp_path)) for a in case.argv]
    code, out, err = run_cli(tmp_path, argv, capsys)
    lines = err.strip().splitlines()
    assert code == case.code, (out, err)
    assert len(lines) == 1 and lines[0].startswith(ERROR) and case.message in lines[0], err
    assert "Traceback" not in out + err
    created = set(snapshot(tmp_path)) - set(before)
    assert not [p for p in created if not p.startswith(case.allowed or ("\0",))], sorted(created)
    assert {k for k in snapshot(tmp_path.parent) if not k.startswith(tmp_path.name)} == \
        {k for k in outside if not k.startswith(tmp_path.name)}


def test_export_without_a_tokenizer_says_so(base: Path, tmp_path: Path, capsys) -> None:
    shutil.copytree(base / "ck", tmp_path / "ck")
    _no_tokenizer(tmp_path)
    code, _, err = run_cli(tmp_path, ["export", "--model", str(tmp_path / "ck"), "--backend", "onnx", "--quant", "fp32",
                                      "--output", str(tmp_path / "out")], capsys)
    assert code == 0 and "warning:" in err and "has no tokenizer" in err


def test_bundles_are_readable_by_the_app_build(base: Path, tmp_path: Path, capsys) -> None:
    """mkdtemp's 0700 used to survive into the bundle folder; the app's build reads it as
    another user in some CI setups."""
    shutil.copytree(base / "art", tmp_path / "art")
    _as_executorch(tmp_path)
    code, _, err = run_cli(tmp_path, ["bundle", str(tmp_path / "art"), "--app", "android", "--into",
                                      str(tmp_path / "into")], capsys)
    assert code == 0, err
    assert (tmp_path / "into" / "model").stat().st_mode & 0o777 == 0o755


def test_a_stale_partial_of_a_killed_export_is_removed(base: Path, tmp_path: Path, capsys) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    stale = out / f".onnx-fp32.partial-{dead.pid}-abc123"
    stale.mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"half")
    live = out / f".onnx-fp32.partial-{os.getpid()}-def456"  # a running export's: kept
    live.mkdir()
    code, _, err = run_cli(tmp_path, ["export", "--model", str(base / "ck"), "--backend", "onnx", "--quant", "fp32",
                                      "--output", str(out)], capsys)
    assert code == 0, err
    assert not stale.exists() and live.exists() and (out / "onnx-fp32" / "manifest.json").is_file()


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_an_export_stops_it_cleanly(tmp_path: Path, signum: int, code: int) -> None:
    """The signal is honoured at the next step: the temporary directory is removed and the
    process exits 128 + signal with one line (it used to die on SIGTERM leaving .partial-*)."""
    ck = tmp_path / "ck"
    save_checkpoint(random_model(small_config(vocab_size=4096, dim=256, n_layers=8, ffn_dim=512, head_dim=32,
                                              n_heads=8, n_kv_heads=4)), ck)
    out = tmp_path / "out"
    exe = Path(sys.executable).parent / "mobilellm-export"
    proc = subprocess.Popen([str(exe), "export", "--model", str(ck), "--backend", "onnx", "--quant", "int4", "int8",
                             "--method", "rtn", "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob(".*.partial-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.fail(f"the export finished before it could be interrupted: {proc.stderr.read()[-500:]}")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == "mobilellm-export: interrupted"
    assert "Traceback" not in err and not list(out.glob(".*partial*")) and not (out / "onnx-int8").exists()


def test_disk_full_is_one_line_and_leaves_nothing(base: Path, tmp_path: Path) -> None:
    """A write that fails (here: a file-size limit, EFBIG, which takes the same path as ENOSPC)."""
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
              "from mobilellm_export.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", script, "--quiet", "export", "--model", str(base / "ck"), "--backend",
                           "onnx", "--quant", "fp32", "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith(ERROR) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists() or not list(out.iterdir())


def test_a_hub_that_never_answers_fails_instead_of_hanging(tmp_path: Path, monkeypatch) -> None:
    import socket
    import threading

    from mobilellm_export.errors import CheckpointError
    from mobilellm_export.model import checkpoint

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in range(8)], daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(checkpoint, "STALL_LIMIT_S", 3.0)
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="no data for 3 s"):
        checkpoint.download("facebook/MobileLLM-125M", config_only=True)
    assert time.monotonic() - start < 30
