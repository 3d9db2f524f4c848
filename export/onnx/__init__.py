"""ONNX backend: a KV-cache decoder graph for onnxruntime and onnxruntime-genai.

The graph is written node by node from the model's modules and weights rather than traced: the
fast CPU path of onnxruntime is its fused contrib operators (`GroupQueryAttention`,
`SkipSimplifiedLayerNormalization`, `MatMulNBits`, `GatherBlockQuantized`), which no exporter
emits from a traced Llama block without a round of pattern-matching rewrites, and writing the
initializers ourselves is what guarantees that each shared matrix exists once. The result is
checked token for token against the eager model (tests and `verify`).

Interface (onnxruntime-genai's naming): inputs `input_ids`, `attention_mask`, `position_ids`,
`past_key_values.{i}.key/value` [batch, kv_heads, past, head_dim]; outputs `logits` [batch, seq,
vocab] and `present.{i}.key/value` [batch, kv_heads, past + seq, head_dim], one pair per *executed*
block, so an LS model has two cache entries per stored block.

Shared weights are stored once:

* LS blocks: both runs' nodes read the same initializers.
* The shared embedding: float, it is one [vocab, dim] initializer read by `Gather` and by a
  `Gemm` with transB (a `MatMul` would need a transposed copy, which onnxruntime would fold into a
  second matrix at session start). Quantized, it is one packed initializer with one set of
  scales, read by a `GatherBlockQuantized` for the lookup and, through a `Reshape` to the block
  layout, by the output projection's `MatMulNBits` (int4 and int8 alike).

On disk every matrix is stored once. In memory onnxruntime keeps the quantized shared matrix
twice, and that cannot be avoided from the graph: `MatMulNBits` prepacks its weight into its
own layout at session start while the lookup needs the stored bytes (README, ONNX section, has
the measurement).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from mobilellm_export.progress import Progress

from ..contract import Backend, ExportRequest, ExportResult, StorageReport

if TYPE_CHECKING:
    from mobilellm_export.model.modeling import MobileLLM
    from mobilellm_export.quant.stage import QuantizedModel
    from mobilellm_export.runtimes.manifest import Manifest

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
# Weights beyond this go to an external data file (protobuf cannot hold 2 GiB anyway): onnxruntime
# then maps the file instead of parsing the weights into a protobuf in memory first.
_EXTERNAL_DATA_THRESHOLD = 16 << 20


class OnnxBackend(Backend):
    name = "onnx"
    description = "ONNX decoder with KV-cache inputs/outputs for onnxruntime and onnxruntime-genai"
    schemes = ("fp32", "int8", "int4", "int4-asym")
    embedding_choices = ("none", "int8", "int4")
    requires = ("onnx", "onnxruntime")
    install_hint = "the onnx and onnxruntime packages (pip install onnx onnxruntime)"
    reads_replaced_floats = False  # linears and a quantized shared matrix come from the codes

    def export(self, model: MobileLLM, quantized: QuantizedModel, request: ExportRequest, out_dir: Path,
               progress: Progress) -> ExportResult:
        """Write model.onnx (+ model.onnx.data when large) and genai_config.json into `out_dir`."""
        import onnx
        import torch

        from .genai import GENAI_CONFIG, genai_config
        from .graph import OPSET, build_graph
        from .weights import ACCURACY_LEVEL, row_block, stored_scheme

        scheme = stored_scheme(request.scheme, row_block(model.config))
        progress.step(f"building the ONNX graph: linear {scheme.linear.describe()}, "
                      f"shared embedding {scheme.embedding.describe()}")
        with torch.no_grad():
            proto = build_graph(model, quantized, request.max_context)
        weight_bytes = sum(len(t.raw_data) for t in proto.graph.initializer)
        external = weight_bytes > _EXTERNAL_DATA_THRESHOLD
        progress.step(f"writing {MODEL_FILE}" + (f" with weights in {DATA_FILE}" if external else ""))
        if external:
            onnx.save_model(proto, str(out_dir / MODEL_FILE), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=DATA_FILE, size_threshold=1024)
        else:
            onnx.save_model(proto, str(out_dir / MODEL_FILE))
        config = genai_config(model.config, MODEL_FILE, request.max_context)
        (out_dir / GENAI_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        ops: dict[str, int] = {}
        for node in proto.graph.node:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
        files = {"model": MODEL_FILE, "genai_config": GENAI_CONFIG} | ({"data": DATA_FILE} if external else {})
        return ExportResult(
            stored_scheme=scheme, files=files, kv_cache_bytes_per_value=4,
            details={"opset": OPSET, "accuracy_level": ACCURACY_LEVEL, "ops": dict(sorted(ops.items())),
                     "kv_cache": "explicit past/present inputs and outputs, fp32, [batch, kv_heads, seq, head_dim]"})

    def inspect_storage(self, manifest: Manifest) -> StorageReport:
        from .inspect import inspect_storage

        return inspect_storage(manifest)
