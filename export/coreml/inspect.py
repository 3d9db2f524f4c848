"""What can be checked of a Core ML package on any system, without running it: the MIL program
read back from the package, its weights, states and interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mobilellm_export.model.config import MobileLLMConfig
from mobilellm_export.model.modeling import MobileLLM
from mobilellm_export.runtimes.manifest import Manifest

from ..contract import StorageReport, StructureCheck


def load_program(package: Path) -> tuple[Any, Any]:
    """(spec, MIL program) of a saved package, without compiling or loading it."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    mlmodel = ct.models.MLModel(str(package), skip_model_load=True)
    spec = mlmodel.get_spec()
    return spec, milproto_load(spec, spec.specificationVersion, mlmodel.weights_dir)


def weight_ops(program: Any) -> dict[str, Any]:
    """Stored weights by name: constexpr ops (quantized) and the float consts that are not their
    inputs, as the MIL program holds them."""
    ops = list(program.functions["main"].operations)
    stored: dict[str, Any] = {}
    for op in ops:
        if op.op_type.startswith("constexpr_"):
            stored[op.name] = op
        elif op.op_type == "const" and op.outputs[0].val is not None and getattr(op.outputs[0].val, "size", 0) >= 64:
            if not any(child.op_type.startswith("constexpr_") for child in op.outputs[0].child_ops):
                stored[op.name] = op
    return stored


def inspect_storage(manifest: Manifest) -> StorageReport:
    """Unique weights in the package, who reads the shared matrix, and weight.bin's size."""
    package = manifest.path("package")
    _, program = load_program(package)
    stored = weight_ops(program)
    embedding = [name for name in stored if name.startswith("p_embed_tokens_weight")]
    readers: dict[str, list[str]] = {}
    for name in embedding:
        readers[name] = sorted(child.op_type for child in stored[name].outputs[0].child_ops)
    weight_bin = package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    config, context = manifest.model.config, manifest.runtime.max_context
    rope = 2 * (context + 1) * config["head_dim"] * 2  # cos and sin tables, fp16
    if MobileLLMConfig.from_dict(config).temperature_tuned:
        rope += (context + 1) * 2  # NoPE blocks' temperature table
    # weight.bin puts a 64-byte header in front of every blob and aligns blobs to 64 bytes.
    blobs = sum(1 + len(op.inputs) if op.op_type.startswith("constexpr_") else 1 for op in stored.values())
    # Norm weights are fp16 here where the expected figure counts them fp32 for quantized schemes.
    norms = (2 * config["n_layers"] + 1) * config["dim"]
    norm_delta = -2 * norms if manifest.quantization["linear"]["bits"] < 16 else 0
    # Once: one embedding op, read by the lookup (gather) and the output projection (linear).
    once = len(embedding) == 1 and all({"gather", "linear"} <= set(ops) for ops in readers.values())
    return StorageReport(stored_bytes=weight_bin.stat().st_size, non_weight_bytes=rope + 128 * blobs + norm_delta,
                         shared_matrix_once=once, shared_matrix_readers={k: tuple(v) for k, v in readers.items()})


# Keyed by the narrowest width stored. Measured here: int4 round to nearest 0.10 (embedded model),
# GPTQ 0.19 (SmolLM2-135M, int4-asym); int8 about 0.007; fp16 rounding about 5e-4.
RELATIVE_ERROR_BOUND = {16: 0.002, 8: 0.02, 4: 0.25}


def check_structure(manifest: Manifest, reference: MobileLLM) -> list[StructureCheck]:
    """What can be checked without running Core ML: the interface and states the runners rely on,
    and every stored weight, dequantized, against the reference model's."""
    import numpy as np

    config = reference.config
    context = manifest.runtime.max_context
    spec, program = load_program(manifest.path("package"))
    desc = spec.description
    checks: list[StructureCheck] = []

    inputs = {f.name: f.type.multiArrayType for f in desc.input}
    flexible = all(name in inputs and inputs[name].shapeRange.sizeRanges[-1].upperBound == context
                   for name in ("input_ids", "causal_mask"))
    logits = [f for f in desc.output if f.name == "logits"]
    io_ok = (flexible and len(logits) == 1 and list(logits[0].type.multiArrayType.shape) == [1, config.vocab_size]
             and spec.specificationVersion >= 9)
    checks.append(StructureCheck("interface", io_ok, f"inputs {', '.join(inputs)} (length 1..{context}), output logits "
                   f"[1, {config.vocab_size}], spec version {spec.specificationVersion} (iOS 18 = 9)"))

    want_shape = [1, context, config.n_kv_heads, config.head_dim]
    states = [f.type.stateType.arrayType for f in desc.state]
    fp16 = 65552  # ArrayFeatureType.FLOAT16
    states_ok = (len(states) == 2 * config.n_executed_layers
                 and all(list(s.shape) == want_shape and s.dataType == fp16 for s in states))
    checks.append(StructureCheck("states", states_ok, f"{len(states)} fp16 states {want_shape} "
                   f"(2 per executed block: {config.n_executed_layers})"))

    params = {name.replace(".", "_"): p.detach().float().numpy() for name, p in reference.named_parameters()}
    # Parameter ops are named "p_<parameter with _ for .>_to_fp16[_quantized]" by the converter.
    stored = {name[2:].split("_to_fp16")[0]: op for name, op in weight_ops(program).items() if name.startswith("p_")}
    # Every matrix must be there (equal norm vectors may legitimately be deduplicated into one).
    matrices = {name for name, value in params.items() if value.ndim == 2}
    worst, compared, missing = 0.0, 0, sorted(matrices - set(stored))
    for name, op in stored.items():
        expected = params.get(name)
        if expected is None:
            continue
        values = (op.materialized_val_inference() if op.op_type.startswith("constexpr_") else op.outputs[0].val)
        values = values.astype(np.float32).reshape(expected.shape)
        compared += 1
        worst = max(worst, float(np.linalg.norm(values - expected) / max(np.linalg.norm(expected), 1e-12)))
    # Per matrix, the stored weight's relative distance from the reference: a bound that holds for
    # round to nearest and for GPTQ (whose error compensation moves single weights by more than a
    # step) alike, and that a wrong layout or a swapped matrix breaks by an order of magnitude.
    bound = RELATIVE_ERROR_BOUND[min(manifest.quantization["linear"]["bits"], manifest.quantization["embedding"]["bits"])]
    checks.append(StructureCheck("stored weights", not missing and worst <= bound,
                                 f"{compared} weights, each once; worst relative distance from the reference "
                                 f"{worst:.4f} (bound {bound})" + (f"; missing: {', '.join(missing[:3])}" if missing else "")))
    return checks
