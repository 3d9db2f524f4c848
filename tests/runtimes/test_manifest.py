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
    (lambda d: d.pop("roles"), "at (top level): 'roles' is a required property"),
    (lambda d: d["runtime"].update(max_context="256"), "at runtime/max_context: '256' is not of type 'integer'"),
    (lambda d: d.update(schema_version=1), "schema version 1; this tool reads version 2: export the artifact again"),
    (lambda d: d["roles"].update(model="elsewhere.onnx"), "the model file 'elsewhere.onnx' is not among"),
    (lambda d: d.update(format="something"), "is not a mobilellm-export-artifact manifest"),
    # The shapes that used to surface as KeyError / IndexError / TypeError deep in a command.
    (lambda d: d.update(quantization={}), "at quantization: 'name' is a required property"),
    (lambda d: d["runtime"].update(eos_ids=[]), "at runtime/eos_ids: [] should be non-empty"),
    (lambda d: d["runtime"].update(eos_ids=["x"]), "at runtime/eos_ids/0: 'x' is not of type 'integer'"),
    (lambda d: d["files"].update({"model.onnx": "abc"}), "at files/model.onnx: 'abc' is not of type 'object'"),
    (lambda d: d["runtime"].update(tokenizer=5), "at runtime/tokenizer: 5 is not of type 'string'"),
    (lambda d: d["roles"].update(model=["model.onnx"]), "at roles/model: ['model.onnx'] is not of type 'string'"),
    (lambda d: d["quantization"].pop("name"), "at quantization: 'name' is a required property"),
    (lambda d: d["runtime"].update(eos_ids=[99999]), "bos/eos ids must be below the vocabulary size 4096"),
    (lambda d: d.update(total_bytes=1), "total_bytes is not the sum"),
    # Paths: relative, no '..', inside the artifact.
    (lambda d: d["files"].update({"../../../../etc/passwd": d["files"]["model.onnx"]}),
     "at files: '../../../../etc/passwd' is not allowed (a path inside the artifact"),
    (lambda d: d["files"].update({"/etc/passwd": d["files"]["model.onnx"]}), "at files: '/etc/passwd' is not allowed"),
    (lambda d: d["roles"].update(model="../model.onnx"), "at roles/model: '../model.onnx' is not allowed"),
    (lambda d: d["runtime"].update(tokenizer="nope.json"), "the tokenizer 'nope.json' is not among"),
])
def test_bad_manifests_are_one_line_errors(tmp_path, artifact, change, message):
    with pytest.raises(ArtifactError) as caught:
        read_manifest(rewrite(tmp_path, artifact, change))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_path_that_leaves_the_artifact_through_a_symlink_is_refused(tmp_path, artifact):
    """A listed name that looks relative but resolves outside (a symbolic link in the artifact)."""
    import os

    copy = rewrite(tmp_path, artifact, lambda d: None)
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    os.symlink(tmp_path, copy / "up")
    data = json.loads((copy / "manifest.json").read_text())
    data["files"]["up/secret.txt"] = {"sha256": "0" * 64, "bytes": 9}
    data["total_bytes"] += 9
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="'up/secret.txt' lies outside the artifact"):
        read_manifest(copy)


@pytest.mark.parametrize("stray", ["notes.txt", "model.onnx.data", "sub/extra.bin"])
def test_files_the_manifest_does_not_list_are_checksum_problems(tmp_path, artifact, stray):
    copy = rewrite(tmp_path, artifact, lambda d: None)
    (copy / stray).parent.mkdir(exist_ok=True)
    (copy / stray).write_bytes(b"x")
    assert checksum_problems(read_manifest(copy)) == [f"{stray} is not listed in the manifest"]


def test_a_symlink_in_the_artifact_is_a_checksum_problem(tmp_path, artifact):
    import os

    copy = rewrite(tmp_path, artifact, lambda d: None)
    os.symlink("/etc", copy / "etc")
    assert checksum_problems(read_manifest(copy)) == ["etc is a symbolic link"]


def test_a_role_the_backend_did_not_write_is_named(artifact):
    with pytest.raises(ArtifactError, match="has no program file"):
        read_manifest(artifact).path("program")
