"""Ctrl-C and SIGTERM during long work, without half-written output or a C++ abort.

A KeyboardInterrupt raised while Python runs inside a C++ callback (ExecuTorch's and coremltools'
lowering call back into Python) cannot unwind through the C++ frames: the process aborts
(`terminate called after throwing an instance of 'python_error'`, exit 134) and leaves its
temporary directory behind. So while `interruptible()` is active, the first SIGINT or SIGTERM
only records itself; `check()` (called at every progress step) raises `Interrupted` at the next
safe point, and the writers' usual clean-up runs. A second signal stops at once: the temporary
paths registered with `cleanup_on_exit` are removed and the process exits (130 for SIGINT, 143
for SIGTERM) without unwinding.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_pending: int | None = None
_paths: set[Path] = set()


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised at a safe point; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _handler(signum: int, frame: object) -> None:
    global _pending
    if _pending is not None:
        for path in list(_paths):
            shutil.rmtree(path, ignore_errors=True)
        print(f"\nmobilellm-export: {signal.Signals(signum).name.lower()[3:]}: stopped", file=sys.stderr, flush=True)
        os._exit(128 + signum)
    _pending = signum
    print("\nmobilellm-export: stopping after the current step (press Ctrl-C again to stop at once)",
          file=sys.stderr, flush=True)


@contextmanager
def interruptible() -> Iterator[None]:
    """Defer SIGINT/SIGTERM to the next `check()` for the duration (main thread only)."""
    global _pending
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _pending = None
    try:
        yield
        check()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def check() -> None:
    """Raise `Interrupted` if a signal arrived since the work began."""
    global _pending
    if _pending is not None:
        signum, _pending = _pending, None
        raise Interrupted(signum)


@contextmanager
def cleanup_on_exit(path: Path) -> Iterator[None]:
    """Remove `path` if the process is stopped at once (second signal) while this is active."""
    _paths.add(path)
    try:
        yield
    finally:
        _paths.discard(path)
