"""`mobilellm-export bundle` and the sample apps' contract: the bundler against the schema (good
and bad bundles), every manifest key the Kotlin and Swift sources read exists in the schema and
every schema key is read by an app, and the file names the apps load are the ones bundle writes.
The apps themselves cannot be built here (no Android SDK or Xcode)."""

import json
import re
import shutil
from pathlib import Path

import pytest

from mobilellm_export.cli import main
from mobilellm_export import jsonschemas
from mobilellm_export.bundle import BUNDLE_DIR, BUNDLE_MANIFEST, bundle, validate
from mobilellm_export.errors import UnsupportedError

from ..conftest import small_checkpoint_with_tokenizer

pytest.importorskip("jsonschema")
REPO = Path(__file__).resolve().parents[2]
KOTLIN = sorted((REPO / "android_demo").rglob("*.kt"))
SWIFT = sorted((REPO / "ios_demo").rglob("*.swift"))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A small model with the embedded tokenizer, as ONNX (no app runs it) and ExecuTorch fp32."""
    tmp = tmp_path_factory.mktemp("bundle")
    ckpt = tmp / "ckpt"
    small_checkpoint_with_tokenizer(ckpt)
    assert main(["--quiet", "export", "--model", str(ckpt), "--backend", "onnx", "executorch", "--quant", "fp32",
                 "--max-context", "64", "--output", str(tmp / "out")]) == 0
    return tmp / "out"


def test_bundle_for_android_copies_files_and_a_valid_manifest(artifacts, tmp_path, capsys):
    (tmp_path / "android_demo").mkdir()  # a repository checkout's app folder
    assert main(["--quiet", "bundle", str(artifacts / "executorch-fp32"), "--app", "android", "--repo", str(tmp_path)]) == 0
    target = tmp_path / "android_demo/app/src/main/assets" / BUNDLE_DIR
    manifest = json.loads((target / BUNDLE_MANIFEST).read_text())
    validate(manifest)
    assert manifest["backend"] == "executorch" and manifest["context_length"] == 64
    assert set(manifest["files"]) == {"program", "data", "tokenizer"}
    for rel, check in manifest["integrity"].items():
        assert (target / rel).stat().st_size == check["bytes"]
    assert manifest["total_bytes"] == sum(c["bytes"] for c in manifest["integrity"].values())


def test_bundle_refusals(artifacts, tmp_path):
    with pytest.raises(UnsupportedError, match="runs executorch"):
        bundle(artifacts / "onnx-fp32", "android", into=tmp_path / "a")
    with pytest.raises(UnsupportedError, match="over the"):
        bundle(artifacts / "executorch-fp32", "android", into=tmp_path / "b", max_bytes=1000)
    assert not (tmp_path / "b" / BUNDLE_DIR).exists()
    broken = tmp_path / "broken"
    shutil.copytree(artifacts / "executorch-fp32", broken)
    (broken / "model.pte").write_bytes(b"not a program")
    with pytest.raises(Exception, match="checksums"):
        bundle(broken, "ios", into=tmp_path / "c")


def test_schema_rejects_bad_manifests(artifacts, tmp_path):
    bundle(artifacts / "executorch-fp32", "ios", into=tmp_path)
    good = json.loads((tmp_path / BUNDLE_DIR / BUNDLE_MANIFEST).read_text())
    validate(good)
    for change in (lambda m: m.pop("files"), lambda m: m["files"].pop("data"), lambda m: m.update(backend="onnx"),
                   lambda m: m.update(extra=1), lambda m: m["generation"].update(temperature=-1),
                   lambda m: m["integrity"][next(iter(m["integrity"]))].update(sha256="xyz")):
        bad = json.loads(json.dumps(good))
        change(bad)
        with pytest.raises(UnsupportedError, match="bundle manifest is invalid"):
            validate(bad)


def schema_keys(node: dict, prefix: str = "") -> set[str]:
    keys = set()
    for name, sub in node.get("properties", {}).items():
        keys.add(prefix + name)
        keys |= schema_keys(sub, prefix + name + ".")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        keys |= schema_keys(extra, prefix + "*.")
    return keys


def kotlin_keys() -> set[str]:
    # The Kotlin code that reads bundle.json (MainActivity also reads the runner's statistics JSON).
    text = "\n".join(p.read_text() for p in KOTLIN if p.name in ("BundleManifest.kt", "ModelFiles.kt"))
    return set(re.findall(r'\.get(?:String|Int|Long|Double|JSONObject|JSONArray)\("([a-z0-9_]+)"\)', text))


def swift_keys() -> set[str]:
    keys = set()
    for path in SWIFT:
        for block in re.findall(r"enum CodingKeys: String, CodingKey \{(.*?)\}", path.read_text(), re.S):
            for name, raw in re.findall(r'case (\w+)(?: = "(\w+)")?', block):
                keys.add(raw or name)
    return keys


def test_app_sources_read_exactly_the_schema_keys():
    assert KOTLIN and SWIFT
    defined = {key.split(".")[-1] for key in schema_keys(jsonschemas.load(jsonschemas.BUNDLE_MANIFEST))}
    read = kotlin_keys() | swift_keys()
    assert kotlin_keys() <= defined, kotlin_keys() - defined
    assert swift_keys() <= defined, swift_keys() - defined
    assert defined <= read, f"defined in the schema but read by no app: {defined - read}"


def test_apps_load_the_names_bundle_writes():
    kotlin = "\n".join(p.read_text() for p in KOTLIN)
    swift = "\n".join(p.read_text() for p in SWIFT)
    for text in (kotlin, swift):
        assert f'"{BUNDLE_MANIFEST}"' in text and f'"{BUNDLE_DIR}"' in text
    # Model files are never named in the apps: they come from bundle.json's "files".
    for name in ("model.pte", "model.ptd", "model.mlpackage", "tokenizer.json"):
        assert name not in kotlin and name not in swift
    # The default destinations exist in the repository.
    assert (REPO / "android_demo/app/src/main/assets").is_dir()
    assert (REPO / "ios_demo/MobileLLMDemo/Resources").is_dir()
