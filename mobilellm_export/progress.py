"""Progress lines for long work (loading, training, exporting), on stderr so stdout stays data."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self._start = time.perf_counter()

    def step(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self._start:6.1f}s] {message}", file=sys.stderr, flush=True)
