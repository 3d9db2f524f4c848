"""Run one command and write its own wall time and peak resident memory to a JSON file:

    python launcher.py RESULT.json COMMAND [ARGS...]

Why a process in between: Linux keeps a process's peak resident size (ru_maxrss) across fork and
exec, so a command started by a large process (a benchmark script that has built models) reports
the script's size when that is larger than its own peak. This launcher is started by path, imports
nothing beyond the standard library, and so is small when it starts the command; the command's
peak, as `os.wait4` returns it for that child (and the descendants it waited for), is its own.
Measured: a parent at 1.18 GB starting a command whose peak is 0.30 GB read 1.18 GB directly and
0.30 GB through this launcher.

It must stay importable without the package: measure.py runs it as a file.
"""

import json
import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    result, cmd = argv[0], argv[1:]
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd)  # stdout, stderr, cwd and environment are the launcher's
    except OSError as exc:  # no such program: reported like a shell does, as exit status 127
        print(f"launcher: cannot run {cmd[0]}: {exc}", file=sys.stderr)
        figures = {"seconds": 0.0, "peak_rss_bytes": 0, "returncode": 127}
    else:
        _, status, usage = os.wait4(proc.pid, 0)
        # ru_maxrss is in kilobytes on Linux.
        figures = {"seconds": time.perf_counter() - start, "peak_rss_bytes": usage.ru_maxrss * 1024,
                   "returncode": os.waitstatus_to_exitcode(status)}
    with open(result, "w") as out:
        json.dump(figures, out)
    return figures["returncode"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]) & 0xFF)
