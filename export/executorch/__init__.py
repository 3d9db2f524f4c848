"""ExecuTorch backend: a `.pte` program lowered to XNNPACK plus its weights in a `.ptd` file.

The program follows the stock LLM runner's contract (Android's `LlmModule`, the iOS runner and
`executorch.extension.llm.runner.TextLLMRunner` load it unchanged): method `forward(tokens int64
[1, n], input_pos int64 [1]) -> float logits [1, vocab]` with the KV cache held as mutable buffers
written by ExecuTorch's `llama::update_cache` and read by `llama::custom_sdpa`, and the constant
methods the runner reads (`get_max_seq_len`, `get_eos_ids`, ...).

Shared weights are stored once:

* LS blocks are one set of modules run twice, so each quantized weight is one constant; XNNPACK
  keys its serialized weights by content hash, so both runs' operators point at one blob.
* The shared embedding is harder: the output projection runs in XNNPACK (which packs the matrix
  into its own named data) while the token lookup runs in a portable/quantized kernel that reads a
  program constant. Inside one `.pte` those are two stores and ExecuTorch keeps two copies (its
  own `export_llm` does). Here every weight goes to the program's external data file
  (ExecuTorch's program-data separation, `model.ptd`), where XNNPACK's blobs and the program's
  constants share one `NamedDataStore` that deduplicates identical bytes. The lookup is built
  over the *exact bytes XNNPACK serializes* for the output projection (fp32 rows; int8 rows with
  fp32 per-row scales; int4 nibbles packed low-first with bf16 group scales), so the matrix is
  written once and read by both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mobilellm_export.progress import Progress

from ..contract import Backend, ExportRequest, ExportResult, StorageReport

if TYPE_CHECKING:
    from mobilellm_export.model.modeling import MobileLLM
    from mobilellm_export.quant.stage import QuantizedModel
    from mobilellm_export.runtimes.manifest import Manifest


class ExecuTorchBackend(Backend):
    name = "executorch"
    description = "ExecuTorch .pte (XNNPACK) with its weights in a .ptd"
    # int4 runs as XNNPACK's "8da4w" (int8 dynamic activations), recorded in the manifest.
    schemes = ("fp32", "int8", "int4")
    embedding_choices = ("none", "int8", "int4")
    # The lowering stack, ExecuTorch's llama:: custom ops and its quantized_decomposed:: ops.
    requires = ("executorch.exir", "executorch.extension.llm.custom_ops.custom_ops",
                "executorch.exir.passes._quant_patterns_and_replacements")
    install_hint = "the executorch package (pip install executorch==1.5.1)"
    reads_replaced_floats = False  # quantized linears and the shared matrix come from the codes

    def export(self, model: MobileLLM, quantized: QuantizedModel, request: ExportRequest, out_dir: Path,
               progress: Progress) -> ExportResult:
        from .decoder import build_decoder, stored_scheme
        from .lowering import DATA_FILE, PROGRAM_FILE, lower, runner_metadata, write_program

        scheme = stored_scheme(request.scheme)
        decoder = build_decoder(model, quantized, request.max_context)
        program = lower(decoder, runner_metadata(model.config, request.max_context), progress)
        write_program(program, out_dir)
        return ExportResult(stored_scheme=scheme, files={"program": PROGRAM_FILE, "data": DATA_FILE},
                            kv_cache_bytes_per_value=4,
                            details={"partitioner": "XnnpackPartitioner",
                                     "kv_cache": "llama::update_cache + llama::custom_sdpa, fp32"})

    def inspect_storage(self, manifest: Manifest) -> StorageReport:
        from .inspect import inspect_storage

        return inspect_storage(manifest)
