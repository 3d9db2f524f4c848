"""Regression check of a `bench` run against a committed baseline (CI fails on a regression)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (figure, higher is better) per artifact, keyed by the artifact directory's name.
FIGURES: dict[str, bool] = {
    "decode_tokens_per_s": True,
    "prefill_tokens_per_s": True,
    "rss_after_load_bytes": False,
    "size_bytes": False,
}


@dataclass(frozen=True)
class Regression:
    artifact: str
    figure: str
    baseline: float
    current: float
    change: float  # relative, signed so that negative is worse

    def describe(self) -> str:
        return (f"{self.artifact}: {self.figure} {self.current:,.4g} vs baseline {self.baseline:,.4g} "
                f"({self.change:+.1%})")


def artifact_key(path: str) -> str:
    """How reports and comparisons name an artifact: its directory and the one above
    ("125M-LS/onnx-int4"), since directories are named by backend and scheme only."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def figures(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    length = str(results["settings"]["prompt_lengths"][0])
    out: dict[str, dict[str, float]] = {}
    for a in results["artifacts"]:
        speed = a.get("speed", {})
        at = speed.get("prompt_lengths", {}).get(length, {})
        values = {"size_bytes": a["size_bytes"], "rss_after_load_bytes": speed.get("rss_after_load_bytes"),
                  "decode_tokens_per_s": at.get("decode_tokens_per_s", {}).get("median"),
                  "prefill_tokens_per_s": at.get("prefill_tokens_per_s", {}).get("median")}
        out[artifact_key(a["artifact"])] = {k: v for k, v in values.items() if v is not None}
    return out


def compare(current: dict[str, Any], baseline: dict[str, Any], max_regression: float) -> list[Regression]:
    """Figures worse than the baseline by more than `max_regression` (a fraction, e.g. 0.15).
    Artifacts or figures missing on either side are not compared."""
    if not 0 <= max_regression < 1:
        raise ValueError(f"max_regression must be in [0, 1), got {max_regression}")
    found = []
    now, then = figures(current), figures(baseline)
    for name in sorted(set(now) & set(then)):
        for figure, higher_is_better in FIGURES.items():
            if figure not in now[name] or figure not in then[name] or not then[name][figure]:
                continue
            change = now[name][figure] / then[name][figure] - 1
            worse = -change if higher_is_better else change
            if worse > max_regression:
                found.append(Regression(name, figure, then[name][figure], now[name][figure],
                                        change if higher_is_better else -change))
    return found
