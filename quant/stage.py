"""The quantization stage: every weight's integer codes and scales, computed once.

`quantize(model, scheme, method)` returns a `QuantizedModel`: for each stored matrix of the model
(the shared embedding once, each LS block's weights once) its codes, its scales (already rounded
to the precision the scheme stores them in) and, for asymmetric formats, its zero points. Backends
only serialize these numbers into their format; none of them rounds a weight again, so a scheme
means the same stored numbers in every artifact that offers it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mobilellm_export.errors import UnsupportedError

from mobilellm_export.progress import Progress

from .calibration import Calibration
from .codes import QuantizedWeight
from .gptq import gptq_model
from .methods import METHODS
from .schemes import METHOD_NAMES, QuantScheme

if TYPE_CHECKING:
    from mobilellm_export.model.modeling import MobileLLM

EMBEDDING = "embed_tokens.weight"


@dataclass
class QuantizedModel:
    model: MobileLLM  # the float model the codes were computed from (left unchanged)
    scheme: QuantScheme
    method: str
    weights: dict[str, QuantizedWeight]  # by parameter name
    record: dict[str, Any] = field(default_factory=dict)  # what the manifest keeps about the run

    def weight(self, name: str) -> QuantizedWeight:
        return self.weights[name]

    @property
    def embedding(self) -> QuantizedWeight | None:
        return self.weights.get(EMBEDDING)


def linear_names(model: MobileLLM) -> list[str]:
    """The block matrices, by parameter name, in the order the blocks run (each stored block once)."""
    return [name for name, p in model.layers.named_parameters(prefix="layers") if p.ndim == 2]


def quantize(model: MobileLLM, scheme: QuantScheme, method: str = "rtn", *, calibration: Calibration | None = None,
             progress: Progress | None = None) -> QuantizedModel:
    """Codes for every stored matrix. `gptq` needs `calibration`; the shared matrix, which is
    also the lookup table, is always quantized data-free (mse under gptq)."""
    if method not in METHOD_NAMES:
        raise UnsupportedError(f"unknown quantization method {method!r}; choose one of: {', '.join(METHOD_NAMES)}")
    if method == "gptq" and calibration is None:
        raise UnsupportedError("--method gptq needs calibration text: a model with a tokenizer (for the default "
                               "text) or --calibration FILE")
    per_matrix = METHODS["mse" if method == "gptq" else method]
    weights: dict[str, QuantizedWeight] = {}
    params = dict(model.named_parameters())
    record: dict[str, Any] = {"method": method}
    with torch.no_grad():
        if not scheme.embedding.is_float:
            weights[EMBEDDING] = per_matrix(params[EMBEDDING].detach().float(), scheme.embedding)
    if not scheme.linear.is_float:
        if method == "gptq":
            assert calibration is not None
            weights.update(gptq_model(model, scheme, linear_names(model), calibration.windows,
                                      weights.get(EMBEDDING), progress or Progress(quiet=True)))
            record.update(shared_matrix_method="mse", calibration=calibration.record())
        else:
            with torch.no_grad():
                for name in linear_names(model):
                    weights[name] = per_matrix(params[name].detach().float(), scheme.linear)
    return QuantizedModel(model, scheme, method, weights, record)
