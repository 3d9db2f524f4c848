"""torch.export of the decoder twice (prefill with a dynamic token count, decode with one token),
both converted by coreai-torch into one program that shares weights and states."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mobilellm_export.model.modeling import MobileLLM
from mobilellm_export.progress import Progress
from mobilellm_export.quant.stage import QuantizedModel

from .decoder import build_decoder

INPUTS = ("input_ids", "input_pos")
OUTPUTS = ("logits",)
FUNCTIONS = ("prefill", "decode")


def state_names(n_executed: int) -> list[str]:
    """One key and one value state per executed block, in the order the decoder registers them."""
    return [f"{kind}_cache_{i}" for i in range(n_executed) for kind in ("k", "v")]


def _example(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones((1, n), dtype=torch.int32), torch.arange(n, dtype=torch.int32)


PRECISIONS = {"fp16": torch.float16, "fp32": torch.float32}


def convert(model: MobileLLM, quantized: QuantizedModel, max_context: int, path: Path, progress: Progress, *,
            compute_precision: str) -> dict[str, Any]:
    """Write the `.aimodel` at `path`; return facts for the manifest."""
    import coreai_torch

    # Float matrices at the scheme's width (fp16 for the fp16 scheme; integer schemes have none).
    stored = PRECISIONS["fp16" if quantized.scheme.linear.bits == 16 else "fp32"]
    decoder, rounded = build_decoder(model, quantized, max_context, stored=stored,
                                     compute=PRECISIONS[compute_precision])
    names = state_names(model.config.n_executed_layers)
    converter = coreai_torch.TorchConverter(mode=coreai_torch.TorchConverter.Mode.RELEASE)
    tokens = torch.export.Dim("n", min=1, max=max_context)
    shapes = {"prefill": ({1: tokens}, {0: tokens}), "decode": None}
    for function, example in (("prefill", _example(2)), ("decode", _example(1))):
        progress.step(f"torch.export ({function})")
        with torch.no_grad():
            exported = torch.export.export(decoder, example, dynamic_shapes=shapes[function], strict=False)
            exported = exported.run_decompositions(coreai_torch.get_decomp_table())
        # The mutated buffers are the states; listing one name per buffer keeps both functions on
        # the same states (and their weights, which are the same tensors, on one stored copy).
        converter.add_exported_program(exported, input_names=list(INPUTS), output_names=list(OUTPUTS),
                                       state_names=names, entrypoint_name=function)
    progress.step("converting with coreai-torch")
    program = converter.to_coreai()
    progress.step(f"writing {path.name}")
    program.save_asset(path)
    return {"scales_rounded_to_fp16": {fmt: round(frac, 6) for fmt, frac in rounded.items()}}
