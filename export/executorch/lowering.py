"""torch.export -> XNNPACK -> an ExecuTorch program whose weights all go to one external data file."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from mobilellm_export.model.config import MobileLLMConfig
from mobilellm_export.progress import Progress

from .decoder import ExecuTorchDecoder
from .partitioning import lean_dependency_index

_DATA_TAG = "model"  # ExecuTorch names the external data file "<tag>.ptd"
PROGRAM_FILE = "model.pte"
DATA_FILE = f"{_DATA_TAG}.ptd"


def runner_metadata(config: MobileLLMConfig, max_context: int) -> dict[str, Any]:
    """Constant methods the stock LLM runner reads."""
    return {
        "get_max_seq_len": max_context,
        "get_max_context_len": max_context,
        "get_vocab_size": config.vocab_size,
        "get_bos_id": config.bos_id,
        "get_eos_ids": list(config.eos_ids),
        "get_n_layers": config.n_executed_layers,
        "use_kv_cache": True,
        "use_sdpa_with_kv_cache": False,
        "enable_dynamic_shape": True,
    }


def _tag_weights_external(program: torch.export.ExportedProgram) -> None:
    """Mark every weight for the external data file (the tag survives ExecuTorch's retracing).

    XNNPACK reads the tag from the node it serializes: the weight's placeholder for float weights
    and the dequantize node in front of it for quantized ones, so both kinds are tagged.
    """
    for node in program.graph.nodes:
        if node.op == "placeholder" or (node.op == "call_function" and "dequantize" in str(node.target)):
            node.meta.setdefault("custom", {})["delegate_constant_tag"] = _DATA_TAG


def xnnpack_partitioner(*, all_passes: bool = False) -> Any:
    """XNNPACK's partitioner; unless `all_passes`, its preprocessing cut to the one graph pass this
    decoder needs.

    XNNPACK's preprocess runs about fifteen graph passes over every partition, and each retraces
    the partition under fake tensors with the symbolic sequence length: that was half of the whole
    export's time (a 135M int4 export: 48% of ~10 minutes). Most passes rewrite ops this decoder
    never emits (convolutions, batch norm, upsampling, SDPA, concatenation, PReLU, padding, ReLU
    fusion, max-pool indices, dim-order ops, which `_skip_dim_order` leaves out). Given the
    compile spec `dqlinear_partitioner`, XnnpackBackend.preprocess runs only ConvertToLinearPass
    (a switch preprocess reads; ExecuTorch 1.5.1's own partitioners no longer set it, so it is
    not a promise of the API). The program lowered so computes the same logits bit for bit as
    with all passes; tests/export/test_executorch.py checks that on every scheme, so an ExecuTorch
    release where a skipped pass matters fails there, not on a phone.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir.backend.compile_spec_schema import CompileSpec

    partitioner = XnnpackPartitioner()
    if not all_passes:
        partitioner.delegation_spec.compile_specs.append(CompileSpec("dqlinear_partitioner", b""))
    return partitioner


def lower(decoder: ExecuTorchDecoder, metadata: dict[str, Any], progress: Progress, *,
          all_xnnpack_passes: bool = False, stock_dependency_index: bool = False) -> Any:
    """torch.export -> XNNPACK lowering -> ExecuTorch program with external weights.
    `all_xnnpack_passes`, `stock_dependency_index`: XNNPACK's full preprocessing and ExecuTorch's
    own partitioner index (see partitioning.py), the references the tests compare with."""
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    example = (torch.tensor([[1, 2, 3]], dtype=torch.long), torch.tensor([0], dtype=torch.long))
    seq = torch.export.Dim("seq", min=1, max=decoder.max_context)
    dynamic = ({1: seq}, None)
    progress.step("torch.export")
    with torch.no_grad():
        exported = torch.export.export(decoder, example, dynamic_shapes=dynamic, strict=False)
    # Every weight goes to the external data file, XNNPACK's blobs included, so that they share
    # one deduplicating store (see the package docstring).
    _tag_weights_external(exported)
    progress.step("lowering to XNNPACK")
    # to_edge + to_backend rather than to_edge_transform_and_lower: the latter retraces the whole
    # program three times to decide what not to decompose, which made export a fifth slower
    # here. Keeping aten.linear whole is all XNNPACK needs (it matches torchao's dequantize ->
    # linear patterns); the lowered program is identical.
    edge = to_edge(
        exported,
        compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True,
                                         preserve_ops=[torch.ops.aten.linear.default]),
        constant_methods=metadata,
    )
    with contextlib.nullcontext() if stock_dependency_index else lean_dependency_index():
        edge = edge.to_backend(xnnpack_partitioner(all_passes=all_xnnpack_passes))
    progress.step("serializing the ExecuTorch program")
    return edge.to_executorch(ExecutorchBackendConfig(
        extract_delegate_segments=True,
        do_quant_fusion_and_const_prop=True,
        memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
        sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
        external_constants=lambda node: _DATA_TAG,
    ))


def write_program(program: Any, out_dir: Path) -> None:
    (out_dir / PROGRAM_FILE).write_bytes(program.buffer)
    program.write_tensor_data_to_file(str(out_dir))
    if not (out_dir / DATA_FILE).is_file():
        raise RuntimeError(f"ExecuTorch wrote no {DATA_FILE}")  # a bug, not a user error
