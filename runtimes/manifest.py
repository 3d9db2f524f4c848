"""The artifact manifest (`manifest.json`) as the running side reads it.

Every artifact directory, whatever backend wrote it, has one manifest: which backend's runtime
runs it, which file plays which role (program, data, model, package), the runtime settings
(context, vocabulary, bos/eos, tokenizer, KV-cache width), the model it came from, the
quantization as stored, and the sha256 and size of every file. The exporter writes it
(export/writer.py); this module is the one reader, so a manifest that lacks a key or holds the
wrong type fails here with one line instead of deep inside a runtime.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobilellm_export.errors import MobileLLMError
from mobilellm_export.jsonfile import read_json_object
from mobilellm_export.jsonschemas import ARTIFACT_MANIFEST, first_problem

MANIFEST = "manifest.json"
FORMAT = "mobilellm-export-artifact"
# 2: files by role, backend details under "details", the model's source resolved to a spec that
# loads again from anywhere, and the runtime's KV-cache width.
SCHEMA_VERSION = 2


class ArtifactError(MobileLLMError):
    """An artifact directory that is missing, incomplete or altered."""


@dataclass(frozen=True)
class RuntimeSettings:
    max_context: int
    vocab_size: int
    bos_id: int
    eos_ids: tuple[int, ...]
    tokenizer: str | None  # file name inside the artifact
    kv_cache_bytes_per_value: int  # 4 for an fp32 cache, 2 for fp16


@dataclass(frozen=True)
class ModelRecord:
    label: str  # how reports name it
    source: str  # a --model spec that loads the same weights again ("embedded", a path, an id)
    synthetic: bool  # random weights: perplexity means nothing
    config: dict[str, Any]
    parameters: dict[str, int]


@dataclass(frozen=True)
class Manifest:
    directory: Path
    backend: str
    roles: dict[str, str]  # role -> path relative to the directory
    runtime: RuntimeSettings
    model: ModelRecord
    quantization: dict[str, Any]  # the scheme as stored (quant.schemes.QuantScheme.to_dict())
    expected_weight_bytes: int
    details: dict[str, Any]  # what the backend recorded about its files (informational)
    files: dict[str, dict[str, Any]]  # path -> {"sha256", "bytes"}
    total_bytes: int

    def path(self, role: str) -> Path:
        try:
            return self.directory / self.roles[role]
        except KeyError:
            raise ArtifactError(f"{self.directory} has no {role} file (a {self.backend} artifact lists "
                                f"{', '.join(self.roles)})") from None

    def optional_path(self, role: str) -> Path | None:
        return self.directory / self.roles[role] if role in self.roles else None

    @property
    def narrowest_bits(self) -> int:
        return min(self.quantization["linear"]["bits"], self.quantization["embedding"]["bits"])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _inside(root: Path, rel: str) -> bool:
    """Whether `root/rel` (`root` resolved) stays inside `root` once symbolic links are resolved."""
    return (root / rel).resolve().is_relative_to(root)


def read_manifest(directory: Path) -> Manifest:
    """The manifest of `directory`, validated whole: its schema (types, ranges, every path
    relative and without '..'), every path resolving inside the artifact (symbolic links
    followed), every role and the tokenizer among the listed files, and ids within the
    vocabulary. Anything else is one ArtifactError line."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ArtifactError(f"artifact directory {directory} does not exist")
    if not path.is_file():
        raise ArtifactError(f"{directory} is not an artifact directory (no {MANIFEST})")
    data = read_json_object(path, ArtifactError)
    if data.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a {FORMAT} manifest")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(f"{path} has manifest schema version {data.get('schema_version')}; this tool reads "
                            f"version {SCHEMA_VERSION}: export the artifact again")
    problem = first_problem(data, ARTIFACT_MANIFEST)
    if problem:
        raise ArtifactError(f"{path} is invalid {problem}")
    runtime, model, files, roles = data["runtime"], data["model"], data["files"], data["roles"]
    root = directory.resolve()
    for name in files:
        if not _inside(root, name):
            raise ArtifactError(f"{path}: the file {name!r} lies outside the artifact")
    for role, rel in roles.items():
        # A role names a file, or a package directory (Core ML's .mlpackage) whose files are listed.
        if rel not in files and not any(name.startswith(f"{rel}/") for name in files):
            raise ArtifactError(f"{path}: the {role} file {rel!r} is not among the manifest's files")
        if not _inside(root, rel):
            raise ArtifactError(f"{path}: the {role} file {rel!r} lies outside the artifact")
    if runtime["tokenizer"] is not None and runtime["tokenizer"] not in files:
        raise ArtifactError(f"{path}: the tokenizer {runtime['tokenizer']!r} is not among the manifest's files")
    vocab = runtime["vocab_size"]
    if runtime["bos_id"] >= vocab or any(e >= vocab for e in runtime["eos_ids"]):
        raise ArtifactError(f"{path}: bos/eos ids must be below the vocabulary size {vocab}")
    if data["total_bytes"] != sum(f["bytes"] for f in files.values()):
        raise ArtifactError(f"{path}: total_bytes is not the sum of the files' sizes")
    settings = RuntimeSettings(
        max_context=runtime["max_context"], vocab_size=vocab, bos_id=runtime["bos_id"],
        eos_ids=tuple(runtime["eos_ids"]), tokenizer=runtime["tokenizer"],
        kv_cache_bytes_per_value=runtime["kv_cache_bytes_per_value"])
    record = ModelRecord(label=model["label"], source=model["source"], synthetic=model["synthetic"],
                         config=model["config"], parameters=model["parameters"])
    return Manifest(directory=directory, backend=data["backend"], roles=dict(roles), runtime=settings, model=record,
                    quantization=data["quantization"], expected_weight_bytes=data["expected_weight_bytes"],
                    details=data["details"], files=files, total_bytes=data["total_bytes"])


def checksum_problems(manifest: Manifest) -> list[str]:
    """What on disk differs from the manifest: listed files that are missing, of another size or
    sha256, and anything in the directory the manifest does not list (a stray file, one slipped
    into a package directory, a symbolic link)."""
    problems = []
    for name, entry in manifest.files.items():
        path = manifest.directory / name
        if path.is_symlink() or not path.is_file():
            problems.append(f"{name} is missing" if not path.is_symlink() else f"{name} is a symbolic link")
        elif path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            problems.append(f"{name} does not match its sha256 in the manifest")
    for root, dirs, names in os.walk(manifest.directory):
        for name in sorted(dirs + names):
            item = Path(root) / name
            rel = item.relative_to(manifest.directory).as_posix()
            if item.is_symlink():
                if rel not in manifest.files:  # listed ones were reported above
                    problems.append(f"{rel} is a symbolic link")
            elif item.is_file() and rel not in manifest.files and rel != MANIFEST:
                problems.append(f"{rel} is not listed in the manifest")
    return problems


def require_intact(manifest: Manifest, action: str = "run it") -> None:
    """Refuse, in one line, an artifact whose files differ from its manifest (before anything
    loads it); the CLI's --no-verify-checksums is how a user skips this."""
    problems = checksum_problems(manifest)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ArtifactError(f"{manifest.directory} does not match its manifest: {problems[0]}{more}; export it "
                            f"again, or pass --no-verify-checksums to {action} anyway")
