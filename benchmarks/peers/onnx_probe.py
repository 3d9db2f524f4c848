"""Child-process probe for ONNX artifacts: decode speed through onnxruntime-genai, and memory at
session start.

    python -m mobilellm_export.benchmarks.peers.onnx_probe --artifact NAME=DIR ... [--rounds 15]
    python -m mobilellm_export.benchmarks.peers.onnx_probe --memory --artifact NAME=DIR
    python -m mobilellm_export.benchmarks.peers.onnx_probe --session --artifact NAME=DIR [--no-prepack]

Speed: every directory is loaded by `onnxruntime_genai.Model` in this one process and the rounds
alternate between them, so drift of a shared machine hits all alike. Directories written by
mobilellm-export are also timed through this package's own onnxruntime adapter (IO binding).

Memory (one model per process): with `--memory`, the resident memory onnxruntime-genai adds when
it opens the directory and after a 32-token prompt and 32 new tokens (weights are mapped or
prepacked lazily, so the figure after generation is the one that counts); with `--session`, what
a bare `onnxruntime.InferenceSession` adds at start and after one prefill, with weight prepacking
on or off, next to the bytes of the file's initializers: that shows whether onnxruntime holds a
second copy of anything. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from mobilellm_export.runtimes.onnx_genai_runner import GenaiStockRunner
from mobilellm_export.runtimes.timing import alternating_rounds, synthetic_prompt, time_decode

from ..harness.child import rss_bytes
from .executorch_probe import decode_figures


def parse_artifact(text: str) -> tuple[str, Path]:
    name, _, directory = text.partition("=")
    return name, Path(directory)


def genai_decode(model: Any, prompt: list[int], new_tokens: int) -> tuple[float, float]:
    """(prefill tokens/s, decode tokens/s) of one greedy generation in onnxruntime-genai (the stock
    runner the bench harness uses, over an already opened directory)."""
    run = model.generate_ids(prompt, new_tokens)
    return run.prefill_tokens_per_s, run.decode_tokens_per_s


def initializer_bytes(model_file: Path) -> int:
    import onnx

    from mobilellm_export.export.onnx.inspect import tensor_bytes

    return sum(tensor_bytes(t) for t in onnx.load(str(model_file)).graph.initializer)


def session_memory(model_file: Path, prompt: list[int], *, prepack: bool) -> dict[str, Any]:
    """Resident memory a bare InferenceSession adds at start and after one prefill of `prompt`
    (past inputs empty, for graphs with or without position_ids)."""
    import numpy as np
    import onnxruntime as ort

    weights = initializer_bytes(model_file)
    options = ort.SessionOptions()
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    before = rss_bytes()
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    after_start = rss_bytes()
    n = len(prompt)
    # KV shapes from genai_config.json: the builder leaves the head count symbolic in its graph.
    decoder = json.loads((model_file.parent / "genai_config.json").read_text())["model"]["decoder"]
    kv_heads, head_size = decoder["num_key_value_heads"], decoder["head_size"]
    feeds: dict[str, Any] = {"input_ids": np.array([prompt], dtype=np.int64),
                             "attention_mask": np.ones((1, n), dtype=np.int64)}
    for inp in session.get_inputs():
        if inp.name == "position_ids":
            feeds[inp.name] = np.arange(n, dtype=np.int64)[None, :]
        elif inp.name.startswith("past_key_values."):
            feeds[inp.name] = np.zeros((1, kv_heads, 0, head_size), dtype=np.float32)
    session.run(["logits"], feeds)
    return {"rss_after_session_bytes": after_start - before, "rss_after_prefill_bytes": rss_bytes() - before,
            "initializer_bytes": weights, "prepacking": prepack}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--artifact", action="append", required=True, type=parse_artifact)
    parser.add_argument("--memory", action="store_true", help="memory of one model in onnxruntime-genai")
    parser.add_argument("--session", action="store_true", help="memory of one bare InferenceSession")
    parser.add_argument("--no-prepack", action="store_true", help="with --session: disable weight prepacking")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    prompt = synthetic_prompt(args.prompt_tokens)
    if args.session:
        (name, directory), = args.artifact
        print(json.dumps({name: session_memory(directory / "model.onnx", prompt, prepack=not args.no_prepack)}))
        return
    if args.memory:
        import onnxruntime_genai  # noqa: F401  (the library loads before the baseline reading)

        (name, directory), = args.artifact
        before = rss_bytes()
        start = time.perf_counter()
        model = GenaiStockRunner(directory, prompt[0])
        loaded, after_load = time.perf_counter() - start, rss_bytes()
        genai_decode(model, prompt, 32)
        print(json.dumps({name: {"load_s": loaded, "rss_after_load_bytes": after_load - before,
                                 "rss_after_generation_bytes": rss_bytes() - before}}))
        return

    from mobilellm_export.runtimes.onnx_runtime import OnnxRuntime

    harnesses: dict[str, Any] = {}
    for name, directory in args.artifact:
        model = GenaiStockRunner(directory, prompt[0])
        harnesses[f"{name}/genai"] = lambda m=model: genai_decode(m, prompt, args.new_tokens)
        if (directory / "manifest.json").is_file():  # ours: also through this package's adapter
            runtime = OnnxRuntime(directory / "model.onnx")
            harnesses[f"{name}/adapter"] = lambda r=runtime: time_decode(r, prompt, args.new_tokens)
    samples = alternating_rounds(harnesses, args.rounds)
    result: dict[str, dict[str, Any]] = {}
    for key, s in samples.items():
        name, harness = key.split("/")
        result.setdefault(name, {})[harness] = decode_figures(s)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
