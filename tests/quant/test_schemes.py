import pytest

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.model.config import get_preset
from mobilellm_export.quant.schemes import SCHEMES, WeightFormat, expected_weight_bytes, get_scheme, weight_shapes

from ..conftest import small_config


@pytest.mark.parametrize("config", [get_preset("125M"), get_preset("125M-LS"), small_config(share_embedding=False)])
def test_stored_shapes_cover_every_unique_parameter_once(config):
    assert sum(r * c for _, r, c in weight_shapes(config)) == config.parameter_counts()["unique"]


def test_expected_bytes_for_125m():
    config = get_preset("125M")
    params = config.parameter_counts()["unique"]
    assert expected_weight_bytes(config, SCHEMES["fp32"]) == 4 * params
    assert expected_weight_bytes(config, SCHEMES["fp16"]) == 2 * params
    # int4 linears in groups of 32 with bf16 scales: half a byte plus 2/32 bytes per weight; the
    # shared matrix int8 with one fp32 scale per row; norms fp32.
    norms = 61 * 576
    shared = 32000 * 576
    expected = (params - norms - shared) * (0.5 + 2 / 32) + shared + 32000 * 4 + norms * 4
    assert expected_weight_bytes(config, SCHEMES["int4"]) == pytest.approx(expected, rel=1e-9)
    # LS shares weights: the same bytes although twice the blocks run.
    assert expected_weight_bytes(get_preset("125M-LS"), SCHEMES["int4"]) == expected_weight_bytes(config, SCHEMES["int4"])


def test_formats_and_overrides():
    assert WeightFormat(8).nbytes(10, 64) == 10 * 64 + 10 * 4
    assert WeightFormat(4, 32).nbytes(2, 64) == 64 + 2 * 2 * 4
    scheme = get_scheme("int4").with_group_size(128).with_embedding(WeightFormat(8))
    assert scheme.linear.group_size == 128 and scheme.embedding == WeightFormat(8)
    assert scheme.linear.scale_dtype == "bf16" and scheme.to_dict()["dynamic_activations"] is False
    # Asymmetric formats store a zero point of `bits` per group on top of the scales.
    assert WeightFormat(4, 32, symmetric=False).nbytes(2, 64) == 64 + 2 * 2 * 4 + 2 * 1
    with pytest.raises(UnsupportedError, match="unknown quantization scheme"):
        get_scheme("int3")
    with pytest.raises(UnsupportedError):
        WeightFormat(3)
