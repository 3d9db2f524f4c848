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

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilellm_export.errors import MissingDependencyError, UnsupportedError
from mobilellm_export.model.modeling import MobileLLM, rope_tables
from mobilellm_export.progress import Progress
from mobilellm_export.quant.schemes import QuantScheme, WeightFormat

from .registry import ExportRequest

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
GENAI_CONFIG = "genai_config.json"
OPSET = 23  # RMSNormalization
MS_DOMAIN = "com.microsoft"
# Weights beyond this go to an external data file (protobuf cannot hold 2 GiB anyway): onnxruntime
# then maps the file instead of parsing the weights into a protobuf in memory first.
_EXTERNAL_DATA_THRESHOLD = 16 << 20
# MatMulNBits accuracy level 4: activations quantized to int8 at run time, so CPUs use their int8
# dot-product instructions (the setting onnxruntime-genai's builder uses for CPU int4).
ACCURACY_LEVEL = 4


def require() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"the onnx backend needs the onnx and onnxruntime packages (pip install onnx onnxruntime): {exc}"
        ) from None


# -- weights -------------------------------------------------------------------------------------

def quantize_blockwise(weight: np.ndarray, fmt: WeightFormat) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric block quantization of `weight` [N, K] in MatMulNBits' layout.

    Returns B uint8 [N, K / block, block * bits / 8] holding q + 2^(bits-1) (the operator's zero
    point when none is given), 4-bit values packed low nibble first, and scales float32
    [N, K / block]. The scale maps the block's largest magnitude onto the half range
    (2^bits - 1) / 2, torchao's symmetric mapping, so both backends quantize alike.
    """
    n, k = weight.shape
    block = fmt.group_size or k
    if k % block:
        raise UnsupportedError(f"width {k} is not a multiple of the quantization block {block}")
    half_range = (2 ** fmt.bits - 1) / 2
    qmin, qmax = -(2 ** (fmt.bits - 1)), 2 ** (fmt.bits - 1) - 1
    blocks = weight.astype(np.float32).reshape(n, k // block, block)
    scales = np.abs(blocks).max(axis=-1) / half_range
    scales = np.where(scales == 0, 1.0, scales).astype(np.float32)
    q = np.clip(np.rint(blocks / scales[..., None]), qmin, qmax).astype(np.int16) - qmin
    q = q.astype(np.uint8)
    if fmt.bits == 4:
        q = q[..., 0::2] | (q[..., 1::2] << 4)
    return np.ascontiguousarray(q), scales


def dequantize_blockwise(packed: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """The float weight [N, K] that MatMulNBits computes with (tests compare it with the model's)."""
    if bits == 4:
        q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(packed.shape[0], packed.shape[1], -1)
    else:
        q = packed
    values = (q.astype(np.float32) - 2 ** (bits - 1)) * scales[..., None]
    return values.reshape(values.shape[0], -1)


def stored_scheme(scheme: QuantScheme) -> QuantScheme:
    """The scheme as stored here: scales are float32, and MatMulNBits works on blocks, so the
    per-channel int8 scheme is stored in blocks of 32 (which also quantizes more finely; README
    has the comparison with per-channel dynamic quantization)."""
    def stored(fmt: WeightFormat) -> WeightFormat:
        if fmt.is_float:
            return fmt
        return dataclasses.replace(fmt, group_size=fmt.group_size or 32, scale_bytes=4)
    return dataclasses.replace(scheme, linear=stored(scheme.linear), embedding=stored(scheme.embedding),
                               dynamic_activations=not scheme.linear.is_float)


# -- graph ---------------------------------------------------------------------------------------

class GraphWriter:
    """Collects nodes and initializers; every initializer is added once, by name."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.initializers: dict[str, Any] = {}
        self._count = 0

    def constant(self, name: str, array: np.ndarray) -> str:
        if name not in self.initializers:
            self.initializers[name] = self.numpy_helper.from_array(np.ascontiguousarray(array), name)
        return name

    def op(self, op_type: str, inputs: list[str], *, outputs: int | list[str] = 1, domain: str = "",
           name: str | None = None, **attrs: Any) -> list[str]:
        self._count += 1
        name = name or f"{op_type}_{self._count}"
        out_names = outputs if isinstance(outputs, list) else [f"{name}/out{i}" for i in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, inputs, out_names, name=name, domain=domain or None, **attrs))
        return out_names


@dataclasses.dataclass
class _Linear:
    """One stored linear weight [out, in], float or block-quantized, and how to apply it."""

    name: str
    weight: np.ndarray  # float [out, in]
    fmt: WeightFormat

    def write(self, g: GraphWriter) -> None:
        if self.fmt.is_float:
            # MatMul multiplies by [in, out]: store the transpose once (block weights are never
            # read any other way).
            g.constant(self.name, self.weight.T.astype(np.float32))
        else:
            packed, scales = quantize_blockwise(self.weight, self.fmt)
            g.constant(self.name + "_Q", packed)
            g.constant(self.name + "_scales", scales)

    def apply(self, g: GraphWriter, x: str, node: str) -> str:
        if self.fmt.is_float:
            return g.op("MatMul", [x, self.name], name=node)[0]
        n, k = self.weight.shape
        return g.op("MatMulNBits", [x, self.name + "_Q", self.name + "_scales"], domain=MS_DOMAIN, name=node,
                    K=k, N=n, bits=self.fmt.bits, block_size=self.fmt.group_size, accuracy_level=ACCURACY_LEVEL)[0]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy()


def build_graph(model: MobileLLM, scheme: QuantScheme, max_context: int) -> Any:
    """The decoder as an onnx.ModelProto (weights inline; the caller decides on external data)."""
    from onnx import TensorProto, helper

    config = model.config
    if not config.share_embedding:
        raise UnsupportedError("the onnx backend expects a shared embedding (every MobileLLM has one)")
    if config.head_dim % 16:
        raise UnsupportedError(f"GroupQueryAttention with rotary needs head_dim a multiple of 16, got {config.head_dim}")
    emb_fmt = scheme.embedding
    if not emb_fmt.is_float and config.dim % emb_fmt.group_size:
        raise UnsupportedError(f"the embedding width {config.dim} is not a multiple of the group size {emb_fmt.group_size}")

    g = GraphWriter()
    eps = float(config.norm_eps)
    vocab, dim = config.vocab_size, config.dim

    # Mask bookkeeping that GroupQueryAttention wants: the last valid position of each row, and
    # the total length (past + current).
    mask_sum = g.op("ReduceSum", ["attention_mask", g.constant("axes_1", np.array([1], np.int64))],
                    keepdims=0, name="mask/ReduceSum")[0]
    last = g.op("Sub", [mask_sum, g.constant("one_i64", np.array(1, np.int64))], name="mask/Sub")[0]
    seqlens_k = g.op("Cast", [last], to=TensorProto.INT32, name="mask/seqlens_k")[0]
    mask_shape = g.op("Shape", ["attention_mask"], name="mask/Shape")[0]
    total = g.op("Gather", [mask_shape, g.constant("one_scalar_i64", np.array(1, np.int64))], axis=0,
                 name="mask/Gather")[0]
    total_len = g.op("Cast", [total], to=TensorProto.INT32, name="mask/total_sequence_length")[0]

    cos, sin = rope_tables(config.head_dim, max_context, config.rope_theta)
    half = config.head_dim // 2  # GroupQueryAttention takes the first half (rotate-half layout)
    cos_cache = g.constant("rope_cos", _np(cos[:, :half]))
    sin_cache = g.constant("rope_sin", _np(sin[:, :half]))
    q_dim = config.n_heads * config.head_dim
    qkv_split = g.constant("qkv_split", np.array([q_dim, config.kv_dim, config.kv_dim], np.int64))

    # The shared matrix: one initializer for the lookup and the output projection.
    embedding = _np(model.embed_tokens.weight)
    if emb_fmt.is_float:
        g.constant("embed_tokens", embedding)
        x = g.op("Gather", ["embed_tokens", "input_ids"], axis=0, name="embed/Gather")[0]
    else:
        # Stored once, in the lookup's layout [vocab, dim * bits / 8]; the output projection reads
        # it through a Reshape to MatMulNBits' [vocab, blocks, block bytes]. (onnxruntime folds a
        # Reshape of an initializer into a copy at session start; on this side the copy is the
        # one MatMulNBits prepacks and releases, which measured 4.6 MB less resident memory on
        # the 125M model than reshaping for the lookup, as onnxruntime-genai's builder does.)
        packed, scales = quantize_blockwise(embedding, emb_fmt)
        g.constant("embed_tokens_Q", packed.reshape(vocab, -1))
        g.constant("embed_tokens_scales", scales)
        x = g.op("GatherBlockQuantized", ["embed_tokens_Q", "input_ids", "embed_tokens_scales"], domain=MS_DOMAIN,
                 name="embed/Gather", bits=emb_fmt.bits, block_size=emb_fmt.group_size, gather_axis=0,
                 quantize_axis=1)[0]
        head_weight = g.op("Reshape", ["embed_tokens_Q", g.constant("lm_head_shape", np.array(packed.shape, np.int64))],
                           name="lm_head/Reshape")[0]

    # Stored blocks: weights written once per block, whichever executed runs read them.
    blocks = []
    for b, layer in enumerate(model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight], dim=0)
        linears = {
            "qkv": _Linear(f"layers.{b}.attn.qkv", _np(qkv), scheme.linear),
            "o": _Linear(f"layers.{b}.attn.o_proj", _np(attn.o_proj.weight), scheme.linear),
            "gate": _Linear(f"layers.{b}.mlp.gate_proj", _np(mlp.gate_proj.weight), scheme.linear),
            "up": _Linear(f"layers.{b}.mlp.up_proj", _np(mlp.up_proj.weight), scheme.linear),
            "down": _Linear(f"layers.{b}.mlp.down_proj", _np(mlp.down_proj.weight), scheme.linear),
        }
        for linear in linears.values():
            linear.write(g)
        g.constant(f"layers.{b}.input_layernorm", _np(layer.input_layernorm.weight))
        g.constant(f"layers.{b}.post_attention_layernorm", _np(layer.post_attention_layernorm.weight))
        blocks.append(linears)
    g.constant("norm", _np(model.norm.weight))

    residual: str | None = None
    pending = x  # the branch output still to be added to the residual stream
    for e, b in enumerate(config.execution_order):
        p, lin = f"run{e}", blocks[b]
        # Residual add fused with the next norm (SkipSimplifiedLayerNormalization returns both).
        if residual is None:
            h = g.op("RMSNormalization", [pending, f"layers.{b}.input_layernorm"], axis=-1, epsilon=eps,
                     name=f"{p}/input_norm")[0]
            residual = pending
        else:
            h, _, _, residual = g.op("SkipSimplifiedLayerNormalization", [pending, residual, f"layers.{b}.input_layernorm"],
                                     domain=MS_DOMAIN, epsilon=eps, outputs=4, name=f"{p}/input_norm")
        qkv = lin["qkv"].apply(g, h, f"{p}/qkv")
        q, k, v = g.op("Split", [qkv, qkv_split], axis=-1, outputs=3, name=f"{p}/split")
        # Rotary embeddings at the caller's position_ids (GroupQueryAttention's own rotary
        # derives positions from the mask and ignores position_ids on CPU).
        q = g.op("RotaryEmbedding", [q, "position_ids", cos_cache, sin_cache], domain=MS_DOMAIN, name=f"{p}/rope_q",
                 interleaved=0, num_heads=config.n_heads)[0]
        k = g.op("RotaryEmbedding", [k, "position_ids", cos_cache, sin_cache], domain=MS_DOMAIN, name=f"{p}/rope_k",
                 interleaved=0, num_heads=config.n_kv_heads)[0]
        attn_out = g.op(
            "GroupQueryAttention",
            [q, k, v, f"past_key_values.{e}.key", f"past_key_values.{e}.value", seqlens_k, total_len],
            outputs=[f"{p}/attn", f"present.{e}.key", f"present.{e}.value"], domain=MS_DOMAIN, name=f"{p}/attention",
            num_heads=config.n_heads, kv_num_heads=config.n_kv_heads, scale=float(config.head_dim ** -0.5),
        )[0]
        o = lin["o"].apply(g, attn_out, f"{p}/o_proj")
        h, _, _, residual = g.op("SkipSimplifiedLayerNormalization", [o, residual, f"layers.{b}.post_attention_layernorm"],
                                 domain=MS_DOMAIN, epsilon=eps, outputs=4, name=f"{p}/post_attention_norm")
        gate = lin["gate"].apply(g, h, f"{p}/gate_proj")
        up = lin["up"].apply(g, h, f"{p}/up_proj")
        silu = g.op("Mul", [gate, g.op("Sigmoid", [gate], name=f"{p}/sigmoid")[0]], name=f"{p}/silu")[0]
        pending = lin["down"].apply(g, g.op("Mul", [silu, up], name=f"{p}/swiglu")[0], f"{p}/down_proj")

    h = g.op("SkipSimplifiedLayerNormalization", [pending, residual, "norm"], domain=MS_DOMAIN, epsilon=eps,
             outputs=1, name="final_norm")[0]
    if emb_fmt.is_float:
        # [batch * seq, dim] x embed^T through Gemm's transB, so the matrix is read as stored.
        flat = g.op("Reshape", [h, g.constant("flat_shape", np.array([-1, dim], np.int64))], name="lm_head/flatten")[0]
        scores = g.op("Gemm", [flat, "embed_tokens"], transB=1, name="lm_head/Gemm")[0]
        ids_shape = g.op("Shape", ["input_ids"], name="lm_head/Shape")[0]
        out_shape = g.op("Concat", [ids_shape, g.constant("vocab_dim", np.array([vocab], np.int64))], axis=0,
                         name="lm_head/shape")[0]
        g.op("Reshape", [scores, out_shape], outputs=["logits"], name="lm_head/Reshape")
    else:
        n, k = embedding.shape
        g.op("MatMulNBits", [h, head_weight, "embed_tokens_scales"], outputs=["logits"], domain=MS_DOMAIN,
             name="lm_head/MatMulNBits", K=k, N=n, bits=emb_fmt.bits, block_size=emb_fmt.group_size,
             accuracy_level=ACCURACY_LEVEL)

    kv = config.n_kv_heads, config.head_dim
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", vocab])]
    for e in range(config.n_executed_layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{e}.{kind}", TensorProto.FLOAT, ["batch_size", kv[0], "past_sequence_length", kv[1]]))
            outputs.append(helper.make_tensor_value_info(
                f"present.{e}.{kind}", TensorProto.FLOAT, ["batch_size", kv[0], "present_sequence_length", kv[1]]))
    graph = helper.make_graph(g.nodes, "mobilellm_decoder", inputs, outputs, list(g.initializers.values()))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
                              producer_name="mobilellm-export")
    proto.ir_version = 10
    # What a runtime needs beyond the graph's shapes (read by runtimes/onnx_runtime.py).
    helper.set_model_props(proto, {"max_context": str(max_context), "bos_id": str(config.bos_id),
                                   "eos_id": str(config.eos_id)})
    return proto


def genai_config(model: MobileLLM, max_context: int) -> dict[str, Any]:
    """onnxruntime-genai's description of the directory. Its parser rejects unknown keys, so
    only fields it knows are written."""
    config = model.config
    return {
        "model": {
            "bos_token_id": config.bos_id,
            "eos_token_id": config.eos_id,
            "pad_token_id": config.eos_id,
            "context_length": max_context,
            "vocab_size": config.vocab_size,
            "type": "llama",
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": MODEL_FILE,
                "head_size": config.head_dim,
                "hidden_size": config.dim,
                "num_attention_heads": config.n_heads,
                "num_hidden_layers": config.n_executed_layers,
                "num_key_value_heads": config.n_kv_heads,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
            },
        },
        "search": {
            "do_sample": False,
            "max_length": max_context,
            "min_length": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": True,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }


def export(model: MobileLLM, request: ExportRequest, out_dir: Path, progress: Progress) -> dict[str, Any]:
    """Write model.onnx (+ model.onnx.data when large) and genai_config.json into `out_dir`."""
    import onnx

    if request.scheme.name not in ("fp32", "int8", "int4"):
        raise UnsupportedError(f"the onnx backend has no {request.scheme.name!r} scheme; use fp32, int8 or int4")
    scheme = stored_scheme(request.scheme)
    progress.step(f"building the ONNX graph: linear {scheme.linear.describe()}, shared embedding {scheme.embedding.describe()}")
    with torch.no_grad():
        proto = build_graph(model, scheme, request.max_context)
    weight_bytes = sum(len(t.raw_data) for t in proto.graph.initializer)
    external = weight_bytes > _EXTERNAL_DATA_THRESHOLD
    progress.step(f"writing {MODEL_FILE}" + (f" with weights in {DATA_FILE}" if external else ""))
    if external:
        onnx.save_model(proto, str(out_dir / MODEL_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=DATA_FILE, size_threshold=1024)
    else:
        onnx.save_model(proto, str(out_dir / MODEL_FILE))
    (out_dir / GENAI_CONFIG).write_text(json.dumps(genai_config(model, request.max_context), indent=2) + "\n",
                                        encoding="utf-8")
    ops: dict[str, int] = {}
    for node in proto.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"model": MODEL_FILE, "data": DATA_FILE if external else None, "genai_config": GENAI_CONFIG,
            "opset": OPSET, "accuracy_level": ACCURACY_LEVEL, "ops": dict(sorted(ops.items())),
            "kv_cache": "explicit past/present inputs and outputs, fp32, [batch, kv_heads, seq, head_dim]",
            "stored_scheme": scheme}


def preload_runtime() -> None:
    """Load the runtime libraries (benchmarks take their memory baseline after this)."""
    import onnxruntime  # noqa: F401


def open_runtime(directory: Path, manifest: dict[str, Any], *, threads: int | None = None) -> Any:
    from mobilellm_export.runtimes.onnx_runtime import OnnxRuntime

    return OnnxRuntime(directory / manifest["onnx"]["model"], threads=threads)


def inspect_storage(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The file's initializers and which nodes read the shared matrix."""
    import onnx

    proto = onnx.load(str(directory / manifest["onnx"]["model"]))
    consumers: dict[str, list[str]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    sizes = {t.name: tensor_bytes(t) for t in proto.graph.initializer}
    shared_name = "embed_tokens" if "embed_tokens" in sizes else "embed_tokens_Q"
    readers = consumers.get(shared_name, [])
    # Followed through the Reshape in front of the quantized output projection.
    if "lm_head/Reshape" in readers:
        readers = [r for r in readers if r != "lm_head/Reshape"] + consumers.get("lm_head/Reshape/out0", [])
    config = manifest["model"]["config"]
    vocab = config["vocab_size"]
    big_matrices = [t.name for t in proto.graph.initializer if t.dims and t.dims[0] == vocab]
    rope = sum(sizes[n] for n in ("rope_cos", "rope_sin"))
    small = sum(v for k, v in sizes.items() if v <= 64 and not k.startswith("layers."))
    return {
        "initializers": len(sizes),
        "buffer_bytes": sum(sizes.values()),
        "file_bytes": sum((directory / f).stat().st_size for f in (manifest["onnx"]["model"], manifest["onnx"]["data"]) if f),
        # The lookup and the output projection read one initializer (and no other [vocab, ...]
        # matrix exists besides its scales).
        "shared_matrix": {shared_name: readers if {"embed/Gather"} <= set(readers) and len(readers) == 2 else []},
        "vocab_sized": big_matrices,
        "non_weight_bytes": rope + small,
    }


def tensor_bytes(tensor: Any) -> int:
    """Stored bytes of an initializer (inline or external)."""
    from onnx import numpy_helper

    if tensor.raw_data:
        return len(tensor.raw_data)
    if tensor.data_location == 1:  # external
        return int({e.key: e.value for e in tensor.external_data}.get("length", 0))
    return numpy_helper.to_array(tensor).nbytes
