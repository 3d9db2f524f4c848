"""ONNX artifacts, checked against the eager model, onnxruntime-genai (which nobody here wrote)
and the initializers the file holds."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilellm_export.cli import main
from mobilellm_export.export.onnx.weights import block_layout, dequantize_blockwise
from mobilellm_export.export.registry import get_backend
from mobilellm_export.model.checkpoint import save_checkpoint
from mobilellm_export.model.sources import load_model
from mobilellm_export.quant.methods import METHODS
from mobilellm_export.quant.schemes import WeightFormat, get_scheme
from mobilellm_export.quant.stage import quantize
from mobilellm_export.runtimes.manifest import read_manifest
from mobilellm_export.runtimes.registry import open_artifact
from mobilellm_export.model.reference import EagerRuntime
from mobilellm_export.runtimes.generate import generate
from mobilellm_export.verify import verify_artifact

from ..conftest import PROMPTS, assert_quality, cli_export, exported, random_model, small_config

onnx = pytest.importorskip("onnx")


def export(tmp: Path, *args: str) -> Path:
    return cli_export(tmp, "onnx", *args)


fp32 = exported("onnx", "--quant", "fp32")
# Round to nearest: quick, and the quality bounds below hold for it; the default (gptq) is
# exported by the ExecuTorch tests and `make demo`.
int8 = exported("onnx", "--quant", "int8", "--method", "rtn")
int4 = exported("onnx", "--quant", "int4", "--method", "rtn")


def greedy_pairs(runtime, reference, prompts, n=32):
    for ids in prompts:
        yield (generate(runtime, ids, max_new_tokens=n, eos_ids=()).new_ids,
               generate(reference, ids, max_new_tokens=n, eos_ids=()).new_ids)


def test_fp32_greedy_tokens_equal_eager_on_the_embedded_ls_model(fp32, embedded):
    tok = embedded.require_tokenizer()
    runtime = open_artifact(fp32).runtime
    for ours, theirs in greedy_pairs(runtime, EagerRuntime(embedded.model), [tok.encode(p) for p in PROMPTS]):
        assert ours == theirs


@pytest.mark.parametrize("layer_sharing", [False, True])
def test_fp32_greedy_tokens_equal_eager_on_small_models(tmp_path, layer_sharing):
    model = random_model(small_config(layer_sharing=layer_sharing))
    save_checkpoint(model, tmp_path / "ckpt")
    directory = export(tmp_path / "out", "--model", str(tmp_path / "ckpt"), "--quant", "fp32", "--max-context", "64")
    runtime = open_artifact(directory).runtime
    prompts = [[5, 17, 200, 3], [42] * 9]
    for ours, theirs in greedy_pairs(runtime, EagerRuntime(load_model(str(tmp_path / "ckpt"), max_context=64).model),
                                     prompts, n=40):
        assert ours == theirs
    # Full-sequence logits too (the perplexity path), against the eager model without a cache.
    ids = list(range(3, 60))
    eager = EagerRuntime(model).logits_all(ids)
    assert torch.allclose(runtime.logits_all(ids), eager, atol=1e-4)


def test_ls_model_has_a_cache_entry_per_executed_block_and_weights_once(fp32, embedded):
    proto = onnx.load(str(fp32 / "model.onnx"))
    config = embedded.config
    past = [i.name for i in proto.graph.input if i.name.startswith("past_key_values.")]
    assert len(past) == 2 * config.n_executed_layers == 4 * config.n_layers
    names = [t.name for t in proto.graph.initializer]
    assert len(names) == len(set(names))
    # Each stored block's qkv weight is read by the two runs of that block, and by nothing else.
    readers = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.name)
    for b in range(config.n_layers):
        assert sorted(readers[f"layers.{b}.attn.qkv"]) == [f"run{2 * b}/qkv", f"run{2 * b + 1}/qkv"]
    assert sum(1 for n in names if n.endswith(".attn.qkv")) == config.n_layers


def test_onnx_checker_passes_with_full_checking(fp32, int4):
    for directory in (fp32, int4):
        onnx.checker.check_model(str(directory / "model.onnx"), full_check=True)


@pytest.mark.parametrize("name", ["fp32", "int8", "int4"])
def test_shared_embedding_is_stored_once(request, name):
    directory = request.getfixturevalue(name)
    manifest = json.loads((directory / "manifest.json").read_text())
    storage = get_backend("onnx").inspect_storage(read_manifest(directory))
    assert storage.shared_matrix_once
    (readers,) = storage.shared_matrix_readers.values()
    assert sorted(readers)[0] == "embed/Gather" and len(readers) == 2  # lookup + output projection
    # Only the shared matrix (and, quantized, its scales) has a vocabulary-sized first dimension:
    # no stale float copy after quantization.
    vocab = manifest["model"]["config"]["vocab_size"]
    proto = onnx.load(str(directory / "model.onnx"))
    vocab_sized = [t.name for t in proto.graph.initializer if t.dims and t.dims[0] == vocab]
    assert len(vocab_sized) == (1 if name == "fp32" else 2)
    expected = manifest["expected_weight_bytes"] + storage.non_weight_bytes
    assert abs(storage.stored_bytes / expected - 1) < 0.01
    second_copy = manifest["model"]["parameters"]["embedding"] * manifest["quantization"]["embedding"]["bits"] / 8
    file_bytes = sum(p.stat().st_size for p in directory.glob("model.onnx*"))
    assert file_bytes < expected + 0.5 * second_copy


@pytest.mark.parametrize("fmt", [WeightFormat(4, 32, "bf16"), WeightFormat(8), WeightFormat(4, 32, "bf16", symmetric=False),
                                 WeightFormat(8, 32, symmetric=False)], ids=lambda f: f.describe())
def test_block_layout_is_what_the_operator_computes_with(fmt):
    """The stage's codes in MatMulNBits' layout (zero points included, per-channel rows spread over
    blocks of 64): onnxruntime's own kernel multiplies by exactly the stage's dequantized weight."""
    weight = torch.from_numpy(np.random.default_rng(0).standard_normal((48, 128)).astype(np.float32))
    quantized = METHODS["rtn"](weight, fmt)
    stored = block_layout(quantized, row_block=64)
    block = fmt.group_size or 64
    assert stored.packed.shape == (48, 128 // block, block * fmt.bits // 8) and stored.packed.dtype == np.uint8
    restored = dequantize_blockwise(stored.packed, stored.scales, fmt.bits, stored.zero_points)
    np.testing.assert_array_equal(restored, quantized.dequantize().numpy())
    from onnx import TensorProto, helper
    import onnxruntime as ort

    inputs = ["x", "B", "s"] + (["z"] if stored.zero_points is not None else [])
    node = helper.make_node("MatMulNBits", inputs, ["y"], domain="com.microsoft", K=128, N=48, bits=fmt.bits,
                            block_size=block)
    initializers = [onnx.numpy_helper.from_array(stored.packed, "B"), onnx.numpy_helper.from_array(stored.scales, "s")]
    if stored.zero_points is not None:
        initializers.append(onnx.numpy_helper.from_array(stored.zero_points, "z"))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 128])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 48])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    x = np.random.default_rng(1).standard_normal((2, 128)).astype(np.float32)
    (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, x @ restored.T, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("quant", ["int4", "int4-asym", "int8"])
def test_stored_weights_are_the_stages_codes(tmp_path, quant):
    """Every quantized matrix in the file dequantizes to exactly the stage's codes x scales."""
    model = random_model(small_config(max_seq_len=64))
    save_checkpoint(model, tmp_path / "ckpt")
    directory = export(tmp_path / "out", "--model", str(tmp_path / "ckpt"), "--quant", quant, "--method", "mse")
    manifest = read_manifest(directory)
    quantized = quantize(load_model(str(tmp_path / "ckpt")).model, get_scheme(quant), "mse")
    proto = onnx.load(str(directory / "model.onnx"))
    init = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    bits = manifest.quantization["linear"]["bits"]
    for b in range(model.config.n_layers):
        parts = [quantized.weight(f"layers.{b}.self_attn.{p}_proj.weight") for p in "qkv"]
        expected = torch.cat([p.dequantize() for p in parts]).numpy()
        name = f"layers.{b}.attn.qkv"
        stored = dequantize_blockwise(init[name + "_Q"], init[name + "_scales"], bits, init.get(name + "_zero_points"))
        np.testing.assert_array_equal(stored, expected)
    emb = quantized.embedding
    emb_bits = manifest.quantization["embedding"]["bits"]
    stored = dequantize_blockwise(init["embed_tokens_Q"].reshape(emb.codes.shape[0], -1, 32 * emb_bits // 8),
                                  init["embed_tokens_scales"], emb_bits)
    np.testing.assert_array_equal(stored, emb.dequantize().numpy())
    assert manifest.quantization["stage"]["method"] == "mse"


def test_onnxruntime_genai_generates_from_the_directory(int4, embedded):
    og = pytest.importorskip("onnxruntime_genai")
    model = og.Model(str(int4))
    tokenizer = og.Tokenizer(model)
    ids = embedded.require_tokenizer().encode(PROMPTS[0])
    assert list(tokenizer.encode(PROMPTS[0])) == ids[1:]  # ours adds BOS; genai's encode does not
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 24, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    theirs = []
    while not generator.is_done():
        generator.generate_next_token()
        theirs.append(int(generator.get_next_tokens()[0]))
    ours = generate(open_artifact(int4).runtime, ids, max_new_tokens=len(theirs), eos_ids=(embedded.config.eos_id,))
    assert theirs[: len(ours.new_ids)] == ours.new_ids and len(theirs) >= 2
    assert tokenizer.decode(theirs).strip()


@pytest.mark.parametrize("name,min_agreement,max_ppl", [("int8", 0.90, 0.05), ("int4", 0.80, 0.15)])
def test_quantized_artifacts_keep_quality(request, name, min_agreement, max_ppl):
    assert_quality(request.getfixturevalue(name), min_agreement, max_ppl)


def test_unsupported_choices_fail_cleanly(tmp_path, capsys):
    assert main(["export", "--backend", "onnx", "--quant", "int3", "--output", str(tmp_path / "a")]) == 2
    assert "int3" in capsys.readouterr().err
    # A group size that does not divide the model's width: one line, nothing left behind.
    assert main(["--quiet", "export", "--backend", "onnx", "--quant", "int4", "--group-size", "128",
                 "--output", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not divide" in err[0]
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_verify_finds_the_reference_from_any_directory(tmp_path, monkeypatch):
    """The manifest records a checkpoint typed as a relative path by its absolute path, so
    verify loads the same reference wherever it runs; another model is refused by architecture."""
    save_checkpoint(random_model(small_config(max_seq_len=64)), tmp_path / "ckpt")
    monkeypatch.chdir(tmp_path)
    directory = export(Path("out"), "--model", "ckpt", "--quant", "fp32")
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["model"]["source"] == str((tmp_path / "ckpt").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert verify_artifact(tmp_path / directory, eval_tokens=128).passed
    save_checkpoint(random_model(small_config(max_seq_len=64, n_layers=2)), tmp_path / "other")
    report = verify_artifact(tmp_path / directory, model=str(tmp_path / "other"), eval_tokens=128)
    assert not report.passed and [c.name for c in report.checks if c.passed is False] == ["reference"]


def test_verify_judges_quantized_agreement_only_on_trained_weights(tmp_path):
    """On random weights top-1 agreement of an int4 artifact is reported, not judged (its bound is
    for trained weights); the float artifact of the same random model is still held to its bound."""
    save_checkpoint(random_model(small_config(max_seq_len=64)), tmp_path / "ckpt", synthetic=True)
    reports = {}
    for quant in ("fp32", "int4"):
        directory = export(tmp_path / quant, "--model", str(tmp_path / "ckpt"), "--quant", quant, "--method", "rtn")
        reports[quant] = {c.name: c for c in verify_artifact(directory, eval_tokens=256).checks}
    assert reports["fp32"]["top-1 agreement"].passed is True
    assert reports["int4"]["top-1 agreement"].passed is None
    assert "bound is for trained weights" in reports["int4"]["top-1 agreement"].detail
    assert reports["int4"]["stored bytes"].passed and reports["int4"]["embedding once"].passed
