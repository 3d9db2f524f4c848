"""torch.export -> coremltools mlprogram (iOS 18, fp16 compute), then weight quantization."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from mobilellm_export.model.modeling import MobileLLM
from mobilellm_export.progress import Progress
from mobilellm_export.quant.schemes import QuantScheme, WeightFormat
from mobilellm_export.runtimes.coreml_runtime import causal_mask

from .decoder import CoreMLDecoder


def stored_scheme(scheme: QuantScheme) -> QuantScheme:
    """As stored: fp16 weights and norms (mlprogram's compute precision), fp16 scales."""
    def stored(fmt: WeightFormat) -> WeightFormat:
        if fmt.is_float:
            return WeightFormat(16)
        return dataclasses.replace(fmt, scale_bytes=2)
    return dataclasses.replace(scheme, linear=stored(scheme.linear), embedding=stored(scheme.embedding))


def quantization_config(mlmodel: Any, fmt: WeightFormat) -> Any:
    import coremltools.optimize.coreml as cto

    if fmt.is_float:
        return None
    granularity = "per_channel" if fmt.group_size is None else "per_block"
    op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype=f"int{fmt.bits}", granularity=granularity,
                                     block_size=fmt.group_size or 0, weight_threshold=1024)
    # One global config: the shared embedding feeds a gather and a linear, and per-op configs
    # for those two would conflict on the one const. Only the rotary tables are named out:
    # they are weights to coremltools but must stay fp16.
    rope = {name: None for name in cto.get_weights_metadata(mlmodel, weight_threshold=1024) if "rope" in name}
    return cto.OptimizationConfig(global_config=op, op_name_configs=rope)


def convert(model: MobileLLM, scheme: QuantScheme, max_context: int, progress: Progress) -> Any:
    import coremltools as ct
    import numpy as np

    decoder = CoreMLDecoder(model, max_context).eval()
    n = torch.export.Dim("n", min=1, max=max_context)
    end = torch.export.Dim("end", min=1, max=max_context)
    example = (torch.tensor([[1, 2]], dtype=torch.int32), causal_mask(2, 5))
    progress.step("torch.export")
    with torch.no_grad():
        exported = torch.export.export(decoder, example, dynamic_shapes=({1: n}, {2: n, 3: end}), strict=False)
        exported = exported.run_decompositions({})
    progress.step("converting with coremltools (mlprogram, iOS 18)")
    mlmodel = ct.convert(
        exported,
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT16,
        outputs=[ct.TensorType(name="logits", dtype=np.float32)],
        skip_model_load=True,
    )
    config = quantization_config(mlmodel, scheme.linear)
    if config is not None:
        import coremltools.optimize.coreml as cto

        progress.step(f"quantizing weights: {scheme.linear.describe()}")
        mlmodel = cto.linear_quantize_weights(mlmodel, config)
    return mlmodel
