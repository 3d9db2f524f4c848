"""Reports of a `bench` run: a Markdown table and PNG plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mobilellm_export.table import format_table

from .compare import artifact_key

# The speed columns come from the stock runner where the backend has one (the runner column says
# which); "adapter decode" is the same artifact through this package's Python adapter.
HEADERS = ["artifact", "backend", "scheme", "size MB", "runner", "load s", "TTFT ms", "prefill tok/s",
           "decode tok/s", "adapter decode tok/s", "RSS after load MB", "RSS after gen MB", "perplexity",
           "agreement", "% of bandwidth"]
SIZE, DECODE, RSS_LOAD, RSS_GEN = (HEADERS.index(h) for h in ("size MB", "decode tok/s", "RSS after load MB",
                                                               "RSS after gen MB"))


def _median(speed: dict[str, Any], length: str, key: str) -> float | None:
    return speed.get("prompt_lengths", {}).get(length, {}).get(key, {}).get("median")


def rows(results: dict[str, Any]) -> list[list[object]]:
    length = str(results["settings"]["prompt_lengths"][0])
    out = []
    for a in results["artifacts"]:
        speed, quality, limit = a.get("speed", {}), a.get("quality", {}), a.get("physical_limit") or {}
        ttft = _median(speed, length, "ttft_s")
        rss = speed.get("rss_after_load_bytes")
        gen = speed.get("rss_after_generation_bytes")
        out.append([artifact_key(a["artifact"]), a["backend"], a["scheme"], a["size_bytes"] / 1e6,
                    speed.get("runtime"), speed.get("load_s"), ttft * 1000 if ttft is not None else None,
                    _median(speed, length, "prefill_tokens_per_s"), _median(speed, length, "decode_tokens_per_s"),
                    _median(a.get("adapter_speed", {}), length, "decode_tokens_per_s"),
                    rss / 1e6 if rss is not None else None,
                    gen / 1e6 if gen is not None else None, quality.get("perplexity"), quality.get("agreement"),
                    100 * limit["fraction"] if "fraction" in limit else None])
    return out


def target_line(results: dict[str, Any]) -> str:
    """What the figures were measured on. The machine and bandwidth probe are always this host's;
    for another target they are named as the host's, never as the measured CPU's."""
    m, s = results["machine"], results["settings"]
    host = (f"{m['cpu']}, {m['logical_cores']} logical cores; memory read bandwidth "
            f"{results['bandwidth']['bytes_per_s'] / 1e9:.1f} GB/s ({results['bandwidth']['method']})")
    if results["target"] == "qemu-aarch64":
        return (f"Target qemu-aarch64: an emulated ARM64 CPU, {s['threads']} threads, on this host ({host}). "
                f"Emulated speed is not a device figure, and the host's bandwidth bounds nothing here.")
    if results["target"] == "adb":
        return (f"Target adb: the attached Android device, {s['threads']} threads. The host running the bench "
                f"({host}) is not the measured CPU, so no share of bandwidth is given.")
    return f"Target host: {host}; {s['threads']} threads."


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = [
        target_line(results),
        f"Prompt {s['prompt_lengths'][0]} tokens (TTFT, prefill), {s['new_tokens']} new tokens (decode); "
        f"median of {s['repeats']} runs after {s['warmup_runs']} warm-up; each artifact in its own process.",
        "",
        format_table(HEADERS, rows(results), markdown=True),
        "",
    ]
    for a in results["artifacts"]:
        if "skipped" in a:
            lines.append(f"- {artifact_key(a['artifact'])}: not measured: {a['skipped']}")
            continue
        if "stock_skipped" in a:
            lines.append(f"- {artifact_key(a['artifact'])}: measured through the Python adapter only: {a['stock_skipped']}")
        at = a.get("speed", {}).get("prompt_lengths", {}).get(str(s["prompt_lengths"][0]), {})
        if at.get("generated_tokens", s["new_tokens"] - 1) < s["new_tokens"] - 1:
            lines.append(f"- {artifact_key(a['artifact'])}: the runner met an end of sequence token after "
                         f"{at['generated_tokens']} decode steps (of {s['new_tokens'] - 1})")
        elif a.get("quality", {}).get("note"):
            lines.append(f"- {artifact_key(a['artifact'])}: {a['quality']['note']}")
    return "\n".join(lines) + "\n"


def plots(results: dict[str, Any], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    measured = [r for r in rows(results) if r[DECODE] is not None]
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in measured:
        ax.scatter(r[SIZE], r[DECODE], s=40)
        ax.annotate(r[0], (r[SIZE], r[DECODE]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("artifact size (MB)")
    ax.set_ylabel("decode tokens/s")
    ax.set_title("decode speed vs size")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(directory / "decode_vs_size.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = [r[0] for r in measured]
    ax.barh(names, [r[RSS_LOAD] or 0 for r in measured], label="after load")
    ax.barh(names, [(r[RSS_GEN] or 0) - (r[RSS_LOAD] or 0) for r in measured], left=[r[RSS_LOAD] or 0 for r in measured],
            label="added by generation")
    ax.set_xlabel("resident memory (MB)")
    ax.set_title("memory per artifact")
    ax.legend()
    fig.tight_layout()
    written.append(directory / "memory.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    return written
