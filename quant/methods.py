"""How a float matrix becomes codes and scales: data-free methods, one matrix at a time.

`rtn`: round to nearest with the group's extreme mapped onto the end of the range it fits best:
the value of largest magnitude lands exactly on -2^(b-1) when it is negative (as llama.cpp's Q4_0
does) and on 2^(b-1) - 1 when it is positive, so no group clips its own extreme and a negative
extreme uses the one extra step of the signed range. Scales stay positive: llama.cpp's Q4_0 puts
a positive extreme on -8 too by giving the group a negative scale (steps of amax/8 everywhere; on
SmolLM2-135M int4 rtn +23% perplexity instead of +31%), but XNNPACK refuses negative scales
(xnn_status_invalid_parameter when the program loads), so no scheme may use them.
`mse`: per group, the scale (and zero point) among a grid of shrunken ranges that gives the
smallest squared error of the dequantized group (a data-free search in the spirit of HQQ's and
llama.cpp's k-quants' scale fitting).
Scales are rounded to the scheme's scale precision *before* the codes are chosen, so the stored
numbers are exactly the ones every backend serializes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mobilellm_export.errors import UnsupportedError

from .codes import QuantizedWeight
from .schemes import METHOD_NAMES, WeightFormat

_SCALE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_TINY = 1e-8  # an all-zero group still gets a usable (and representable) scale


def _grouped(weight: torch.Tensor, fmt: WeightFormat) -> torch.Tensor:
    rows, cols = weight.shape
    group = fmt.group_size or cols
    if cols % group:
        raise UnsupportedError(f"width {cols} is not a multiple of the quantization group {group}")
    return weight.reshape(rows, cols // group, group)


def round_scale(scale: torch.Tensor, fmt: WeightFormat) -> torch.Tensor:
    """`scale` in the precision the format stores, never zero."""
    return scale.to(_SCALE_DTYPES[fmt.scale_dtype]).float().clamp_min(_TINY)


def _limits(fmt: WeightFormat) -> tuple[int, int]:
    return -(2 ** (fmt.bits - 1)), 2 ** (fmt.bits - 1) - 1


def _encode(groups: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, fmt: WeightFormat) -> torch.Tensor:
    """Codes of `groups` [rows, groups, g] for scale (and zero point) [rows, groups, 1]."""
    qmin, qmax = _limits(fmt)
    q = torch.round(groups / scale)
    if zero is not None:
        q = q + zero
    return q.clamp(qmin, qmax)


def _decode(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None) -> torch.Tensor:
    return (q - zero) * scale if zero is not None else q * scale


def _candidates(groups: torch.Tensor, fmt: WeightFormat, shrink: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scales (and zero points) for each shrink factor: [K, rows, groups, 1]."""
    qmin, qmax = _limits(fmt)
    k = shrink.view(-1, 1, 1, 1)
    if fmt.symmetric:
        amax = groups.abs().amax(-1, keepdim=True)
        # The extreme's sign decides which end of the range it may take exactly.
        extreme = torch.gather(groups, -1, groups.abs().argmax(-1, keepdim=True))
        steps = torch.where(extreme < 0, torch.tensor(float(-qmin)), torch.tensor(float(qmax)))
        return round_scale(k * amax / steps, fmt), None
    lo = (groups.amin(-1, keepdim=True) * k).clamp(max=0)
    hi = (groups.amax(-1, keepdim=True) * k).clamp(min=0)
    scale = round_scale((hi - lo) / (qmax - qmin), fmt)
    zero = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    return scale, zero


def _pack(groups: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, fmt: WeightFormat):
    q = _encode(groups, scale, zero, fmt)
    rows = groups.shape[0]
    return QuantizedWeight(codes=q.reshape(rows, -1).to(torch.int8), scales=scale.reshape(rows, -1).float(),
                           zero_points=None if zero is None else zero.reshape(rows, -1).to(torch.int8), fmt=fmt)


def rtn(weight: torch.Tensor, fmt: WeightFormat):
    groups = _grouped(weight, fmt)
    scale, zero = _candidates(groups, fmt, torch.ones(1))
    return _pack(groups, scale[0], None if zero is None else zero[0], fmt)


# Shrink factors the search tries: clipping the range a little often lowers the error of the many
# small values more than it raises the error of the few large ones.
MSE_GRID = torch.linspace(0.70, 1.0, 31)


def mse(weight: torch.Tensor, fmt: WeightFormat):
    groups = _grouped(weight, fmt)
    scales, zeros = _candidates(groups, fmt, MSE_GRID)
    best_err = best = None
    for i in range(len(MSE_GRID)):
        zero = None if zeros is None else zeros[i]
        err = (_decode(_encode(groups, scales[i], zero, fmt), scales[i], zero) - groups).pow(2).sum(-1, keepdim=True)
        if best_err is None:
            best_err, best = err, torch.zeros_like(err, dtype=torch.long)
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = torch.where(better, torch.full_like(best, i), best)
    index = best.unsqueeze(0)
    scale = torch.gather(scales, 0, index)[0]
    zero = None if zeros is None else torch.gather(zeros, 0, index)[0]
    return _pack(groups, scale, zero, fmt)


# The data-free methods; "gptq" (quant/gptq.py) needs calibration text.
METHODS: dict[str, Callable] = {"rtn": rtn, "mse": mse}
assert set(METHODS) | {"gptq"} == set(METHOD_NAMES)
