"""ExecuTorch artifacts, checked against the eager model, ExecuTorch's own LLM runner and the
artifact's stored bytes. Each artifact is exported once per module (the slow part)."""

import json
from pathlib import Path

import pytest
import torch

from mobilellm_export.cli import main
from mobilellm_export.export.registry import get_backend
from mobilellm_export.verify import verify_artifact
from mobilellm_export.model.checkpoint import save_checkpoint
from mobilellm_export.runtimes.manifest import read_manifest
from mobilellm_export.runtimes.registry import open_artifact
from mobilellm_export.model.reference import EagerRuntime
from mobilellm_export.runtimes.generate import generate

from ..conftest import PROMPTS, cli_export, exported, random_model, run_blocked, small_config

pytest.importorskip("executorch")


def export(tmp: Path, *args: str) -> Path:
    return cli_export(tmp, "executorch", *args)


fp32 = exported("executorch", "--quant", "fp32")
@pytest.fixture(scope="module")
def small_ls(tmp_path_factory) -> Path:
    """A small random layer-sharing checkpoint with the embedded tokenizer (2 blocks, each run
    twice): the quantized artifacts are tested on it, since XNNPACK's lowering of the embedded
    model takes over three minutes per scheme here. `make demo` verifies the embedded model's."""
    import shutil

    from mobilellm_export.model.sources import embedded_dir

    directory = tmp_path_factory.mktemp("small-ls") / "ckpt"
    save_checkpoint(random_model(small_config(vocab_size=4096, dim=64, n_layers=2, layer_sharing=True)), directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(embedded_dir() / name, directory / name)
    return directory


@pytest.fixture(scope="module")
def int4(tmp_path_factory, small_ls) -> Path:
    return export(tmp_path_factory.mktemp("executorch-int4"), "--model", str(small_ls), "--quant", "int4")


@pytest.fixture(scope="module")
def int8(tmp_path_factory, small_ls) -> Path:
    return export(tmp_path_factory.mktemp("executorch-int8"), "--model", str(small_ls), "--quant", "int8",
                  "--method", "rtn")


def test_fp32_greedy_tokens_equal_eager_on_the_embedded_ls_model(fp32, embedded):
    artifact = open_artifact(fp32)
    tok = embedded.require_tokenizer()
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        ours = generate(artifact.runtime, ids, max_new_tokens=40, eos_ids=(2,)).new_ids
        assert ours == generate(EagerRuntime(embedded.model), ids, max_new_tokens=40, eos_ids=(2,)).new_ids
        assert len(ours) > 5


def test_fp32_greedy_tokens_equal_eager_on_a_non_ls_model(tmp_path):
    model = random_model(small_config(vocab_size=300, max_seq_len=64))
    save_checkpoint(model, tmp_path / "ckpt")
    directory = export(tmp_path / "out", "--model", str(tmp_path / "ckpt"), "--quant", "fp32")
    runtime = open_artifact(directory).runtime
    for prompt in ([1, 5, 9], [1, 200, 7, 7, 3]):
        assert generate(runtime, prompt, max_new_tokens=30).new_ids == generate(EagerRuntime(model), prompt, max_new_tokens=30).new_ids
    # Prefill logits agree closely, not only their argmax.
    assert (runtime.forward([1, 2, 3, 4], 0) - EagerRuntime(model).forward([1, 2, 3, 4], 0)).abs().max() < 1e-4


def test_executorch_text_llm_runner_generates_like_eager(fp32, embedded):
    """The stock C++ runner (the one Android's LlmModule and the iOS demo use) loads the
    artifact with its tokenizer and weights file and produces the eager greedy continuation."""
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

    from mobilellm_export.runtimes.executorch_runtime import load_executorch_kernels

    load_executorch_kernels()
    runner = TextLLMRunner(str(fp32 / "model.pte"), str(fp32 / "tokenizer.json"), str(fp32 / "model.ptd"))
    pieces, stats = [], []
    runner.generate(PROMPTS[0], GenerationConfig(max_new_tokens=24, temperature=0.0, echo=False, num_bos=1),
                    token_callback=pieces.append, stats_callback=lambda s: stats.append(json.loads(s.to_json_string())))
    tok = embedded.require_tokenizer()
    expected = generate(EagerRuntime(embedded.model), tok.encode(PROMPTS[0]), max_new_tokens=24, eos_ids=(2,)).new_ids
    assert "".join(pieces).replace("</s>", "") == tok.decode(expected)
    assert stats[0]["prompt_tokens"] == len(tok.encode(PROMPTS[0]))  # BOS included, as in training


def test_runner_metadata(fp32):
    runtime = open_artifact(fp32).runtime
    assert runtime.constant("get_max_seq_len") == 256 and runtime.constant("get_vocab_size") == 4096
    assert runtime.constant("get_bos_id") == 1 and runtime.constant("get_eos_ids") == 2
    assert runtime.constant("use_kv_cache") is True and runtime.constant("enable_dynamic_shape") is True
    assert runtime.constant("get_n_layers") == 10  # executed blocks, each with its own cache


@pytest.mark.parametrize("name", ["fp32", "int4", "int8"])
def test_shared_embedding_is_stored_once(request, name):
    directory = request.getfixturevalue(name)
    manifest = json.loads((directory / "manifest.json").read_text())
    storage = get_backend("executorch").inspect_storage(read_manifest(directory))
    # The lookup's constants and XNNPACK's output-projection blobs are one buffer each.
    assert storage.shared_matrix_once
    assert storage.shared_matrix_readers and all(storage.shared_matrix_readers.values())
    # The weights file holds unique parameters x bits + scales (plus the RoPE tables), exactly.
    expected = manifest["expected_weight_bytes"] + storage.non_weight_bytes
    assert abs(storage.stored_bytes / expected - 1) < 0.01
    embedding = manifest["model"]["parameters"]["embedding"]
    bits = manifest["quantization"]["embedding"]["bits"]
    second_copy = embedding * bits / 8
    assert (directory / "model.ptd").stat().st_size < expected + 0.5 * second_copy


def test_ls_blocks_are_stored_once(fp32):
    """10 executed blocks, 5 stored: the weights file is no bigger than the unique parameters."""
    manifest = json.loads((fp32 / "manifest.json").read_text())
    counts = manifest["model"]["parameters"]
    assert counts["executed"] > 1.5 * counts["unique"]
    assert (fp32 / "model.ptd").stat().st_size < 4 * counts["unique"] * 1.02


@pytest.mark.parametrize("name, max_ppl, min_agreement", [("int8", 0.01, 0.80), ("int4", 0.02, 0.0)])
def test_quantized_artifacts_track_their_float_model(request, name, max_ppl, min_agreement):
    """A random model's next-token distributions are nearly flat, so verify's bounds (set on
    trained models) do not apply and rounding flips top tokens (int4: under a third agree): the
    artifact's perplexity must still track its float model's (measured: int8 +0.3%, int4 +0.1%).
    Quality on trained weights: `make demo` (embedded model) and `make bench` (real weights)."""
    figures = verify_artifact(request.getfixturevalue(name), eval_tokens=2048).figures
    assert figures["perplexity_increase"] <= max_ppl and figures["agreement"] >= min_agreement, figures


def test_verify_passes_for_fp32_and_catches_tampering(fp32, tmp_path):
    assert verify_artifact(fp32, eval_tokens=512).passed
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(fp32, copy)
    data = bytearray((copy / "model.ptd").read_bytes())
    data[-100] ^= 0xFF
    (copy / "model.ptd").write_bytes(bytes(data))
    report = verify_artifact(copy)
    assert not report.passed and "model.ptd does not match" in report.checks[0].detail


def test_manifest_records_what_was_built(int4):
    manifest = json.loads((int4 / "manifest.json").read_text())
    assert manifest["backend"] == "executorch" and manifest["model"]["source"].endswith("/ckpt")
    quant = manifest["quantization"]
    assert quant["name"] == "int4" and quant["linear"] == {"bits": 4, "group_size": 32, "scale_dtype": "bf16",
                                                           "symmetric": True}
    assert quant["stage"]["method"] == "gptq" and quant["stage"]["linear"] == quant["linear"]
    assert quant["stage"]["calibration"]["tokens"] == 128 * 256 and len(quant["stage"]["calibration"]["sha256"]) == 64
    assert quant["embedding"]["bits"] == 8 and quant["dynamic_activations"] is True
    assert manifest["runtime"] == {"max_context": 128, "vocab_size": 4096, "bos_id": 1, "eos_ids": [2],
                                   "tokenizer": "tokenizer.json", "kv_cache_bytes_per_value": 4}
    assert manifest["roles"] == {"program": "model.pte", "data": "model.ptd"}
    assert set(manifest["files"]) == {"model.pte", "model.ptd", "tokenizer.json", "tokenizer_config.json"}
    assert {"torch", "executorch", "torchao"} <= set(manifest["versions"])
    # 4096 x 64 shared matrix + 2 blocks of (q, k, v, o, gate, up, down) + norms, once each.
    assert manifest["model"]["parameters"]["unique"] == 4096 * 64 + 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 96 + 2 * 64) + 64
    assert manifest["model"]["parameters"]["executed"] > manifest["model"]["parameters"]["unique"]


def test_generate_cli_runs_an_artifact(fp32, capsys):
    assert main(["--quiet", "generate", str(fp32), "--prompt", "The default value is", "--max-new-tokens", "12",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["runtime"] == "executorch-xnnpack" and len(result["token_ids"]) >= 1


def test_executorch_artifacts_run_without_the_lowering_stack(fp32, tmp_path):
    """generate, verify and bench open the .pte through executorch.runtime alone: the XNNPACK
    partitioner, torchao and coremltools cannot even be imported. (executorch.runtime itself
    imports parts of executorch.exir; that is ExecuTorch's own layering.)"""
    blocked = ("executorch.backends.xnnpack", "torchao", "coremltools")
    gen = run_blocked(tmp_path, blocked, "generate", str(fp32), "--prompt", "The default value is",
                      "--max-new-tokens", "8", "--json")
    assert gen.returncode == 0, gen.stderr
    assert json.loads(gen.stdout)["runtime"] == "executorch-xnnpack"
    ver = run_blocked(tmp_path, blocked, "verify", str(fp32), "--eval-tokens", "256")
    assert ver.returncode == 0 and "result: passed" in ver.stdout, ver.stdout + ver.stderr
    bench = run_blocked(tmp_path, blocked, "bench", str(fp32), "--repeats", "1", "--prompt-lengths", "16",
                        "--new-tokens", "4", "--no-quality")
    assert bench.returncode == 0, bench.stdout + bench.stderr


def test_stored_weights_are_the_stages_codes(int4, small_ls):
    """XNNPACK's serialized weights are the quantization stage's codes (int4 linears packed as
    XNNPACK does with bf16 scales, the int8 shared matrix with fp32 scales): nothing was rounded
    again on the way. The default method on a model with a tokenizer is calibrated (gptq)."""
    from executorch.exir._serialize._cord import Cord
    from executorch.extension.flat_tensor.serialize.serialize import FlatTensorSerializer

    from mobilellm_export.export.executorch.decoder import pack_int4_like_xnnpack
    from mobilellm_export.export.pipeline import Quantizer
    from mobilellm_export.progress import Progress
    from mobilellm_export.quant.schemes import get_scheme

    stage = read_manifest(int4).quantization["stage"]
    assert (stage["requested_method"], stage["method"]) == ("auto", "gptq")
    payload = FlatTensorSerializer().deserialize(Cord((int4 / "model.ptd").read_bytes()))
    buffers = {bytes(b) for b in payload.buffers}
    from mobilellm_export.model.sources import load_model

    quantized = Quantizer(load_model(str(small_ls)), Progress(quiet=True))(get_scheme("int4"), "auto")
    assert quantized.method == "gptq" and quantized.embedding.fmt.bits == 8
    for name, weight in quantized.weights.items():
        if weight.fmt.bits == 4:
            assert pack_int4_like_xnnpack(weight.codes).numpy().tobytes() in buffers, name
            assert weight.scales.to(torch.bfloat16).view(torch.int16).numpy().tobytes() in buffers, name
        else:
            assert weight.codes.numpy().tobytes() in buffers, name
            assert weight.scales.numpy().tobytes() in buffers, name


def _lower_into(out, model, quantized, **options):
    """`model` with `quantized`'s codes lowered with `options` and written into `out` (context 64)."""
    import copy

    from mobilellm_export.export.executorch.decoder import build_decoder
    from mobilellm_export.export.executorch.lowering import lower, runner_metadata, write_program
    from mobilellm_export.progress import Progress

    out.mkdir()
    decoder = build_decoder(copy.deepcopy(model), quantized, 64)
    write_program(lower(decoder, runner_metadata(model.config, 64), Progress(quiet=True), **options), out)
    return out


@pytest.mark.parametrize("scheme", ["fp32", "int8", "int4"])
def test_lowering_with_one_xnnpack_pass_computes_what_all_passes_compute(tmp_path, scheme):
    """The export runs XNNPACK's preprocessing with ConvertToLinearPass alone (half the export
    time); the program must compute the same logits, bit for bit, as one lowered with all of
    XNNPACK's passes, through a prefill and decode steps (one block: lowering is slow)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    from mobilellm_export.export.executorch.lowering import DATA_FILE, PROGRAM_FILE
    from mobilellm_export.quant.schemes import get_scheme
    from mobilellm_export.quant.stage import quantize
    from mobilellm_export.runtimes.executorch_runtime import ExecuTorchRuntime

    get_backend("executorch").require()  # registers ExecuTorch's llama:: ops
    model = random_model(small_config(n_layers=1))
    quantized = quantize(model, get_scheme(scheme))
    logits, specs = [], []
    for all_passes in (False, True):
        out = _lower_into(tmp_path / f"all-{all_passes}", model, quantized, all_xnnpack_passes=all_passes)
        delegates = deserialize_pte_binary((out / PROGRAM_FILE).read_bytes()).program.execution_plan[0].delegates
        specs.append({spec.key for delegate in delegates for spec in delegate.compile_specs})
        runtime = ExecuTorchRuntime(out / PROGRAM_FILE, out / DATA_FILE)
        steps = [runtime.forward([5, 17, 99, 3], 0)]
        steps += [runtime.forward([token], 4 + i) for i, token in enumerate((8, 200, 41))]
        logits.append(torch.stack(steps))
    assert specs == [{"dqlinear_partitioner"}, set()]  # the two lowerings did differ
    assert torch.equal(logits[0], logits[1])


def test_downstream_bits_hold_the_stock_viewers_sets():
    """partitioning.DownstreamBits against ExecuTorch's own _DependencyViewer, node by node, on an
    exported decoder's graph."""
    from executorch.exir.backend.canonical_partitioners.group_partitioner import _DependencyViewer

    from mobilellm_export.export.executorch.partitioning import DownstreamBits

    model = random_model(small_config(n_layers=2))
    program = torch.export.export(model, (torch.tensor([[1, 2, 3]]), torch.tensor([0])), strict=False)
    stock, ours = _DependencyViewer(program.graph_module), DownstreamBits(program.graph_module)
    nodes = list(program.graph.nodes)
    assert len(nodes) > 100
    for node in nodes:
        found = list(ours.downstreams_of(node))
        assert len(found) == len(set(found)) and set(found) == stock.downstreams_of(node), node.name


def test_lowering_with_the_lean_partitioner_index_writes_the_same_program(tmp_path, monkeypatch):
    from executorch.exir.backend.canonical_partitioners import group_partitioner

    from mobilellm_export.export.executorch import partitioning
    from mobilellm_export.quant.schemes import get_scheme
    from mobilellm_export.quant.stage import quantize

    built_lean = []

    class Counted(partitioning.DownstreamBits):
        def __init__(self, graph_module):
            built_lean.append(graph_module)
            super().__init__(graph_module)

    monkeypatch.setattr(partitioning, "DownstreamBits", Counted)
    get_backend("executorch").require()
    model = random_model(small_config(n_layers=2))
    quantized = quantize(model, get_scheme("int4"))
    stock_viewer = group_partitioner._DependencyViewer
    programs = []
    for stock in (False, True):
        out = _lower_into(tmp_path / f"stock-{stock}", model, quantized, stock_dependency_index=stock)
        programs.append({p.name: p.read_bytes() for p in out.iterdir()})
        assert group_partitioner._DependencyViewer is stock_viewer  # restored after lowering
        if not stock:
            assert built_lean  # the lean index was the one built
    assert programs[0] == programs[1]
