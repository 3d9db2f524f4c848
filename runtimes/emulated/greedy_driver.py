"""Greedy generation of an ExecuTorch artifact with ExecuTorch's runtime alone: the script that
runs inside the emulated ARM64 Python (and, for the comparison, natively on the host).

    python greedy_driver.py ARTIFACT_DIR REQUEST.json OUT_DIR

REQUEST: {"prompts": [[ids...], ...], "steps": 16} for greedy runs, or
{"timing": {"prompt_length": 32, "new_tokens": 64, "repeats": 3}} for speed.
OUT_DIR/result.json gets the machine, the greedy tokens per prompt (the prefill's token, then one
per step) and timings; OUT_DIR/logits-<i>.pt the per-step logits [steps + 1, vocab] (torch.save).

It imports torch and ExecuTorch's `_C` extension only and loads the two kernel libraries our
programs call (ExecuTorch's LLM custom ops and quantized embeddings) with torch.ops.load_library:
the usual imports pull in executorch.exir and torch._inductor, about 50 s more under emulation,
for the same kernels (the logits were bit-identical either way). Nothing of mobilellm_export is
imported: the emulated Python has torch and executorch only.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import platform
import sys
import time

START = time.perf_counter()


def _one(directory: str, pattern: str) -> str:
    hits = glob.glob(os.path.join(directory, "**", pattern), recursive=True)
    if len(hits) != 1:
        raise SystemExit(f"expected one {pattern} under {directory}, found {hits}")
    return hits[0]


def load_forward(artifact: str):
    import torch

    # executorch is a namespace package: find it without importing its exporter.
    root = list(importlib.util.find_spec("executorch").submodule_search_locations)[0]
    from executorch.extension.pybindings import _C

    torch.ops.load_library(_one(os.path.join(root, "extension", "llm", "custom_ops"), "*custom_ops_aot_lib.*"))
    torch.ops.load_library(_one(os.path.join(root, "kernels", "quantized"), "*quantized_ops_aot_lib.*"))
    manifest = json.load(open(os.path.join(artifact, "manifest.json")))
    roles = manifest["roles"]
    data = os.path.join(artifact, roles["data"]) if "data" in roles else None
    program = _C._load_program(os.path.join(artifact, roles["program"]), enable_etdump=False, debug_buffer_size=0,
                               program_verification=_C.Verification.Minimal, data_path=data)
    method = program.load_method("forward")

    def forward(tokens: list[int], pos: int):
        out = method([torch.tensor([tokens], dtype=torch.long), torch.tensor([pos], dtype=torch.long)])[0]
        return out.float().reshape(-1, out.shape[-1])[-1]

    return torch, _C, forward


def greedy(torch, forward, prompt: list[int], steps: int):
    tokens, rows = [], []
    feed, pos = prompt, 0
    for _ in range(steps + 1):
        logits = forward(feed, pos)
        tokens.append(int(torch.argmax(logits)))
        rows.append(logits)
        pos += len(feed)
        feed = [tokens[-1]]
    return tokens, torch.stack(rows)


def timing(forward, torch, prompt_length: int, new_tokens: int, repeats: int) -> dict:
    prompt = [1] + [(7 * i + 3) % 997 + 3 for i in range(prompt_length - 1)]
    prefill, decode = [], []
    for _ in range(repeats + 1):  # the first run warms up and is not kept
        start = time.perf_counter()
        token = int(torch.argmax(forward(prompt, 0)))
        mid = time.perf_counter()
        for pos in range(prompt_length, prompt_length + new_tokens - 1):
            token = int(torch.argmax(forward([token], pos)))
        prefill.append(prompt_length / (mid - start))
        decode.append((new_tokens - 1) / (time.perf_counter() - mid))
    return {"prefill_tokens_per_s": prefill[1:], "decode_tokens_per_s": decode[1:]}


def main() -> None:
    artifact, request_file, out = sys.argv[1:4]
    request = json.load(open(request_file))
    torch, _C, forward = load_forward(artifact)
    loaded = time.perf_counter()
    result = {"machine": platform.machine(), "torch": torch.__version__,
              "threads": _C._threadpool_get_thread_count(), "startup_s": loaded - START}
    if "timing" in request:
        t = request["timing"]
        result["timing"] = timing(forward, torch, t["prompt_length"], t["new_tokens"], t["repeats"])
    else:
        result["tokens"] = []
        for i, prompt in enumerate(request["prompts"]):
            tokens, logits = greedy(torch, forward, prompt, request["steps"])
            result["tokens"].append(tokens)
            torch.save(logits, os.path.join(out, f"logits-{i}.pt"))
    result["run_s"] = time.perf_counter() - loaded
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
