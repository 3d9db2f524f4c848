"""torch.export -> coremltools mlprogram (iOS 18, fp16 compute), then the stage's codes installed."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mobilellm_export.model.modeling import MobileLLM
from mobilellm_export.progress import Progress
from mobilellm_export.quant.schemes import QuantScheme, fp16_storage
from mobilellm_export.quant.stage import QuantizedModel
from mobilellm_export.runtimes.coreml_runtime import causal_mask

from .decoder import CoreMLDecoder


def stored_scheme(scheme: QuantScheme) -> QuantScheme:
    """As stored: fp16 weights and norms (mlprogram's compute precision), fp16 scales."""
    return fp16_storage(scheme)


def const_name(parameter: str) -> str:
    """The name coremltools gives a parameter's weight const in an fp16 program."""
    return "p_" + parameter.replace(".", "_") + "_to_fp16"


def install_codes(mlmodel: Any, quantized: QuantizedModel) -> Any:
    """Replace every quantized parameter's const with a `constexpr_blockwise_shift_scale` holding the
    stage's codes, fp16 scales and (asymmetric formats) offsets: the numbers are stored, never
    re-derived. A const read by two ops (the shared matrix: gather and linear) becomes one
    constexpr read by both. This is the route coremltools' own `linear_quantize_weights` takes
    (a graph pass applied with `_apply_graph_pass`), with our numbers instead of its rounding."""
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.passes.graph_pass import AbstractGraphPass
    from coremltools.converters.mil.mil.passes.helper import block_context_manager
    from coremltools.models.utils import _apply_graph_pass

    table = {const_name(name): weight for name, weight in quantized.weights.items()}
    installed: set[str] = set()

    def storage(values: np.ndarray, bits: int) -> np.ndarray:
        return values.astype(types.np_int4_dtype if bits == 4 else np.int8)

    class InstallCodes(AbstractGraphPass):
        def apply(self, prog: Any) -> None:
            for function in prog.functions.values():
                self._block(function)

        @block_context_manager
        def _block(self, block: Any) -> None:
            for op in list(block.operations):
                weight = table.get(op.name) if op.op_type == "const" else None
                if weight is None:
                    continue
                bits = weight.fmt.bits
                arguments = {"data": storage(weight.codes.numpy(), bits),
                             "scale": weight.scales.numpy().astype(np.float16)}
                if weight.zero_points is not None:
                    arguments["offset"] = storage(weight.zero_points.numpy(), bits)
                new = mb.constexpr_blockwise_shift_scale(**arguments, before_op=op, name=op.name + "_quantized")
                block.replace_uses_of_var_after_op(anchor_op=op, old_var=op.outputs[0], new_var=new,
                                                   no_check_var_types=True)
                block.remove_ops([op])
                installed.add(op.name)

    mlmodel = _apply_graph_pass(mlmodel, InstallCodes(), skip_model_load=True)
    missing = sorted(set(table) - installed)
    if missing:  # a converter that names its consts differently: a bug to fix here, not a user error
        raise RuntimeError(f"no weight const named {missing[0]} in the converted program")
    return mlmodel


def convert(model: MobileLLM, quantized: QuantizedModel, max_context: int, progress: Progress) -> Any:
    import coremltools as ct

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
    if quantized.weights:
        progress.step("storing the quantization stage's codes")
        mlmodel = install_codes(mlmodel, quantized)
    return mlmodel
