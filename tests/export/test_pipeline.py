"""The export pipeline hands each backend a working copy of the model that shares the weights'
storage (a deep copy was a second float32 model in memory through lowering). That is only safe
while no backend writes into a weight in place: these tests hold every backend to it."""

from __future__ import annotations

import pytest
import torch

from mobilellm_export.export import pipeline
from mobilellm_export.export.contract import ExportRequest
from mobilellm_export.export.registry import get_backend
from mobilellm_export.model.checkpoint import Checkpoint
from mobilellm_export.model.sources import LoadedModel
from mobilellm_export.quant.schemes import get_scheme

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
