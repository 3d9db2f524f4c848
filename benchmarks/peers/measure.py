"""Run a command as a child process and measure its wall time and peak resident memory.

`os.wait4` returns the resource usage of that one child (and the descendants it waited for),
so figures of different runs in one script never mix.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_bytes: int
    returncode: int
    log: Path


def run_measured(cmd: list[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Measured:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in kilobytes on Linux.
    return Measured(seconds, usage.ru_maxrss * 1024, proc.returncode, log)


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


def run_json_probe(module: str, log: Path, args: list[str]) -> dict:
    """Run `python -m module args` as a measured child and return the last JSON line it printed
    (or {"error": ...} naming the log)."""
    import json

    measured = run_measured(python_cmd("-m", module, *args), log)
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
    if measured.returncode != 0 or not lines:
        return {"error": f"see {log}"}
    return json.loads(lines[-1])
