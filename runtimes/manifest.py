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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobilellm_export.errors import MobileLLMError
from mobilellm_export.jsonfile import read_json_object

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


def _get(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ArtifactError(f"{where}: '{key}' is missing or not of the expected type")
    return value


def read_manifest(directory: Path) -> Manifest:
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
    runtime = _get(data, "runtime", dict, path)
    model = _get(data, "model", dict, path)
    eos = _get(runtime, "eos_ids", list, path)
    settings = RuntimeSettings(
        max_context=_get(runtime, "max_context", int, path), vocab_size=_get(runtime, "vocab_size", int, path),
        bos_id=_get(runtime, "bos_id", int, path), eos_ids=tuple(int(e) for e in eos),
        tokenizer=runtime.get("tokenizer"), kv_cache_bytes_per_value=_get(runtime, "kv_cache_bytes_per_value", int, path))
    record = ModelRecord(label=_get(model, "label", str, path), source=_get(model, "source", str, path),
                         synthetic=_get(model, "synthetic", bool, path), config=_get(model, "config", dict, path),
                         parameters=_get(model, "parameters", dict, path))
    files = _get(data, "files", dict, path)
    roles = _get(data, "roles", dict, path)
    for role, rel in roles.items():
        # A role names a file, or a package directory (Core ML's .mlpackage) whose files are listed.
        if rel not in files and not any(name.startswith(f"{rel}/") for name in files):
            raise ArtifactError(f"{path}: the {role} file {rel!r} is not among the manifest's files")
    return Manifest(directory=directory, backend=_get(data, "backend", str, path), roles=dict(roles),
                    runtime=settings, model=record, quantization=_get(data, "quantization", dict, path),
                    expected_weight_bytes=_get(data, "expected_weight_bytes", int, path),
                    details=_get(data, "details", dict, path), files=files,
                    total_bytes=_get(data, "total_bytes", int, path))


def checksum_problems(manifest: Manifest) -> list[str]:
    """Files that are missing or whose sha256 differs from the manifest."""
    problems = []
    for name, entry in manifest.files.items():
        path = manifest.directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"{name} does not match its sha256 in the manifest")
    return problems
