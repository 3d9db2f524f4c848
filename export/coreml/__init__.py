"""Core ML backend: a stateful `.mlpackage` (mlprogram, iOS 18 / macOS 15) converted by
coremltools from the `torch.export` program.

The KV cache is a pair of Core ML states per *executed* block (fp16, [1, max_context, kv_heads,
head_dim]), written in place with `slice_update` and read by scaled dot-product attention. One
function takes a flexible prompt length: inputs `input_ids` int32 [1, n] and `causal_mask` fp16
[1, 1, n, end], where `end` is the number of positions after this call; the call writes positions
end - n .. end - 1 and returns float32 logits of the last position [1, vocab]. This is the
pattern of Apple's stateful-model guide (positions come from the input shapes, so no scalar ever
has to be read back from a tensor) and the one its LLM examples run; a multifunction
prefill/decode package would need fixed prefill chunk sizes to gain nothing on weights, which
one function already stores once.

Quantization runs on the converted program with `coremltools.optimize.coreml` and one global
config (per-op configs would conflict on the shared embedding, which feeds both a gather and a
linear): int8 linear symmetric per channel, int4 linear symmetric per block of 32, both as iOS 18
`constexpr_blockwise_shift_scale` ops with fp16 scales. The shared embedding is one const (one
constexpr when quantized) read by the lookup and the output projection, and each LS block's
weights are one const read by both runs (coremltools' const deduplication).

Core ML executes only on macOS. On other systems the package is converted, and checked
structurally (inputs, outputs, states, unique weights, dequantized weights against the model);
running it raises a clear error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.progress import Progress

from ..contract import Backend, ExportRequest, ExportResult, StorageReport, StructureCheck

if TYPE_CHECKING:
    from mobilellm_export.model.modeling import MobileLLM
    from mobilellm_export.quant.stage import QuantizedModel
    from mobilellm_export.runtimes.manifest import Manifest

PACKAGE = "model.mlpackage"
# What the app is told to load the package with (runtimes/coreml_runtime.py maps them to Core ML's).
COMPUTE_UNITS = ("all", "cpu_and_ne", "cpu_and_gpu", "cpu_only")


class CoreMLBackend(Backend):
    name = "coreml"
    description = "Core ML stateful .mlpackage (mlprogram, iOS 18 / macOS 15)"
    schemes = ("fp16", "int8", "int4", "int4-asym")
    embedding_choices = ("none", "int8", "int4")
    compute_units = COMPUTE_UNITS
    requires = ("coremltools",)
    install_hint = "coremltools (pip install coremltools==9.0)"

    def export(self, model: MobileLLM, quantized: QuantizedModel, request: ExportRequest, out_dir: Path,
               progress: Progress) -> ExportResult:
        """Write model.mlpackage into `out_dir`, its quantized weights from the stage's codes."""
        from .convert import convert, stored_scheme

        scheme = stored_scheme(request.scheme)
        if not model.config.share_embedding:
            raise UnsupportedError("the coreml backend expects a shared embedding (every MobileLLM has one)")
        progress.step(f"linear {scheme.linear.describe()}, shared embedding {scheme.embedding.describe()}")
        mlmodel = convert(model, quantized, request.max_context, progress)
        progress.step(f"writing {PACKAGE}")
        mlmodel.save(str(out_dir / PACKAGE))
        return ExportResult(
            stored_scheme=scheme, files={"package": PACKAGE}, kv_cache_bytes_per_value=2,
            details={"compute_units": request.compute_units or "all", "minimum_deployment_target": "iOS18 / macOS15",
                     "inputs": {"input_ids": "int32 [1, n]", "causal_mask": "fp16 [1, 1, n, end], 0 or -inf"},
                     "outputs": {"logits": "fp32 [1, vocab], last position"},
                     "kv_cache": "Core ML states, fp16 [1, max_context, kv_heads, head_dim], two per executed block"})

    def inspect_storage(self, manifest: Manifest) -> StorageReport:
        from .inspect import inspect_storage

        return inspect_storage(manifest)

    def check_structure(self, manifest: Manifest, reference: MobileLLM) -> list[StructureCheck]:
        from .inspect import check_structure

        return check_structure(manifest, reference)
