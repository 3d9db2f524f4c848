"""What the export pipeline does to keep an export's memory down, and what backends must do for it.

Each backend gets a working copy of the model that shares the weights' storage (a deep copy was
a second float32 model in memory through lowering), which is only safe while no backend writes
into a weight in place. A run whose backends all serialize the quantization stage's codes frees
the float matrices those codes replace; a backend that says it never reads them must write the
same bytes without them."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from mobilellm_export.export import pipeline
from mobilellm_export.export.contract import ExportRequest
from mobilellm_export.export.registry import BACKENDS, get_backend
from mobilellm_export.model.checkpoint import Checkpoint
from mobilellm_export.model.sources import LoadedModel
from mobilellm_export.progress import Progress
from mobilellm_export.quant.schemes import embedding_format, get_scheme

from ..conftest import random_model, small_config


def _loaded(model) -> LoadedModel:
    checkpoint = Checkpoint(model=model, config=model.config, directory=None, source="test", synthetic=True)
    return LoadedModel(checkpoint, None, "test model")


def test_the_working_copy_shares_weight_storage_but_not_parameters():
    model = random_model(small_config())
    copy = pipeline._working_copy(model)
    for (name, original), (_, copied) in zip(model.named_parameters(), copy.named_parameters(), strict=True):
        assert copied is not original and copied.data_ptr() == original.data_ptr(), name
    # What Core AI's backend does to its copy (Module.to replaces each Parameter's data) must not
    # reach the loaded model.
    copy.to(torch.float16)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert copy.embed_tokens.weight.dtype == torch.float16
    # The tied matrix stays one Parameter in the copy (one object, not two equal ones).
    assert copy.output_weight() is copy.embed_tokens.weight


# Every backend at its float scheme, where it handles the float weights themselves rather than
# the quantization stage's codes; Core AI and ONNX also at int4 (Core AI converts its whole copy
# to the compute type whatever the scheme; ONNX's int4 is seconds).
@pytest.mark.parametrize("backend, scheme", [
    ("executorch", "fp32"), ("onnx", "fp32"), ("onnx", "int4"), ("coreml", "fp16"), ("coreai", "fp16"),
    ("coreai", "int4"),
])
def test_exports_leave_the_loaded_weights_as_they_were(tmp_path, backend, scheme):
    model = random_model(small_config())
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    request = ExportRequest(get_scheme(scheme), 32, method="rtn")
    pipeline.export_artifact(_loaded(model), get_backend(backend), request, tmp_path / "a")
    for name, param in model.named_parameters():
        assert param.dtype == torch.float32 and torch.equal(param, before[name]), name


def _files(directory) -> dict[str, bytes]:
    """Every file's bytes; the manifest without its creation time."""
    files = {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    manifest = json.loads(files.pop("manifest.json"))
    manifest.pop("created")
    return {**files, "manifest.json": json.dumps(manifest, sort_keys=True).encode()}


@pytest.mark.parametrize("embedding", ["int8", "int4"])
@pytest.mark.parametrize("backend", [b.name for b in BACKENDS.values() if not b.reads_replaced_floats])
def test_backends_that_say_so_export_the_same_bytes_without_the_replaced_floats(tmp_path, backend, embedding):
    scheme = dataclasses.replace(get_scheme("int4"), embedding=embedding_format(embedding, 32))
    request = ExportRequest(scheme, 32, method="rtn")
    pipeline.export_artifact(_loaded(random_model(small_config())), get_backend(backend), request, tmp_path / "a")
    loaded = _loaded(random_model(small_config()))
    quantizer = pipeline.Quantizer(loaded, Progress(quiet=True))
    freed = pipeline.free_replaced_floats(loaded, [quantizer(request.scheme, request.method)])
    replaced = [p for name, p in loaded.model.named_parameters() if name.endswith(("proj.weight", "embed_tokens.weight"))]
    assert freed == 4 * sum(p.numel() for p in replaced) and all(p.is_meta for p in replaced)
    assert not any(p.is_meta for name, p in loaded.model.named_parameters() if "norm" in name)
    pipeline.export_artifact(loaded, get_backend(backend), request, tmp_path / "b", quantizer=quantizer)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_only_floats_every_scheme_of_the_run_replaced_are_freed():
    loaded = _loaded(random_model(small_config()))
    quantizer = pipeline.Quantizer(loaded, Progress(quiet=True))
    runs = [quantizer(get_scheme(name), "rtn") for name in ("int4", "fp32")]
    assert pipeline.free_replaced_floats(loaded, runs) == 0
    assert not any(p.is_meta for p in loaded.model.parameters())


def test_a_float_shared_matrix_is_kept_while_the_linears_it_sits_beside_are_freed():
    loaded = _loaded(random_model(small_config()))
    quantizer = pipeline.Quantizer(loaded, Progress(quiet=True))
    float_matrix = dataclasses.replace(get_scheme("int4"), embedding=embedding_format("none", 32))
    assert pipeline.free_replaced_floats(loaded, [quantizer(float_matrix, "rtn")]) > 0
    assert not loaded.model.embed_tokens.weight.is_meta
    assert loaded.model.layers[0].mlp.up_proj.weight.is_meta


# fp32 in the run: its export reads every float; Core ML traces the float model (reads_replaced_floats).
@pytest.mark.parametrize("backends, quants, freed", [
    (["onnx"], ["int4"], True), (["onnx"], ["int4", "fp32"], False), (["onnx", "coreml"], ["int4"], False),
])
def test_the_export_command_frees_replaced_floats_only_when_no_export_of_the_run_reads_them(
        tmp_path, capsys, backends, quants, freed):
    from mobilellm_export.cli import main

    assert main(["export", "--backend", *backends, "--quant", *quants, "--method", "rtn",
                 "--output", str(tmp_path)]) == 0
    assert len(list(tmp_path.iterdir())) == len(backends) * len(quants)  # every export of the run ran
    assert ("MB of float weights the codes replace" in capsys.readouterr().err) == freed
