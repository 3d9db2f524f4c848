"""Which artifacts an export request produces, in which folders.

The one place that turns a request (backends x schemes, embedding format, group size, context)
into artifact folders. The CLI, the demo, `make bench` and the peer comparisons all plan here, so
a folder name means the same everywhere and every combination is validated before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.model.config import MobileLLMConfig
from mobilellm_export.quant.schemes import AUTO, DEFAULT_METHOD, METHOD_CHOICES, QuantScheme, embedding_format, get_scheme

from .contract import Backend, ExportRequest
from .registry import BACKENDS, get_backend

DEFAULT_CONTEXT = 1024


@dataclass(frozen=True)
class ExportSpec:
    backends: tuple[str, ...]
    quants: tuple[str, ...] | None = None  # None: every scheme each backend offers
    embedding_quant: str | None = None  # None: the scheme's own format for the shared matrix
    group_size: int = 32
    max_context: int | None = None  # None: DEFAULT_CONTEXT; capped at the model's maximum
    compute_units: str | None = None
    compute_precision: str | None = None  # None: each backend's default
    method: str = DEFAULT_METHOD  # "auto" is resolved by the stage (quant.schemes.resolve_method)
    calibration_file: Path | None = None  # text for data-driven methods (default: the shipped corpus)


@dataclass(frozen=True)
class PlannedExport:
    backend: Backend
    scheme: QuantScheme
    folder: str
    compute_units: str | None
    method: str
    compute_precision: str | None = None

    def request(self, max_context: int) -> ExportRequest:
        return ExportRequest(self.scheme, max_context, method=self.method, compute_units=self.compute_units,
                             compute_precision=self.compute_precision)


def artifact_folder(backend: str, quant: str, embedding_quant: str | None = None) -> str:
    """`<backend>-<quant>`, plus `-emb-<x>` when the shared matrix's format was asked for explicitly."""
    return f"{backend}-{quant}" + (f"-emb-{embedding_quant}" if embedding_quant else "")


def plan_exports(spec: ExportSpec) -> list[PlannedExport]:
    """Validate every combination up front (a bad one must not cost a long export) and name its folder."""
    if spec.group_size < 2 or spec.group_size % 2:
        raise UnsupportedError(f"--group-size must be an even number >= 2, got {spec.group_size}")
    if spec.max_context is not None and spec.max_context < 2:
        raise UnsupportedError(f"--max-context must be at least 2, got {spec.max_context}")
    if spec.method not in METHOD_CHOICES:
        raise UnsupportedError(f"unknown --method {spec.method!r}; choose one of: {', '.join(METHOD_CHOICES)}")
    if spec.calibration_file is not None and spec.method not in ("gptq", AUTO):
        raise UnsupportedError(f"--calibration applies to --method gptq, not {spec.method}")
    if spec.calibration_file is not None and not Path(spec.calibration_file).is_file():
        raise UnsupportedError(f"calibration text {spec.calibration_file} does not exist")
    backends = [get_backend(name) for name in dict.fromkeys(spec.backends)]
    if spec.compute_units is not None and not any(spec.compute_units in b.compute_units for b in backends):
        takers = [b.name for b in BACKENDS.values() if b.compute_units]
        raise UnsupportedError(f"--compute-units applies to the {' and '.join(takers)} backend only")
    if spec.compute_precision is not None and not any(spec.compute_precision in b.compute_precisions for b in backends):
        takers = [b.name for b in BACKENDS.values() if b.compute_precisions]
        raise UnsupportedError(f"--compute-precision applies to the {' and '.join(takers)} backend only")
    planned = []
    for backend in backends:
        for quant in dict.fromkeys(spec.quants) if spec.quants is not None else backend.schemes:
            if quant not in backend.schemes:
                raise UnsupportedError(f"--quant {quant} is not supported by the {backend.name} backend "
                                       f"(it supports {', '.join(backend.schemes)})")
            scheme = get_scheme(quant).with_group_size(spec.group_size)
            if spec.embedding_quant is not None:
                if spec.embedding_quant not in backend.embedding_choices:
                    raise UnsupportedError(f"--embedding-quant {spec.embedding_quant} is not supported by the "
                                           f"{backend.name} backend")
                scheme = scheme.with_embedding(embedding_format(spec.embedding_quant, spec.group_size))
            planned.append(PlannedExport(backend, scheme, artifact_folder(backend.name, quant, spec.embedding_quant),
                                         spec.compute_units if backend.compute_units else None, spec.method,
                                         spec.compute_precision if backend.compute_precisions else None))
    return planned


def resolve_context(spec: ExportSpec, config: MobileLLMConfig) -> tuple[int, str | None]:
    """The KV-cache length to export with, and a note when the request was capped."""
    context = min(spec.max_context or DEFAULT_CONTEXT, config.max_seq_len)
    if spec.max_context and context < spec.max_context:
        return context, f"--max-context {spec.max_context} exceeds the model's {config.max_seq_len}; using {context}"
    return context, None


def check_model(spec: ExportSpec, config: MobileLLMConfig) -> None:
    """What can only be checked once the model's shapes are known."""
    if config.dim % spec.group_size:
        raise UnsupportedError(f"--group-size {spec.group_size} does not divide the model width {config.dim}")


def existing_targets(planned: list[PlannedExport], output: Path) -> list[Path]:
    return [output / p.folder for p in planned if (output / p.folder).exists()]
