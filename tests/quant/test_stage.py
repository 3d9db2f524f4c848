"""The quantization stage: codes and scales computed once, exactly the numbers backends store."""

import dataclasses

import pytest
import torch

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.quant.methods import METHODS
from mobilellm_export.quant.schemes import INT4_G32, INT8, WeightFormat, get_scheme
from mobilellm_export.quant.stage import EMBEDDING, linear_names, quantize

from ..conftest import random_model, small_config

ASYM4 = dataclasses.replace(INT4_G32, symmetric=False)


def weight(seed=0, rows=24, cols=96):
    g = torch.Generator().manual_seed(seed)
    # Heavy tails, like trained weights: a few large values per group.
    return torch.randn(rows, cols, generator=g) * (1 + 4 * torch.rand(rows, cols, generator=g) ** 8)


@pytest.mark.parametrize("fmt", [INT4_G32, INT8, ASYM4], ids=lambda f: f.describe())
@pytest.mark.parametrize("method", list(METHODS))
def test_codes_are_in_range_and_scales_exact_in_their_precision(fmt, method):
    w = weight()
    q = METHODS[method](w, fmt)
    lo, hi = -(2 ** (fmt.bits - 1)), 2 ** (fmt.bits - 1) - 1
    assert q.codes.dtype == torch.int8 and lo <= int(q.codes.min()) and int(q.codes.max()) <= hi
    groups = 96 // (fmt.group_size or 96)
    assert q.scales.shape == (24, groups) and bool((q.scales > 0).all())  # XNNPACK refuses others
    if fmt.scale_dtype == "bf16":
        assert torch.equal(q.scales, q.scales.to(torch.bfloat16).float())
    assert (q.zero_points is None) == fmt.symmetric
    # Round to nearest clips nothing but (at most) the opposite extreme: within one step everywhere.
    if method == "rtn":
        step = q.scales.abs().repeat_interleave(fmt.group_size or 96, dim=1)
        assert bool(((q.dequantize() - w).abs() <= step * 1.0001).all())


def test_rtn_keeps_each_groups_extreme_exact():
    w = weight()
    q = METHODS["rtn"](w, INT4_G32)
    groups = w.reshape(24, 3, 32)
    index = groups.abs().argmax(-1, keepdim=True)
    extreme = torch.gather(groups, -1, index)
    restored = torch.gather(q.dequantize().reshape(24, 3, 32), -1, index)
    # Exact up to the bf16 rounding of the scale: on -8 when negative, on +7 when positive.
    assert torch.allclose(restored, extreme, rtol=1e-2)
    codes = torch.gather(q.codes.reshape(24, 3, 32), -1, index)
    assert bool((codes == torch.where(extreme < 0, -8, 7)).all())


@pytest.mark.parametrize("fmt", [INT4_G32, ASYM4], ids=lambda f: f.describe())
def test_mse_search_never_does_worse_than_rtn(fmt):
    w = weight(seed=3)
    err = {m: (METHODS[m](w, fmt).dequantize() - w).pow(2).sum() for m in ("rtn", "mse")}
    assert err["mse"] <= err["rtn"]
    assert err["mse"] < 0.97 * err["rtn"]  # and the search finds something on heavy-tailed weights


def test_asymmetric_fits_a_skewed_group_better():
    w = weight().abs() + 0.5  # all positive: a symmetric grid wastes half its codes
    sym = (METHODS["rtn"](w, INT4_G32).dequantize() - w).pow(2).sum()
    asym = (METHODS["rtn"](w, ASYM4).dequantize() - w).pow(2).sum()
    assert asym < 0.5 * sym


def test_the_stage_quantizes_each_stored_matrix_once():
    model = random_model(small_config(layer_sharing=True))
    quantized = quantize(model, get_scheme("int4"), "rtn")
    names = linear_names(model)
    assert set(quantized.weights) == {EMBEDDING, *names}
    assert len(names) == 7 * model.config.n_layers  # stored blocks, not executed runs
    float_only = quantize(model, get_scheme("fp32"))
    assert float_only.weights == {}
    with pytest.raises(UnsupportedError, match="unknown quantization method"):
        quantize(model, get_scheme("int4"), "gptq-someday")
    with pytest.raises(UnsupportedError, match="not a multiple of the quantization group"):
        METHODS["rtn"](torch.zeros(4, 48), INT4_G32)


def test_an_all_zero_group_round_trips():
    q = METHODS["mse"](torch.zeros(2, 64), WeightFormat(4, 32, "bf16"))
    assert torch.equal(q.dequantize(), torch.zeros(2, 64))


def test_auto_calibrates_4_bit_linears_when_there_is_text():
    from mobilellm_export.quant.schemes import resolve_method

    assert resolve_method("auto", get_scheme("int4"), has_text=True) == "gptq"
    assert resolve_method("auto", get_scheme("int4-asym"), has_text=True) == "gptq"
    assert resolve_method("auto", get_scheme("int4"), has_text=False) == "rtn"
    assert resolve_method("auto", get_scheme("int8"), has_text=True) == "gptq"
    assert resolve_method("auto", get_scheme("fp32"), has_text=True) == "rtn"
    assert resolve_method("mse", get_scheme("int4"), has_text=True) == "mse"
