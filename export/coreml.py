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

import dataclasses
import platform
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mobilellm_export.errors import MissingDependencyError, UnsupportedError
from mobilellm_export.model.modeling import MobileLLM, apply_rope, rope_tables, run_blocks
from mobilellm_export.progress import Progress
from mobilellm_export.quant.schemes import QuantScheme, WeightFormat

from .registry import ExportRequest

PACKAGE = "model.mlpackage"
COMPUTE_UNITS = ("all", "cpu_and_ne", "cpu_and_gpu", "cpu_only")


def require() -> None:
    try:
        import coremltools  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"the coreml backend needs coremltools (pip install coremltools==9.0): {exc}") from None


def runtime_unavailable() -> str | None:
    """Why artifacts of this backend cannot run here, or None."""
    if platform.system() != "Darwin":
        return "Core ML models execute only on macOS (iOS/iPadOS devices); this is " + platform.system()
    return None


# -- the exported module -------------------------------------------------------------------------

class StateCache(nn.Module):
    """One executed block's cache as Core ML states: fp16 [1, max_context, kv_heads, head_dim].

    Token-major, so the rows one call writes are a contiguous block whatever the prompt length;
    in a head-major layout torch.export specializes on whether the write covers the whole cache.
    """

    def __init__(self, n_kv_heads: int, max_context: int, head_dim: int, n_rep: int) -> None:
        super().__init__()
        shape = (1, max_context, n_kv_heads, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=torch.float16), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=torch.float16), persistent=False)
        self.n_rep = n_rep

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor) -> Tensor:
        """q [1, n, H, D], k/v [1, n, Hkv, D]; mask [1, 1, n, end] additive. Writes positions
        end - n .. end - 1, attends over 0 .. end - 1."""
        n, end = q.shape[1], mask.shape[-1]
        self.k[:, end - n:end] = k.to(self.k.dtype)
        self.v[:, end - n:end] = v.to(self.v.dtype)
        keys = self.k[:, :end].to(q.dtype).transpose(1, 2)
        values = self.v[:, :end].to(q.dtype).transpose(1, 2)
        if self.n_rep > 1:
            keys = keys.repeat_interleave(self.n_rep, dim=1)
            values = values.repeat_interleave(self.n_rep, dim=1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=mask)
        return out.transpose(1, 2)


class CoreMLDecoder(nn.Module):
    """MobileLLM with Core ML states: forward(input_ids [1, n], causal_mask [1, 1, n, end])."""

    def __init__(self, model: MobileLLM, max_context: int) -> None:
        super().__init__()
        config = model.config
        self.embed_tokens = model.embed_tokens
        self.layers = model.layers
        self.norm = model.norm
        self.order = config.execution_order
        self.caches = nn.ModuleList(
            StateCache(config.n_kv_heads, max_context, config.head_dim, config.n_heads // config.n_kv_heads)
            for _ in range(config.n_executed_layers)
        )
        # One row more than the context: slicing the whole table would let torch.export specialize
        # the prompt length to the context length.
        cos, sin = rope_tables(config.head_dim, max_context + 1, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, input_ids: Tensor, causal_mask: Tensor) -> Tensor:
        n, end = input_ids.shape[1], causal_mask.shape[-1]
        cos, sin = self.rope_cos[end - n:end], self.rope_sin[end - n:end]
        mask = causal_mask.to(torch.float32)

        def rope(x: Tensor) -> Tensor:
            return apply_rope(x, cos, sin)

        attends = [lambda q, k, v, c=cache: c.attend(q, k, v, mask=mask) for cache in self.caches]
        x = run_blocks(self.layers, self.order, self.embed_tokens(input_ids), rope, attends)
        # Only the last position's logits: the output projection reads the embedding matrix.
        return F.linear(self.norm(x[:, -1, :]), self.embed_tokens.weight).float()


def causal_mask(n: int, end: int) -> Tensor:
    """The additive mask for n new tokens ending at position `end`: query i (position end - n + i)
    sees keys 0 .. end - n + i."""
    keys = torch.arange(end)[None, :]
    queries = torch.arange(end - n, end)[:, None]
    return torch.where(keys <= queries, 0.0, float("-inf")).to(torch.float16)[None, None]


# -- conversion ----------------------------------------------------------------------------------

def stored_scheme(scheme: QuantScheme) -> QuantScheme:
    """As stored: fp16 weights and norms (mlprogram's compute precision), fp16 scales."""
    def stored(fmt: WeightFormat) -> WeightFormat:
        if fmt.is_float:
            return WeightFormat(16)
        return dataclasses.replace(fmt, scale_bytes=2)
    return dataclasses.replace(scheme, linear=stored(scheme.linear), embedding=stored(scheme.embedding))


def quantization_config(mlmodel: Any, fmt: WeightFormat) -> Any:
    import coremltools.optimize.coreml as cto

    if fmt.is_float:
        return None
    granularity = "per_channel" if fmt.group_size is None else "per_block"
    op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype=f"int{fmt.bits}", granularity=granularity,
                                     block_size=fmt.group_size or 0, weight_threshold=1024)
    # One global config: the shared embedding feeds a gather and a linear, and per-op configs
    # for those two would conflict on the one const. Only the rotary tables are named out:
    # they are weights to coremltools but must stay fp16.
    rope = {name: None for name in cto.get_weights_metadata(mlmodel, weight_threshold=1024) if "rope" in name}
    return cto.OptimizationConfig(global_config=op, op_name_configs=rope)


def convert(model: MobileLLM, scheme: QuantScheme, max_context: int, progress: Progress) -> Any:
    import coremltools as ct
    import numpy as np

    decoder = CoreMLDecoder(model, max_context).eval()
    n = torch.export.Dim("n", min=1, max=max_context)
    end = torch.export.Dim("end", min=1, max=max_context)
    example = (torch.tensor([[1, 2]], dtype=torch.int32), causal_mask(2, 5))
    progress.step("torch.export")
    with torch.no_grad():
        exported = torch.export.export(decoder, example, dynamic_shapes=({1: n}, {2: n, 3: end}), strict=False)
        exported = exported.run_decompositions({})
    progress.step("converting with coremltools (mlprogram, iOS 18)")
    mlmodel = ct.convert(
        exported,
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT16,
        outputs=[ct.TensorType(name="logits", dtype=np.float32)],
        skip_model_load=True,
    )
    config = quantization_config(mlmodel, scheme.linear)
    if config is not None:
        import coremltools.optimize.coreml as cto

        progress.step(f"quantizing weights: {scheme.linear.describe()}")
        mlmodel = cto.linear_quantize_weights(mlmodel, config)
    return mlmodel


def export(model: MobileLLM, request: ExportRequest, out_dir: Path, progress: Progress) -> dict[str, Any]:
    """Write model.mlpackage into `out_dir`; return the manifest's backend section."""
    if request.scheme.name not in ("fp16", "int8", "int4"):
        raise UnsupportedError(f"the coreml backend has no {request.scheme.name!r} scheme; use fp16, int8 or int4")
    scheme = stored_scheme(request.scheme)
    if scheme.embedding != scheme.linear:
        # The shared matrix is a weight like any other to coremltools' one global config.
        raise UnsupportedError("the coreml backend quantizes the shared embedding like the linear layers; "
                               "drop --embedding-quant")
    if not model.config.share_embedding:
        raise UnsupportedError("the coreml backend expects a shared embedding (every MobileLLM has one)")
    progress.step(f"linear {scheme.linear.describe()}, shared embedding {scheme.embedding.describe()}")
    mlmodel = convert(model, scheme, request.max_context, progress)
    progress.step(f"writing {PACKAGE}")
    mlmodel.save(str(out_dir / PACKAGE))
    units = request.compute_units or "all"
    return {"package": PACKAGE, "compute_units": units, "minimum_deployment_target": "iOS18 / macOS15",
            "inputs": {"input_ids": "int32 [1, n]", "causal_mask": "fp16 [1, 1, n, end], 0 or -inf"},
            "outputs": {"logits": "fp32 [1, vocab], last position"},
            "kv_cache": "Core ML states, fp16 [1, max_context, kv_heads, head_dim], two per executed block",
            "stored_scheme": scheme}


def preload_runtime() -> None:
    """Load the runtime libraries (benchmarks take their memory baseline after this)."""
    import coremltools  # noqa: F401


def open_runtime(directory: Path, manifest: dict[str, Any], *, threads: int | None = None) -> Any:
    # Core ML schedules its own compute units; a thread count does not apply.
    from mobilellm_export.runtimes.coreml_runtime import CoreMLRuntime

    section = manifest["coreml"]
    return CoreMLRuntime(directory / section["package"], max_context=manifest["runtime"]["max_context"],
                         vocab_size=manifest["runtime"]["vocab_size"], compute_units=section["compute_units"])


# -- structural inspection (works on any system) ---------------------------------------------------

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


def inspect_storage(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Unique weights in the package, who reads the shared matrix, and weight.bin's size."""
    package = directory / manifest["coreml"]["package"]
    _, program = load_program(package)
    stored = weight_ops(program)
    embedding = [name for name in stored if name.startswith("p_embed_tokens_weight")]
    readers: dict[str, list[str]] = {}
    for name in embedding:
        readers[name] = sorted(child.op_type for child in stored[name].outputs[0].child_ops)
    weight_bin = package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    config, context = manifest["model"]["config"], manifest["runtime"]["max_context"]
    rope = 2 * (context + 1) * config["head_dim"] * 2  # cos and sin tables, fp16
    # weight.bin puts a 64-byte header in front of every blob and aligns blobs to 64 bytes.
    blobs = sum(1 + len(op.inputs) if op.op_type.startswith("constexpr_") else 1 for op in stored.values())
    # Norm weights are fp16 here where the expected figure counts them fp32 for quantized schemes.
    norms = (2 * config["n_layers"] + 1) * config["dim"]
    norm_delta = -2 * norms if manifest["quantization"]["linear"]["bits"] < 16 else 0
    return {
        "weights": len(stored),
        "buffer_bytes": weight_bin.stat().st_size,
        # The lookup (gather) and the output projection (linear) read the one embedding op.
        "shared_matrix": {name: ops for name, ops in readers.items() if {"gather", "linear"} <= set(ops)}
        if len(embedding) == 1 else {},
        "non_weight_bytes": rope + 128 * blobs + norm_delta,
    }


def check_structure(directory: Path, manifest: dict[str, Any], reference: MobileLLM) -> list[tuple[str, bool, str]]:
    """What can be checked without running Core ML: the interface and states the runners rely on,
    and every stored weight, dequantized, against the reference model's."""
    import numpy as np

    config = reference.config
    context = manifest["runtime"]["max_context"]
    spec, program = load_program(directory / manifest["coreml"]["package"])
    desc = spec.description
    checks: list[tuple[str, bool, str]] = []

    inputs = {f.name: f.type.multiArrayType for f in desc.input}
    flexible = all(name in inputs and inputs[name].shapeRange.sizeRanges[-1].upperBound == context
                   for name in ("input_ids", "causal_mask"))
    logits = [f for f in desc.output if f.name == "logits"]
    io_ok = (flexible and len(logits) == 1 and list(logits[0].type.multiArrayType.shape) == [1, config.vocab_size]
             and spec.specificationVersion >= 9)
    checks.append(("interface", io_ok, f"inputs {', '.join(inputs)} (length 1..{context}), output logits "
                   f"[1, {config.vocab_size}], spec version {spec.specificationVersion} (iOS 18 = 9)"))

    want_shape = [1, context, config.n_kv_heads, config.head_dim]
    states = [f.type.stateType.arrayType for f in desc.state]
    fp16 = 65552  # ArrayFeatureType.FLOAT16
    states_ok = (len(states) == 2 * config.n_executed_layers
                 and all(list(s.shape) == want_shape and s.dataType == fp16 for s in states))
    checks.append(("states", states_ok, f"{len(states)} fp16 states {want_shape} "
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
        if op.op_type.startswith("constexpr_"):
            values = op.materialized_val_inference().astype(np.float32)
            scale = np.abs(op.scale.val.astype(np.float32))
            block = [d // s for d, s in zip(values.shape, scale.shape)]
            bound = np.kron(scale, np.ones(block, dtype=np.float32)) * 0.6 + 1e-3 * np.abs(expected)
        else:
            values = op.outputs[0].val.astype(np.float32)
            bound = 1e-3 * np.abs(expected) + 1e-6
        compared += 1
        worst = max(worst, float(np.max(np.abs(values.reshape(expected.shape) - expected) / bound)))
    checks.append(("stored weights", not missing and worst <= 1.0,
                   f"{compared} weights, each once, dequantized within {worst:.2f} of their quantization bound of "
                   "the reference" + (f"; missing: {', '.join(missing[:3])}" if missing else "")))
    return checks
