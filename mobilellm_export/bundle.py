"""`mobilellm-export bundle`: an artifact copied into a sample app with a bundle manifest.

The app reads only `bundle.json` (schema: mobilellm_export/schemas/bundle-manifest.schema.json)
to find its files and generation settings, so nothing in the apps hard-codes file names. The
bundler refuses an artifact whose checksums fail, whose backend the app cannot run, or whose size
exceeds what the app can ship, and validates the manifest against the schema before writing.
Like artifacts, a bundle is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mobilellm_export.errors import MissingDependencyError, UnsupportedError
from mobilellm_export.runtimes.manifest import ArtifactError, Manifest, checksum_problems, read_manifest, sha256_file
from mobilellm_export.runtimes.registry import ADAPTERS, adapter_for

BUNDLE_MANIFEST = "bundle.json"
BUNDLE_DIR = "model"  # inside the app's asset/resource folder


@dataclass(frozen=True)
class App:
    name: str
    default_parent: str  # relative to the repository root
    max_bytes: int
    why_limit: str


# Android: Google Play's 200 MB limit on a base module's download; bigger models belong in an
# asset pack. iOS: apps above 200 MB are not downloaded over cellular without the user's consent.
APPS = {
    "android": App("android", "android_demo/app/src/main/assets", 200 * 10**6,
                   "Google Play's 200 MB base-module limit (use an asset pack beyond it)"),
    "ios": App("ios", "ios_demo/MobileLLMDemo/Resources", 200 * 10**6,
               "the 200 MB cellular-download limit of the App Store"),
}


def schema() -> dict[str, Any]:
    return json.loads(resources.files("mobilellm_export").joinpath("schemas/bundle-manifest.schema.json").read_text())


def validate(manifest: dict[str, Any]) -> None:
    try:
        import jsonschema
    except ImportError as exc:
        raise MissingDependencyError(f"bundle validation needs jsonschema (pip install jsonschema): {exc}") from None
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(manifest), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(top level)"
        raise UnsupportedError(f"bundle manifest is invalid at {where}: {first.message}")


def _role_files(manifest: Manifest) -> dict[str, str]:
    """The artifact's files by role (program, data, package, ...) and its tokenizer."""
    if not manifest.runtime.tokenizer:
        raise UnsupportedError("the artifact has no tokenizer; apps need one")
    return {**manifest.roles, "tokenizer": manifest.runtime.tokenizer}


def build_manifest(manifest: Manifest, max_new_tokens: int = 128, temperature: float = 0.0) -> dict[str, Any]:
    artifact = manifest.directory
    files = _role_files(manifest)
    integrity: dict[str, dict[str, Any]] = {}
    for rel in files.values():
        path = artifact / rel
        for item in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
            integrity[item.relative_to(artifact).as_posix()] = {"sha256": sha256_file(item), "bytes": item.stat().st_size}
    companion = artifact / "tokenizer_config.json"
    if companion.is_file():  # bos/eos names for the runners' tokenizers
        integrity["tokenizer_config.json"] = {"sha256": sha256_file(companion), "bytes": companion.stat().st_size}
    runtime = manifest.runtime
    return {
        "schema_version": 1,
        "model_name": manifest.model.label,
        "backend": manifest.backend,
        "scheme": manifest.quantization["name"],
        "context_length": runtime.max_context,
        "bos_id": runtime.bos_id,
        "eos_ids": list(runtime.eos_ids),
        "generation": {"max_new_tokens": min(max_new_tokens, runtime.max_context - 1), "temperature": temperature},
        "files": files,
        "integrity": integrity,
        "total_bytes": sum(entry["bytes"] for entry in integrity.values()),
    }


def bundle(artifact: Path, app_name: str, *, into: Path | None = None, repo_root: Path | None = None,
           max_bytes: int | None = None, overwrite: bool = True) -> Path:
    """Copy `artifact` into the app (or `into`); return the bundle directory."""
    try:
        app = APPS[app_name]
    except KeyError:
        raise UnsupportedError(f"unknown app {app_name!r}; choose android or ios") from None
    artifact = Path(artifact)
    manifest = read_manifest(artifact)
    problems = checksum_problems(manifest)
    if problems:
        raise ArtifactError(f"{artifact} fails its checksums ({problems[0]}); export it again")
    if app.name not in adapter_for(manifest).apps:
        runs = [a.backend for a in ADAPTERS.values() if app.name in a.apps]
        raise UnsupportedError(f"the {app.name} app runs {' or '.join(runs)} artifacts, not {manifest.backend}")
    content = build_manifest(manifest)
    validate(content)
    limit = max_bytes if max_bytes is not None else app.max_bytes
    if content["total_bytes"] > limit:
        raise UnsupportedError(f"the bundle would be {content['total_bytes'] / 1e6:.1f} MB, over the "
                               f"{limit / 1e6:.0f} MB the {app.name} app can ship ({app.why_limit}); "
                               "pick a smaller scheme or pass --max-bytes")
    parent = Path(into) if into is not None else (repo_root or Path.cwd()) / app.default_parent
    target = parent / BUNDLE_DIR
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-partial-", dir=parent))
    try:
        for rel in content["integrity"]:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(artifact / rel, tmp / rel)
        (tmp / BUNDLE_MANIFEST).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            if not overwrite:
                raise UnsupportedError(f"{target} already exists")
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
