"""MobileLLM-R1 (Llama4-text) through every backend, checked against transformers' Llama4ForCausalLM.

One small checkpoint written by transformers carries every switch the backends must compute: qk
norm on RoPE blocks (adjacent pairs, permuted on load), a NoPE block whose queries take the
temperature (floor_scale 4, so it changes every few positions), three stop tokens and a chat
template. Each backend's fp32 artifact must generate transformers' own greedy tokens.
"""

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from mobilellm_export.cli import main
from mobilellm_export.runtimes.registry import open_artifact
from mobilellm_export.runtimes.generate import generate
from mobilellm_export.runtimes.manifest import read_manifest
from mobilellm_export.verify import verify_artifact

from ..conftest import cli_export
from ..model.test_llama4 import BASE

transformers = pytest.importorskip("transformers")

SWITCHES = dict(BASE, vocab_size=4096, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                intermediate_size=128, intermediate_size_mlp=128, max_position_embeddings=256, eos_token_id=[2, 3],
                rope_theta=8e6, use_qk_norm=True, no_rope_layers=[1, 0, 1], attn_temperature_tuning=True,
                attn_scale=0.5, floor_scale=4, attention_chunk_size=32768)
CHAT_TEMPLATE = "{{ 'Please reason step-by-step.' }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
PROMPTS = ([1, 17, 200, 3000, 9], [1] + [42] * 11, [1, 4000, 5, 6])


@pytest.fixture(scope="module")
def r1(tmp_path_factory) -> tuple[object, Path]:
    from mobilellm_export.model.sources import embedded_dir

    torch.manual_seed(0)
    model = transformers.Llama4ForCausalLM(transformers.Llama4TextConfig(**SWITCHES)).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    directory = tmp_path_factory.mktemp("r1") / "ckpt"
    model.save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(embedded_dir() / name, directory / name)
    (directory / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return model, directory


def hf_greedy(model, ids: list[int], n: int = 24) -> list[int]:
    with torch.no_grad():
        return model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)[0, len(ids):].tolist()


def export(tmp: Path, checkpoint: Path, backend: str, *args: str) -> Path:
    return cli_export(tmp, backend, "--model", str(checkpoint), "--max-context", "64", *args)


def reference_for(model, backend: str):
    """transformers' model on the weights the artifact holds: Core AI's fp16 scheme stores every
    weight in fp16, so its reference is the same model with fp16-rounded weights."""
    if backend != "coreai":
        return model
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for param in rounded.parameters():
            param.copy_(param.half().float())
    return rounded


@pytest.mark.parametrize("backend, args", [
    ("executorch", ("--quant", "fp32")),
    ("onnx", ("--quant", "fp32")),
    ("coreai", ("--quant", "fp16", "--compute-precision", "fp32")),
])
def test_float_artifacts_generate_transformers_greedy_tokens(tmp_path, r1, backend, args):
    model, checkpoint = r1
    directory = export(tmp_path, checkpoint, backend, *args)
    reference = reference_for(model, backend)
    runtime = open_artifact(directory).runtime
    for ids in PROMPTS:
        expected = hf_greedy(reference, ids)
        assert len(set(expected)) >= 6, "the reference output is too degenerate to compare"
        assert generate(runtime, ids, max_new_tokens=24, eos_ids=()).new_ids == expected
    manifest = read_manifest(directory)
    assert manifest.runtime.eos_ids == (2, 3) and "chat_template.jinja" in manifest.files
    if backend == "onnx":  # onnxruntime-genai reads the stop tokens from its own config
        assert json.loads((directory / "genai_config.json").read_text())["model"]["eos_token_id"] == [2, 3]


def assert_stored_once_and_to_size(directory: Path) -> None:
    """verify's storage checks: the shared matrix once, stored bytes within 2% of unique
    parameters x bits + scales. (Its quality thresholds are for trained weights: this random
    model's near-uniform logits leave int4's top-1 to chance.)"""
    report = verify_artifact(directory, eval_tokens=512)
    checks = {c.name: c for c in report.checks}
    assert checks["checksums"].passed and checks["embedding once"].passed and checks["stored bytes"].passed
    ratio = report.figures["stored_bytes"] / report.figures["expected_bytes"]
    assert abs(ratio - 1) < 0.02, ratio


def test_executorch_int4_names_every_stop_token_for_the_runner_and_the_app(tmp_path, r1):
    from executorch.runtime import Runtime

    directory = export(tmp_path, r1[1], "executorch", "--quant", "int4", "--method", "rtn")
    program = Runtime.get().load_program(directory / "model.pte")
    assert list(program.load_method("get_eos_ids").execute([])) == [2, 3]  # what the C++ runner reads
    assert_stored_once_and_to_size(directory)
    # The stock C++ runner (Android's LlmModule, the iOS demo) runs it like our adapter does.
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

    from mobilellm_export.runtimes.executorch_runtime import load_executorch_kernels

    load_executorch_kernels()
    opened = open_artifact(directory)
    tok = opened.require_tokenizer()
    # The runner hands each token's bytes to Python as str, which fails on a token that ends inside
    # a UTF-8 character (random weights emit such byte tokens): compare on a prompt whose
    # continuation has none.
    for prompt in ("Return the number of", "The default value is", "This module provides", "If the", "A list of",
                   "The file", "When", "Each", "An object", "See also"):
        expected = generate(opened.runtime, tok.encode(prompt), max_new_tokens=20, eos_ids=tok.eos_ids).new_ids
        if all("\ufffd" not in tok.decode([t]) for t in expected):
            break
    else:
        pytest.fail("every continuation holds a partial UTF-8 token")
    runner = TextLLMRunner(str(directory / "model.pte"), str(directory / "tokenizer.json"), str(directory / "model.ptd"))
    pieces: list[str] = []
    runner.generate(prompt, GenerationConfig(max_new_tokens=20, temperature=0.0, echo=False, num_bos=1),
                    token_callback=pieces.append)
    assert "".join(pieces).replace("</s>", "") == tok.decode(expected)
    assert main(["--quiet", "bundle", str(directory), "--app", "android", "--into", str(tmp_path / "app")]) == 0
    bundle = tmp_path / "app" / "model"
    assert json.loads((bundle / "bundle.json").read_text())["eos_ids"] == [2, 3]
    assert (bundle / "chat_template.jinja").read_text() == CHAT_TEMPLATE


@pytest.mark.parametrize("backend", ["onnx", "coreml"])
def test_int4_artifacts_store_the_shared_matrix_once(tmp_path, r1, backend):
    assert_stored_once_and_to_size(export(tmp_path, r1[1], backend, "--quant", "int4", "--method", "rtn"))


def test_chunks_shorter_than_the_context_are_refused_with_one_line(tmp_path, r1, capsys):
    _, checkpoint = r1
    chunked = tmp_path / "chunked"
    shutil.copytree(checkpoint, chunked)
    config = json.loads((chunked / "config.json").read_text())
    config.update(attention_chunk_size=16, layer_types=None)
    (chunked / "config.json").write_text(json.dumps(config))
    code = main(["--quiet", "export", "--backend", "onnx", "--quant", "fp32", "--model", str(chunked),
                 "--max-context", "64", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "chunks of 16 positions" in err[0] and "--max-context 16" in err[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
