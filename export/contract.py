"""The contract every export backend implements, and the typed values that cross it.

Shared code (the pipeline, planning, verify, bench, bundle) only talks to `Backend` through these
methods and values; it never asks which backend it holds. A backend's class is declared in its
package's `__init__` with no heavy imports, so listing backends (CLI help, planning) stays cheap;
its lowering and inspection modules load when a method needs them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mobilellm_export.errors import MissingDependencyError
from mobilellm_export.progress import Progress
from mobilellm_export.quant.schemes import DEFAULT_METHOD, QuantScheme

if TYPE_CHECKING:  # torch-heavy; only annotations name them
    from mobilellm_export.model.modeling import MobileLLM
    from mobilellm_export.quant.stage import QuantizedModel
    from mobilellm_export.runtimes.manifest import Manifest


@dataclass(frozen=True)
class ExportRequest:
    scheme: QuantScheme  # as requested; the backend reports how it stored it
    max_context: int
    method: str = DEFAULT_METHOD  # how the quantization stage chooses codes ("auto": see quant.schemes)
    compute_units: str | None = None  # for backends that take it: the units apps should load with
    compute_precision: str | None = None  # for backends that take it: activations' type (None: its default)


@dataclass(frozen=True)
class ExportResult:
    stored_scheme: QuantScheme  # the scheme as the files hold it (scale widths, block layout)
    files: Mapping[str, str]  # role -> file written, relative to the artifact ("program": "model.pte")
    kv_cache_bytes_per_value: int  # the runtime's KV-cache element width (bandwidth figures)
    details: Mapping[str, Any] = field(default_factory=dict)  # facts for the manifest (ops, opset, ...)


@dataclass(frozen=True)
class StorageReport:
    """What an artifact stores, read back from its files."""

    stored_bytes: int  # weight bytes held (buffers, initializers, weight.bin)
    non_weight_bytes: int  # stored constants that are not model weights (RoPE tables, blob headers)
    shared_matrix_once: bool  # the lookup and the output projection read one stored matrix
    shared_matrix_readers: Mapping[str, tuple[str, ...]]  # stored name -> what reads it, for the report


@dataclass(frozen=True)
class StructureCheck:
    """A check of the artifact's structure against the reference, for backends whose artifacts
    cannot always run where they are verified."""

    name: str
    passed: bool
    detail: str


class Backend(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    schemes: ClassVar[tuple[str, ...]]  # --quant values
    embedding_choices: ClassVar[tuple[str, ...]]  # --embedding-quant values
    compute_units: ClassVar[tuple[str, ...]] = ()  # --compute-units values it records for apps (none: not taken)
    compute_precisions: ClassVar[tuple[str, ...]] = ()  # --compute-precision values, the default first (none: not taken)
    requires: ClassVar[tuple[str, ...]]  # modules the export needs (optional dependencies)
    # Whether export() reads the float value of a matrix the quantization stage replaced by codes
    # (a backend that traces the float model and swaps its constants afterwards does). When no
    # export of a run does, the run frees those floats before lowering (pipeline.free_replaced_floats).
    reads_replaced_floats: ClassVar[bool] = True
    install_hint: ClassVar[str]  # what to install when one is missing

    def require(self) -> None:
        """One clear error naming the package when an optional dependency of the export is missing."""
        for module in self.requires:
            try:
                __import__(module)  # through builtins.__import__, so tests can simulate a missing package
            except ImportError as exc:
                raise MissingDependencyError(f"the {self.name} backend needs {self.install_hint}: {exc}") from None

    @abstractmethod
    def export(self, model: MobileLLM, quantized: QuantizedModel, request: ExportRequest, out_dir: Path,
               progress: Progress) -> ExportResult:
        """Write the artifact's files into out_dir: the float parts from `model` (this export's own
        copy), every quantized matrix from the stage's codes in `quantized`, never rounded again."""

    @abstractmethod
    def inspect_storage(self, manifest: Manifest) -> StorageReport:
        """Read the artifact's files back: stored bytes and who reads the shared matrix."""

    def check_structure(self, manifest: Manifest, reference: MobileLLM) -> list[StructureCheck]:
        """Extra checks against the reference model that need no runtime (none by default)."""
        return []
