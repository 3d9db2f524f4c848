"""GPTQ: error compensation through the calibration inputs' Hessian."""

import torch

from mobilellm_export.progress import Progress
from mobilellm_export.quant.gptq import HessianHook, gptq_model
from mobilellm_export.quant.methods import METHODS
from mobilellm_export.quant.gptq import gptq_matrix
from mobilellm_export.quant.schemes import INT4_G32, get_scheme
from mobilellm_export.quant.stage import linear_names

from ..conftest import random_model, small_config


def correlated_inputs(n=2048, cols=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(cols, cols, generator=g) * torch.linspace(2.0, 0.05, cols)  # a few strong directions
    return torch.randn(n, cols, generator=g) @ basis


def test_gptq_lowers_the_output_error_that_rtn_leaves():
    x = correlated_inputs()
    w = torch.randn(48, 96, generator=torch.Generator().manual_seed(1))
    hook = HessianHook(96)
    hook(None, (x,), None)
    gptq = gptq_matrix(w, hook.h, INT4_G32)
    rtn = METHODS["rtn"](w, INT4_G32)
    out = x @ w.T
    err_gptq = (x @ gptq.dequantize().T - out).pow(2).mean()
    err_rtn = (x @ rtn.dequantize().T - out).pow(2).mean()
    assert err_gptq < 0.7 * err_rtn
    # A plain group-quantized matrix: codes in range, bf16-exact scales.
    assert -8 <= int(gptq.codes.min()) and int(gptq.codes.max()) <= 7
    assert torch.equal(gptq.scales, gptq.scales.to(torch.bfloat16).float())


def test_hessian_counts_each_input_once_and_every_call():
    hook = HessianHook(8)
    x = torch.randn(4, 8)
    hook(None, (x,), None)
    hook(None, (x,), None)  # the same tensor seen by a second layer (q, k, v): counted once
    assert hook.n == 4
    hook(None, (torch.randn(4, 8),), None)  # the block's second run (LS): accumulated
    assert hook.n == 8


def test_ls_blocks_get_one_set_of_codes_from_both_runs():
    model = random_model(small_config(layer_sharing=True, n_layers=2))
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(3, model.config.vocab_size, (4, 32), generator=g).tolist()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    codes = gptq_model(model, get_scheme("int4"), linear_names(model), windows, None, Progress(quiet=True))
    assert set(codes) == {n for n, p in model.layers.named_parameters(prefix="layers") if p.ndim == 2}
    # The float model is left as it was, bit for bit (each block is quantized in its own copy).
    assert not torch.equal(codes["layers.0.mlp.up_proj.weight"].dequantize(), model.layers[0].mlp.up_proj.weight)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_calibration_text_from_a_file_is_windowed_and_recorded(tmp_path, embedded):
    from mobilellm_export.errors import UnsupportedError
    from mobilellm_export.quant.calibration import calibration

    text = tmp_path / "text.txt"
    text.write_text("Return the number of items in the container. " * 400, encoding="utf-8")
    tokenizer = embedded.require_tokenizer()
    first = calibration(tokenizer, text_file=text, count=4, window=64)
    assert len(first.windows) == 4 and all(len(w) == 64 for w in first.windows)
    assert first.record() == {"source": str(text.resolve()), "sha256": first.sha256, "tokens": 256, "windows": 4}
    assert calibration(tokenizer, text_file=text, count=4, window=64).sha256 == first.sha256
    short = tmp_path / "short.txt"
    short.write_text("too short", encoding="utf-8")
    import pytest

    with pytest.raises(UnsupportedError, match="fewer than 64 tokens"):
        calibration(tokenizer, text_file=short, window=64)


def test_gptq_takes_models_with_a_context_shorter_than_the_calibration_windows():
    """The default windows are 256 tokens; a model of 64 positions gets them in pieces of 64."""
    from mobilellm_export.quant.calibration import Calibration
    from mobilellm_export.quant.schemes import get_scheme
    from mobilellm_export.quant.stage import quantize

    from ..conftest import random_model, small_config

    model = random_model(small_config(max_seq_len=64))
    windows = [[(7 * i + j) % 257 for j in range(256)] for i in range(4)]
    quantized = quantize(model, get_scheme("int4"), "gptq", calibration=Calibration(windows, "test", "0" * 64))
    assert quantized.method == "gptq"
    assert all(w.codes.abs().max() <= 8 for w in quantized.weights.values() if w.fmt.bits == 4)
