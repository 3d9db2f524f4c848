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
from pathlib import Path
from typing import Any

from mobilellm_export.errors import UnsupportedError
from mobilellm_export import jsonschemas
from mobilellm_export.runtimes.manifest import ArtifactError, Manifest, checksum_problems, read_manifest
from mobilellm_export.runtimes.registry import ADAPTERS, adapter_for
from mobilellm_export.runtimes.tokenizer import TOKENIZER_COMPANIONS

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


def validate(manifest: dict[str, Any]) -> None:
    problem = jsonschemas.first_problem(manifest, jsonschemas.BUNDLE_MANIFEST)
    if problem:
        raise UnsupportedError(f"bundle manifest is invalid {problem}")


def _role_files(manifest: Manifest) -> dict[str, str]:
    """The artifact's files by role (program, data, package, ...) and its tokenizer."""
    if not manifest.runtime.tokenizer:
        raise UnsupportedError("the artifact has no tokenizer; apps need one")
    return {**manifest.roles, "tokenizer": manifest.runtime.tokenizer}


def build_manifest(manifest: Manifest, max_new_tokens: int = 128, temperature: float = 0.0) -> dict[str, Any]:
    artifact = manifest.directory
    files = _role_files(manifest)
    # Only files the manifest lists (a role names a file or a package directory): the manifest
    # reader has checked each one's path stays inside the artifact, and the caller their checksums,
    # so nothing else on disk (a stray file, a symbolic link) is ever copied.
    integrity: dict[str, dict[str, Any]] = {}
    for rel in files.values():
        for name in sorted(n for n in manifest.files if n == rel or n.startswith(f"{rel}/")):
            integrity[name] = dict(manifest.files[name])
    for companion in TOKENIZER_COMPANIONS:  # bos/eos names for the runners, the chat template
        if companion in manifest.files:
            integrity[companion] = dict(manifest.files[companion])
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


def _target(artifact: Path, app: App, into: Path | None, repo_root: Path | None) -> Path:
    """Where model/ goes: under --into, or the app's folder of the repository (which must exist:
    run outside the repository, the default would create a stray android_demo/ here). Never in
    or above the artifact, which the bundle would otherwise overwrite or contain."""
    if into is not None:
        parent = Path(into)
    else:
        root = Path(repo_root) if repo_root is not None else Path.cwd()
        app_dir = root / Path(app.default_parent).parts[0]
        if not app_dir.is_dir():
            raise UnsupportedError(f"{root} holds no {app_dir.name}/ (not the repository root?); pass --into PATH "
                                   "or --repo DIR")
        parent = root / app.default_parent
    target = (parent / BUNDLE_DIR).resolve()
    source = artifact.resolve()
    if target == source or target.is_relative_to(source) or source.is_relative_to(target):
        raise UnsupportedError(f"the bundle {target} would be written into or over the artifact {artifact}; "
                               "choose another --into")
    return target


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
    target = _target(artifact, app, into, repo_root)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".bundle-partial-", dir=target.parent))
    except OSError as exc:
        raise UnsupportedError(f"cannot write to {target.parent}: {exc.strerror or exc}") from None
    try:
        for rel in content["integrity"]:
            destination = tmp / rel
            if not destination.resolve().is_relative_to(tmp.resolve()):  # paths were validated; kept as a guard
                raise ArtifactError(f"{artifact}: {rel!r} would be written outside the bundle")
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(artifact / rel, destination, follow_symlinks=False)
        (tmp / BUNDLE_MANIFEST).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp's 0700 would leave the app's build unable to read it
        if target.exists():
            if not overwrite:
                raise UnsupportedError(f"{target} already exists")
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
