"""The one manifest reader: a manifest that is not what the runtimes expect fails with one line."""

import json

import pytest

from mobilellm_export.runtimes.manifest import ArtifactError, checksum_problems, read_manifest

from ..conftest import cli_export


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return cli_export(tmp_path_factory.mktemp("m"), "onnx", "--quant", "fp32")


def rewrite(tmp_path, artifact, change):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    data = json.loads((copy / "manifest.json").read_text())
    change(data)
    (copy / "manifest.json").write_text(json.dumps(data))
    return copy


def test_reads_a_written_manifest(artifact):
    manifest = read_manifest(artifact)
    assert manifest.backend == "onnx" and manifest.path("model").name == "model.onnx"
    assert manifest.runtime.max_context == 256 and manifest.runtime.eos_ids == (2,)
    assert manifest.model.source == "embedded" and manifest.narrowest_bits == 32
    assert checksum_problems(manifest) == []


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("roles"), "'roles' is missing"),
    (lambda d: d["runtime"].update(max_context="256"), "'max_context' is missing or not of the expected type"),
    (lambda d: d.update(schema_version=1), "schema version 1; this tool reads version 2: export the artifact again"),
    (lambda d: d["roles"].update(model="elsewhere.onnx"), "the model file 'elsewhere.onnx' is not among"),
    (lambda d: d.update(format="something"), "is not a mobilellm-export-artifact manifest"),
])
def test_bad_manifests_are_one_line_errors(tmp_path, artifact, change, message):
    with pytest.raises(ArtifactError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_manifest(rewrite(tmp_path, artifact, change))


def test_a_role_the_backend_did_not_write_is_named(artifact):
    with pytest.raises(ArtifactError, match="has no program file"):
        read_manifest(artifact).path("program")
