"""Core AI backend: one `.aimodel` (iOS / macOS 27) converted by Apple's coreai-torch from two
`torch.export` programs, `prefill` and `decode`, that share their weights and the KV-cache states.

Unlike Core ML, a Core AI artifact executes on Linux: coreai-core bundles a reference CPU runtime
(slow, and it emulates fp16 arithmetic), so `verify` runs it against the eager model here.

- Interface (export/coreai/decoder.py): input_ids int32 [1, n], input_pos int32 [n] -> logits
  float32 [1, n, vocab]; `prefill` takes 1..max_context tokens, `decode` one.
- KV cache: two fp16 states [1, kv_heads, max_context, head_dim] per *executed* block (an LS
  block's two runs share weights, not state), named k_cache_<i> / v_cache_<i>.
- Weights: the quantization stage's codes stored by `coreai.constexpr_blockwise_shift_scale` as
  packed int4 / int8 constants with fp16 scales (the same numbers as the other backends; int8
  per-channel scales are rounded to fp16 as in Core ML, and the manifest records how many moved).
  The shared matrix is one constant read by the lookup and the output projection; each LS block's
  weights are one constant read by both runs, and both functions read the same constants.
- Compute precision: fp16 (default; what Apple's GPU and Neural Engine run) or fp32 (the same
  stored weights, activations in fp32: about ten times faster on the Linux reference runtime,
  which is how `make demo` and the tests execute these artifacts).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.progress import Progress
from mobilellm_export.quant.schemes import fp16_storage

from ..contract import Backend, ExportRequest, ExportResult, StorageReport, StructureCheck

if TYPE_CHECKING:
    from mobilellm_export.model.modeling import MobileLLM
    from mobilellm_export.quant.stage import QuantizedModel
    from mobilellm_export.runtimes.manifest import Manifest

ASSET = "model.aimodel"
COMPUTE_PRECISIONS = ("fp16", "fp32")


class CoreAIBackend(Backend):
    name = "coreai"
    description = "Core AI .aimodel (iOS / macOS 27), prefill and decode functions with states"
    schemes = ("fp16", "int8", "int4", "int4-asym")
    embedding_choices = ("none", "int8", "int4")
    compute_precisions = COMPUTE_PRECISIONS
    requires = ("coreai_torch", "coreai.runtime")
    install_hint = "Apple's Core AI packages (pip install 'mobilellm-export[coreai]')"

    def export(self, model: MobileLLM, quantized: QuantizedModel, request: ExportRequest, out_dir: Path,
               progress: Progress) -> ExportResult:
        """Write model.aimodel into `out_dir`, its quantized weights from the stage's codes."""
        from .convert import INPUTS, convert, state_names

        if not model.config.share_embedding:
            raise UnsupportedError("the coreai backend expects a shared embedding (every MobileLLM has one)")
        scheme = fp16_storage(request.scheme)
        precision = request.compute_precision or COMPUTE_PRECISIONS[0]
        progress.step(f"linear {scheme.linear.describe()}, shared embedding {scheme.embedding.describe()}, "
                      f"{precision} compute")
        facts = convert(model, quantized, request.max_context, out_dir / ASSET, progress, compute_precision=precision)
        states = state_names(model.config.n_executed_layers)
        return ExportResult(
            stored_scheme=scheme, files={"aimodel": ASSET}, kv_cache_bytes_per_value=2,
            details={"compute_precision": precision, "minimum_deployment_target": "iOS27 / macOS27",
                     "functions": {"prefill": "1..max_context tokens", "decode": "1 token"},
                     "inputs": {INPUTS[0]: "int32 [1, n]", INPUTS[1]: "int32 [n], the tokens' positions"},
                     "outputs": {"logits": "fp32 [1, n, vocab], every position"},
                     "states": {"names": f"{states[0]} .. {states[-1]}", "count": len(states),
                                "shape": "fp16 [1, kv_heads, max_context, head_dim]"},
                     **facts})

    def inspect_storage(self, manifest: Manifest) -> StorageReport:
        from .inspect import inspect_storage

        return inspect_storage(manifest)

    def check_structure(self, manifest: Manifest, reference: MobileLLM) -> list[StructureCheck]:
        from .inspect import check_structure

        return check_structure(manifest, reference)
