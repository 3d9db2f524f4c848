"""Progress lines for long work (loading, training, exporting), on stderr so stdout stays data."""

from __future__ import annotations

import sys
import time

from . import interrupts


class Progress:
    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self._start = time.perf_counter()

    def step(self, message: str) -> None:
        interrupts.check()  # every step is a safe point to stop at (see interrupts.py)
        if not self.quiet:
            print(f"[{time.perf_counter() - self._start:6.1f}s] {message}", file=sys.stderr, flush=True)
