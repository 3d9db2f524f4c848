"""The one planning function: which artifacts a request produces, in which folders."""

import pytest

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.export.plan import ExportSpec, artifact_folder, check_model, plan_exports, resolve_context
from mobilellm_export.export.registry import BACKENDS
from mobilellm_export.model.config import get_preset

from ..conftest import small_config


def test_folders_are_backend_and_scheme_and_explicit_embedding_only():
    planned = plan_exports(ExportSpec(backends=("executorch", "onnx"), quants=("fp32",)))
    assert [p.folder for p in planned] == ["executorch-fp32", "onnx-fp32"]
    (p,) = plan_exports(ExportSpec(backends=("executorch",), quants=("int4",), embedding_quant="int8", group_size=64))
    assert p.folder == "executorch-int4-emb-int8" == artifact_folder("executorch", "int4", "int8")
    assert p.scheme.linear.group_size == 64 and p.scheme.embedding.bits == 8
    # Without --embedding-quant a scheme keeps its own shared-matrix format, the same in every
    # backend (int4: the shared matrix int8 per row); with it, the asked format.
    for backend in ("executorch", "onnx", "coreml"):
        (q,) = plan_exports(ExportSpec(backends=(backend,), quants=("int4",), group_size=64))
        assert q.scheme.embedding.bits == 8 and q.scheme.embedding.group_size is None and q.method == "auto"
    (r,) = plan_exports(ExportSpec(backends=("onnx",), quants=("int4",), embedding_quant="int4", group_size=64))
    assert r.scheme.embedding.bits == 4 and r.scheme.embedding.group_size == 64


def test_no_quants_means_every_scheme_of_every_backend():
    planned = plan_exports(ExportSpec(backends=tuple(BACKENDS)))
    assert [p.folder for p in planned] == [f"{b.name}-{q}" for b in BACKENDS.values() for q in b.schemes]


def test_compute_units_go_only_to_backends_that_take_them():
    planned = plan_exports(ExportSpec(backends=("onnx", "coreml"), quants=("int4",), compute_units="cpu_only"))
    assert {p.backend.name: p.request(64).compute_units for p in planned} == {"onnx": None, "coreml": "cpu_only"}
    with pytest.raises(UnsupportedError, match="--compute-units applies to the coreml backend only"):
        plan_exports(ExportSpec(backends=("onnx",), quants=("int4",), compute_units="cpu_only"))


@pytest.mark.parametrize("spec, message", [
    (ExportSpec(backends=("executorch",), quants=("int4-asym",)), "--quant int4-asym is not supported by the executorch"),
    (ExportSpec(backends=("tflite",), quants=("fp32",)), "unknown backend 'tflite'"),
    (ExportSpec(backends=("onnx",), quants=("int4",), group_size=3), "--group-size must be an even number"),
    (ExportSpec(backends=("onnx",), quants=("int4",), max_context=1), "--max-context must be at least 2"),
    (ExportSpec(backends=("onnx",), quants=("int4",), method="rtn", calibration_file="x.txt"),
     "--calibration applies to --method gptq"),
])
def test_bad_requests_are_refused_before_any_work(spec, message):
    with pytest.raises(UnsupportedError, match=message):
        plan_exports(spec)


def test_context_and_model_checks():
    config = small_config(max_seq_len=128)
    assert resolve_context(ExportSpec(backends=("onnx",)), config) == (128, None)  # default 1024, capped
    context, note = resolve_context(ExportSpec(backends=("onnx",), max_context=4096), get_preset("125M"))
    assert context == 2048 and "exceeds the model's 2048" in note
    assert resolve_context(ExportSpec(backends=("onnx",), max_context=64), config) == (64, None)
    with pytest.raises(UnsupportedError, match="does not divide the model width 64"):
        check_model(ExportSpec(backends=("onnx",), group_size=128), config)
