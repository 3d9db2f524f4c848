"""Core AI assets, executed by coreai-core's runtime (Apple's, a reference nobody here wrote) on
Linux: against the eager model, against the stage's dequantized weights, and read back for what
they store. Exports use small models; fp32 compute except where fp16 compute itself is tested
(the Linux runtime emulates fp16 arithmetic, ten times slower)."""

import copy
import json
from pathlib import Path

import pytest
import torch

from mobilellm_export.cli import main
from mobilellm_export.errors import UnsupportedError
from mobilellm_export.model.checkpoint import save_checkpoint
from mobilellm_export.model.reference import EagerRuntime
from mobilellm_export.model.sources import load_model
from mobilellm_export.runtimes.generate import generate
from mobilellm_export.runtimes.registry import open_artifact
from mobilellm_export.verify import verify_artifact

from ..conftest import PROMPTS, cli_export, random_model, run_blocked, small_config

pytest.importorskip("coreai_torch")
from mobilellm_export.export.coreai.inspect import read_program  # noqa: E402
from mobilellm_export.export.registry import get_backend  # noqa: E402
from mobilellm_export.runtimes.manifest import read_manifest  # noqa: E402

CONFIG = small_config(vocab_size=4096, n_layers=2, layer_sharing=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small layer-sharing model with the embedded model's tokenizer (apps and `generate` need one)."""
    import shutil

    from mobilellm_export.model.sources import embedded_dir

    path = tmp_path_factory.mktemp("ckpt") / "ls"
    save_checkpoint(random_model(CONFIG), path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(embedded_dir() / name, path / name)
    return path


def export(tmp: Path, checkpoint: Path, *args: str) -> Path:
    return cli_export(tmp, "coreai", "--model", str(checkpoint), "--max-context", "64", *args)


@pytest.fixture(scope="module")
def int4(tmp_path_factory, checkpoint) -> Path:
    return export(tmp_path_factory.mktemp("int4"), checkpoint, "--quant", "int4", "--method", "rtn",
                  "--compute-precision", "fp32")


@pytest.fixture(scope="module")
def fp16(tmp_path_factory, checkpoint) -> Path:
    return export(tmp_path_factory.mktemp("fp16"), checkpoint, "--quant", "fp16")


def test_fp16_artifact_decodes_like_the_eager_model(fp16, checkpoint):
    """fp16 weights, fp16 compute and fp16 states (the default, what devices run) on an LS model:
    verify passes and every prompt's greedy tokens equal the fp32 eager model's."""
    report = verify_artifact(fp16, eval_tokens=64)
    checks = {c.name: c for c in report.checks}
    assert report.passed, [c for c in report.checks if c.passed is False]
    assert report.figures["agreement"] >= 0.97
    # Along each prompt's eager greedy continuation: logits within fp16's error of the fp32 model's,
    # and the same top token wherever the model's own margin exceeds that error (a random model's
    # flat distributions hold near-ties, measured down to 0.006, that fp16 may flip). Measured: at
    # most 2.2% of the largest logit, where eager PyTorch in fp16 errs by 0.5% (the reference
    # runtime's fp16 arithmetic is coarser than PyTorch's, which accumulates in fp32).
    artifact = open_artifact(fp16)
    reference = load_model(str(checkpoint), max_context=64).model
    for prompt in PROMPTS:
        ids = artifact.require_tokenizer().encode(prompt)
        sequence = ids + generate(EagerRuntime(reference), ids, max_new_tokens=24, eos_ids=()).new_ids
        ours = artifact.runtime.logits_all(sequence)
        with torch.no_grad():
            theirs = reference.logits(torch.tensor([sequence]))[0]
        error = (ours - theirs).abs().max(dim=-1).values
        assert error.max() < 0.04 * theirs.abs().max(), prompt
        top2 = theirs.topk(2).values
        clear = (top2[:, 0] - top2[:, 1]) > 2 * error.max()
        assert (ours.argmax(-1) == theirs.argmax(-1))[clear].all(), prompt
    manifest = json.loads((fp16 / "manifest.json").read_text())
    assert manifest["details"]["compute_precision"] == "fp16"
    assert manifest["quantization"]["linear"]["bits"] == 16


def test_int4_stores_each_matrix_once(int4):
    """What verify checks of the files (a random model's flat distributions make its agreement
    meaningless at 4 bits; the next test checks the numbers the asset computes with)."""
    report = verify_artifact(int4, eval_tokens=64)
    checks = {c.name: c for c in report.checks}
    for name in ("checksums", "embedding once", "stored bytes", "interface", "states", "metadata"):
        assert checks[name].passed is True, checks[name]
    # One int4 constant per stored block matrix (an LS block's two runs and both functions read
    # it), one int8 constant for the shared matrix.
    program = read_program(int4 / "model.aimodel")
    int4_resources = [t for t in program.resources.values() if t.endswith("xsi4")]
    int8_resources = [t for t in program.resources.values() if t.endswith("xsi8")]
    assert len(int4_resources) == 7 * CONFIG.n_layers
    assert int8_resources == [f"{CONFIG.dim}x{CONFIG.vocab_size}xsi8"]
    assert set(program.functions) >= {"prefill", "decode"}
    assert all(len(f.states) == 2 * CONFIG.n_executed_layers for f in program.functions.values())


def test_int4_runs_the_stages_numbers(int4, checkpoint):
    """The asset's logits are those of the eager model holding the stage's dequantized weights
    (fp16 scales): Core AI stored the codes it was given, not numbers of its own."""
    from mobilellm_export.quant.schemes import get_scheme
    from mobilellm_export.quant.stage import quantize

    model = load_model(str(checkpoint), max_context=64).model
    quantized = quantize(model, get_scheme("int4"), "rtn")
    dequantized = copy.deepcopy(model)
    params = dict(dequantized.named_parameters())
    with torch.no_grad():
        for name, weight in quantized.weights.items():
            fp16_scales = type(weight)(weight.codes, weight.scales.half().float(), weight.zero_points, weight.fmt)
            params[name].copy_(fp16_scales.dequantize())
    tokens = [5, 17, 42, 99, 3, 250, 7, 64]
    ours = open_artifact(int4).runtime.logits_all(tokens)
    with torch.no_grad():
        theirs = dequantized.logits(torch.tensor([tokens]))[0]
        plain = model.logits(torch.tensor([tokens]))[0]
    # fp32 compute; the states hold fp16 keys and values.
    assert (ours - theirs).abs().max() < 2e-2 * theirs.abs().max()
    assert (ours - theirs).abs().max() < 0.2 * (plain - theirs).abs().max()


def test_prefill_and_decode_agree(int4):
    """The two functions share states: decoding a prompt token by token gives prefill's logits."""
    runtime = open_artifact(int4).runtime
    tokens = [9, 8, 7, 6, 5]
    everything = runtime.logits_all(tokens)
    runtime.reset()
    stepped = torch.stack([runtime.forward([t], i) for i, t in enumerate(tokens)])
    torch.testing.assert_close(stepped, everything, atol=1e-3, rtol=1e-3)
    with pytest.raises(UnsupportedError, match="exceed the context"):
        runtime.forward(list(range(60)), 5)


def test_a_second_copy_of_the_shared_matrix_fails_verification(tmp_path, checkpoint, monkeypatch):
    """The storage check can fail: an export whose output projection reads the embedding in
    torch's [vocab, dim] layout, next to the [dim, vocab] one the lookup reads, stores it twice."""
    import torch.nn.functional as F

    from mobilellm_export.export.coreai import decoder

    class TwoLayouts(decoder.CoreAIDecoder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.register_buffer("untransposed", self.shared.weight.T.contiguous())

        def head(self, x, matrix):
            return F.linear(self.norm(x), self.untransposed.float())

    monkeypatch.setattr(decoder, "CoreAIDecoder", TwoLayouts)
    one_block = tmp_path / "one-block"
    save_checkpoint(random_model(small_config(n_layers=1, vocab_size=300)), one_block)
    artifact = export(tmp_path / "out", one_block, "--quant", "fp16", "--compute-precision", "fp32",
                      "--max-context", "16")
    storage = get_backend("coreai").inspect_storage(read_manifest(artifact))
    assert storage.shared_matrix_once is False
    report = verify_artifact(artifact, eval_tokens=16)
    assert not report.passed and {c.name for c in report.checks if c.passed is False} >= {"embedding once"}


def test_compute_precision_is_refused_where_it_does_not_apply(tmp_path, capsys):
    assert main(["--quiet", "export", "--backend", "onnx", "--quant", "int4", "--compute-precision", "fp32",
                 "--output", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "coreai backend only" in err[0]
    assert not (tmp_path / "b").exists()


def test_generate_runs_without_any_exporter(int4, tmp_path):
    """Running an artifact needs coreai-core's runtime only, not the converter; the runtime's
    own progress lines stay off stdout, which `--json` owns."""
    blocked = ("executorch", "torchao", "coremltools", "coreai_torch")
    proc = run_blocked(tmp_path, blocked, "generate", str(int4), "--prompt", "The default value is",
                       "--max-new-tokens", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["runtime"].startswith("coreai") and out["new_tokens"] == 4


def test_bundle_for_ios_carries_the_aimodel(int4, tmp_path):
    from mobilellm_export.bundle import BUNDLE_DIR, BUNDLE_MANIFEST, bundle, validate

    target = bundle(int4, "ios", into=tmp_path)
    assert target == (tmp_path / BUNDLE_DIR).resolve()
    manifest = json.loads((target / BUNDLE_MANIFEST).read_text())
    validate(manifest)
    assert manifest["backend"] == "coreai" and set(manifest["files"]) == {"aimodel", "tokenizer"}
    inside = [name for name in manifest["integrity"] if name.startswith(manifest["files"]["aimodel"] + "/")]
    assert {Path(name).name for name in inside} >= {"main.mlirb", "metadata.json"}
    for rel, check in manifest["integrity"].items():
        assert (target / rel).stat().st_size == check["bytes"]

