"""Run a command as a child process and measure its wall time and peak resident memory.

The command runs under launcher.py, a small process started by path, which reports the command's
own `os.wait4` figures (the command and the descendants it waited for): started from this script
directly, the command's ru_maxrss would be this script's resident size whenever that is larger,
because Linux carries the peak across fork and exec. Figures of different runs never mix.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

LAUNCHER = Path(__file__).with_name("launcher.py")


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_bytes: int
    returncode: int
    log: Path


def run_measured(cmd: list[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Measured:
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, log.open("wb") as out:
        result = Path(tmp) / "measured.json"
        # -S: no site-packages scan, so the launcher stays a few MB (the floor of what it can report).
        subprocess.run([sys.executable, "-S", str(LAUNCHER), str(result), *cmd], stdout=out,
                       stderr=subprocess.STDOUT, env=env, cwd=cwd, check=False)
        figures = json.loads(result.read_text())
    return Measured(figures["seconds"], figures["peak_rss_bytes"], figures["returncode"], log)


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


def run_json_probe(module: str, log: Path, args: list[str]) -> dict:
    """Run `python -m module args` as a measured child and return the last JSON line it printed
    (or {"error": ...} naming the log)."""
    measured = run_measured(python_cmd("-m", module, *args), log)
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
    if measured.returncode != 0 or not lines:
        return {"error": f"see {log}"}
    return json.loads(lines[-1])
