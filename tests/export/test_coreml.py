"""Core ML packages. Core ML executes only on macOS, so on Linux the packages are checked
structurally: interface, states, the MIL program's weights (one const per shared matrix) and
their dequantized values against the reference. The tests marked `macos` run the packages and
are skipped elsewhere (a macOS CI workflow runs them: .github/workflows/coreml-macos.yml)."""

import json
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilellm_export.cli import main
from mobilellm_export.verify import verify_artifact
from mobilellm_export.model.checkpoint import save_checkpoint
from mobilellm_export.runtimes.registry import open_artifact
from mobilellm_export.model.reference import EagerRuntime
from mobilellm_export.runtimes.generate import generate

from ..conftest import PROMPTS, cli_export, exported, random_model, small_config

pytest.importorskip("coremltools")
from mobilellm_export.export.coreml import COMPUTE_UNITS  # noqa: E402
from mobilellm_export.export.coreml.decoder import CoreMLDecoder  # noqa: E402
from mobilellm_export.export.coreml.inspect import load_program  # noqa: E402
from mobilellm_export.export.registry import get_backend  # noqa: E402
from mobilellm_export.runtimes.coreml_runtime import _UNITS, causal_mask  # noqa: E402
from mobilellm_export.runtimes.manifest import read_manifest  # noqa: E402

ON_MACOS = platform.system() == "Darwin"
macos = pytest.mark.skipif(not ON_MACOS, reason="Core ML executes only on macOS")


def export(tmp: Path, *args: str) -> Path:
    return cli_export(tmp, "coreml", *args)


fp16 = exported("coreml", "--quant", "fp16")
int4 = exported("coreml", "--quant", "int4", "--compute-units", "cpu_and_ne", "--method", "rtn")


@pytest.fixture(scope="module")
def int8_small_ls(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("int8")
    save_checkpoint(random_model(small_config(layer_sharing=True, dim=128, ffn_dim=256)), tmp / "ckpt")
    return export(tmp / "out", "--model", str(tmp / "ckpt"), "--quant", "int8", "--max-context", "64"), tmp / "ckpt"



def test_state_module_decodes_like_the_eager_model(embedded):
    """The module that is converted (positions from the input shapes, fp16 state caches) gives
    the eager model's greedy tokens, prompt and decode steps alike."""
    decoder = CoreMLDecoder(embedded.model, 256).eval()
    tok = embedded.require_tokenizer()
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        with torch.no_grad():
            logits = decoder(torch.tensor([ids], dtype=torch.int32), causal_mask(len(ids), len(ids)))
            ours = []
            for _ in range(24):
                ours.append(int(logits.argmax()))
                end = len(ids) + len(ours)
                logits = decoder(torch.tensor([[ours[-1]]], dtype=torch.int32), causal_mask(1, end))
        theirs = generate(EagerRuntime(embedded.model), ids, max_new_tokens=24, eos_ids=()).new_ids
        assert ours == theirs


@pytest.mark.parametrize("name", ["fp16", "int4"])
def test_structural_verification_passes(request, name):
    report = verify_artifact(request.getfixturevalue(name), eval_tokens=512)
    checks = {c.name: c for c in report.checks}
    assert report.passed, [c for c in report.checks if c.passed is False]
    for check in ("checksums", "embedding once", "stored bytes", "interface", "states", "stored weights"):
        assert checks[check].passed is True, check
    if not ON_MACOS:
        assert checks["execution"].passed is None and "macOS" in checks["execution"].detail


def test_ls_blocks_and_shared_embedding_are_single_weights(int8_small_ls):
    directory, _ = int8_small_ls
    manifest = json.loads((directory / "manifest.json").read_text())
    config = manifest["model"]["config"]
    _, program = load_program(directory / "model.mlpackage")
    ops = list(program.functions["main"].operations)
    linears = [op for op in ops if op.op_type == "linear"]
    readers: dict[str, int] = {}
    for op in linears:
        readers[op.weight.op.name] = readers.get(op.weight.op.name, 0) + 1
    # 7 matrices per stored block, each read by the block's two runs; the embedding by the head.
    assert sorted(readers.values()) == [1] + [2] * (7 * config["n_layers"])
    quantized = [op for op in ops if op.op_type == "constexpr_blockwise_shift_scale"]
    assert len(quantized) == 7 * config["n_layers"] + 1
    embedding = [op for op in quantized if op.name.startswith("p_embed_tokens")]
    assert len(embedding) == 1
    assert sorted(c.op_type for c in embedding[0].outputs[0].child_ops) == ["gather", "linear"]
    storage = get_backend("coreml").inspect_storage(read_manifest(directory))
    assert storage.shared_matrix_once
    assert abs(storage.stored_bytes / (manifest["expected_weight_bytes"] + storage.non_weight_bytes) - 1) < 0.03


def test_manifest_records_scheme_and_compute_units(int4, int8_small_ls):
    manifest = json.loads((int4 / "manifest.json").read_text())
    assert manifest["details"]["compute_units"] == "cpu_and_ne" and manifest["roles"] == {"package": "model.mlpackage"}
    assert manifest["runtime"]["kv_cache_bytes_per_value"] == 2  # fp16 states
    # What the exporter offers is what the runtime can load with.
    assert set(COMPUTE_UNITS) == set(_UNITS)
    assert manifest["quantization"]["linear"] == {"bits": 4, "group_size": 32, "scale_dtype": "fp16",
                                                  "symmetric": True}
    # The package's files are covered by the checksums, not just the top-level ones.
    assert any(name.startswith("model.mlpackage/") and name.endswith("weight.bin") for name in manifest["files"])
    int8_manifest = json.loads((int8_small_ls[0] / "manifest.json").read_text())
    assert int8_manifest["quantization"]["linear"]["group_size"] is None  # per channel


def test_a_changed_weight_fails_verification(int8_small_ls, tmp_path):
    import shutil

    directory, checkpoint = int8_small_ls
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    weights = copy / "model.mlpackage" / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    report = verify_artifact(copy, model=str(checkpoint))
    assert not report.passed and report.checks[0].name == "checksums"


def test_unsupported_choices_fail_cleanly(tmp_path, capsys):
    assert main(["--quiet", "export", "--backend", "onnx", "--quant", "int4", "--compute-units", "cpu_only",
                 "--output", str(tmp_path / "b")]) == 2
    assert "coreml backend only" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


@pytest.mark.skipif(ON_MACOS, reason="checks the error shown where Core ML cannot run")
def test_running_off_macos_is_one_clear_error(int4, capsys):
    assert main(["--quiet", "generate", str(int4), "--prompt", "The"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "only on macOS" in err[0]


# -- macOS: run the packages ----------------------------------------------------------------------

@pytest.mark.macos
@macos
def test_fp16_greedy_tokens_match_eager(fp16, embedded):
    """fp16 weights and fp16 compute against the fp32 eager model: the first 16 greedy tokens of
    every prompt must be equal (fp16 rounding may flip a near-tie later)."""
    runtime = open_artifact(fp16).runtime
    tok = embedded.require_tokenizer()
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        ours = generate(runtime, ids, max_new_tokens=16, eos_ids=()).new_ids
        theirs = generate(EagerRuntime(embedded.model), ids, max_new_tokens=16, eos_ids=()).new_ids
        assert ours == theirs


@pytest.mark.macos
@macos
@pytest.mark.parametrize("name", ["fp16", "int4"])
def test_verify_runs_the_package(request, name):
    report = verify_artifact(request.getfixturevalue(name), eval_tokens=1024)
    assert report.passed, [c for c in report.checks if c.passed is False]
    assert "agreement" in report.figures


def test_stored_weights_are_the_stages_codes(int8_small_ls):
    """Every constexpr holds the quantization stage's codes and its scales (fp16), not numbers
    coremltools chose."""
    from mobilellm_export.export.coreml.convert import const_name
    from mobilellm_export.model.sources import load_model
    from mobilellm_export.quant.schemes import get_scheme
    from mobilellm_export.quant.stage import quantize

    directory, checkpoint = int8_small_ls
    _, program = load_program(directory / "model.mlpackage")
    ops = {op.name: op for op in program.functions["main"].operations}
    quantized = quantize(load_model(str(checkpoint)).model, get_scheme("int8"), "rtn")
    for name, weight in quantized.weights.items():
        op = ops[const_name(name) + "_quantized"]
        assert op.op_type == "constexpr_blockwise_shift_scale"
        np.testing.assert_array_equal(op.data.val.astype(np.int8), weight.codes.numpy())
        np.testing.assert_array_equal(op.scale.val, weight.scales.numpy().astype(np.float16))
