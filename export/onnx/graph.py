"""The decoder graph, written node by node from the model's weights (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.model.config import MobileLLMConfig
from mobilellm_export.model.modeling import MobileLLM, rope_tables
from mobilellm_export.quant.schemes import QuantScheme, WeightFormat

from .weights import ACCURACY_LEVEL, MS_DOMAIN, quantize_blockwise

OPSET = 23  # RMSNormalization


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


@dataclass
class StoredLinear:
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


@dataclass(frozen=True)
class _Lengths:
    """What GroupQueryAttention needs from the attention mask: the last valid position of each
    row and the total length (past + current)."""

    seqlens_k: str
    total: str


def _mask_lengths(g: GraphWriter) -> _Lengths:
    from onnx import TensorProto

    mask_sum = g.op("ReduceSum", ["attention_mask", g.constant("axes_1", np.array([1], np.int64))],
                    keepdims=0, name="mask/ReduceSum")[0]
    last = g.op("Sub", [mask_sum, g.constant("one_i64", np.array(1, np.int64))], name="mask/Sub")[0]
    seqlens_k = g.op("Cast", [last], to=TensorProto.INT32, name="mask/seqlens_k")[0]
    mask_shape = g.op("Shape", ["attention_mask"], name="mask/Shape")[0]
    total = g.op("Gather", [mask_shape, g.constant("one_scalar_i64", np.array(1, np.int64))], axis=0,
                 name="mask/Gather")[0]
    return _Lengths(seqlens_k, g.op("Cast", [total], to=TensorProto.INT32, name="mask/total_sequence_length")[0])


def _embed(g: GraphWriter, embedding: np.ndarray, fmt: WeightFormat) -> tuple[str, str | None]:
    """The shared matrix, stored once, and the token lookup over it. Returns the lookup's output
    and, when quantized, the output projection's view of the same packed initializer."""
    if fmt.is_float:
        g.constant("embed_tokens", embedding)
        return g.op("Gather", ["embed_tokens", "input_ids"], axis=0, name="embed/Gather")[0], None
    # Stored once, in the lookup's layout [vocab, dim * bits / 8]; the output projection reads it
    # through a Reshape to MatMulNBits' [vocab, blocks, block bytes]. (onnxruntime folds a Reshape
    # of an initializer into a copy at session start; on this side the copy is the one MatMulNBits
    # prepacks and releases, which measured 4.6 MB less resident memory on the 125M model than
    # reshaping for the lookup, as onnxruntime-genai's builder does.)
    packed, scales = quantize_blockwise(embedding, fmt)
    g.constant("embed_tokens_Q", packed.reshape(embedding.shape[0], -1))
    g.constant("embed_tokens_scales", scales)
    x = g.op("GatherBlockQuantized", ["embed_tokens_Q", "input_ids", "embed_tokens_scales"], domain=MS_DOMAIN,
             name="embed/Gather", bits=fmt.bits, block_size=fmt.group_size, gather_axis=0, quantize_axis=1)[0]
    head = g.op("Reshape", ["embed_tokens_Q", g.constant("lm_head_shape", np.array(packed.shape, np.int64))],
                name="lm_head/Reshape")[0]
    return x, head


def _store_blocks(g: GraphWriter, model: MobileLLM, fmt: WeightFormat) -> list[dict[str, StoredLinear]]:
    """Each stored block's weights, written once whichever executed runs read them."""
    blocks = []
    for b, layer in enumerate(model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight], dim=0)
        linears = {
            "qkv": StoredLinear(f"layers.{b}.attn.qkv", _np(qkv), fmt),
            "o": StoredLinear(f"layers.{b}.attn.o_proj", _np(attn.o_proj.weight), fmt),
            "gate": StoredLinear(f"layers.{b}.mlp.gate_proj", _np(mlp.gate_proj.weight), fmt),
            "up": StoredLinear(f"layers.{b}.mlp.up_proj", _np(mlp.up_proj.weight), fmt),
            "down": StoredLinear(f"layers.{b}.mlp.down_proj", _np(mlp.down_proj.weight), fmt),
        }
        for linear in linears.values():
            linear.write(g)
        g.constant(f"layers.{b}.input_layernorm", _np(layer.input_layernorm.weight))
        g.constant(f"layers.{b}.post_attention_layernorm", _np(layer.post_attention_layernorm.weight))
        blocks.append(linears)
    g.constant("norm", _np(model.norm.weight))
    return blocks


def _run_blocks(g: GraphWriter, config: MobileLLMConfig, blocks: list[dict[str, StoredLinear]], x: str,
                lengths: _Lengths, rope: tuple[str, str]) -> tuple[str, str]:
    """Every executed block in order; returns (branch output still to be added, residual stream)."""
    eps = float(config.norm_eps)
    q_dim = config.n_heads * config.head_dim
    qkv_split = g.constant("qkv_split", np.array([q_dim, config.kv_dim, config.kv_dim], np.int64))
    cos_cache, sin_cache = rope
    residual: str | None = None
    pending = x
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
            [q, k, v, f"past_key_values.{e}.key", f"past_key_values.{e}.value", lengths.seqlens_k, lengths.total],
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
    assert residual is not None
    return pending, residual


def _lm_head(g: GraphWriter, config: MobileLLMConfig, h: str, fmt: WeightFormat, head_weight: str | None) -> None:
    """Logits from the shared matrix as stored: float through Gemm's transB (a MatMul would need a
    transposed copy), quantized through MatMulNBits over the lookup's packed bytes."""
    vocab, dim = config.vocab_size, config.dim
    if head_weight is None:
        flat = g.op("Reshape", [h, g.constant("flat_shape", np.array([-1, dim], np.int64))], name="lm_head/flatten")[0]
        scores = g.op("Gemm", [flat, "embed_tokens"], transB=1, name="lm_head/Gemm")[0]
        ids_shape = g.op("Shape", ["input_ids"], name="lm_head/Shape")[0]
        out_shape = g.op("Concat", [ids_shape, g.constant("vocab_dim", np.array([vocab], np.int64))], axis=0,
                         name="lm_head/shape")[0]
        g.op("Reshape", [scores, out_shape], outputs=["logits"], name="lm_head/Reshape")
    else:
        g.op("MatMulNBits", [h, head_weight, "embed_tokens_scales"], outputs=["logits"], domain=MS_DOMAIN,
             name="lm_head/MatMulNBits", K=dim, N=vocab, bits=fmt.bits, block_size=fmt.group_size,
             accuracy_level=ACCURACY_LEVEL)


def _interface(config: MobileLLMConfig) -> tuple[list[Any], list[Any]]:
    from onnx import TensorProto, helper

    kv_heads, head_dim = config.n_kv_heads, config.head_dim
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                             ["batch_size", "sequence_length", config.vocab_size])]
    for e in range(config.n_executed_layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{e}.{kind}", TensorProto.FLOAT, ["batch_size", kv_heads, "past_sequence_length", head_dim]))
            outputs.append(helper.make_tensor_value_info(
                f"present.{e}.{kind}", TensorProto.FLOAT, ["batch_size", kv_heads, "present_sequence_length", head_dim]))
    return inputs, outputs


def build_graph(model: MobileLLM, scheme: QuantScheme, max_context: int) -> Any:
    """The decoder as an onnx.ModelProto (weights inline; the caller decides on external data)."""
    from onnx import helper

    config = model.config
    if not config.share_embedding:
        raise UnsupportedError("the onnx backend expects a shared embedding (every MobileLLM has one)")
    if config.head_dim % 16:
        raise UnsupportedError(f"GroupQueryAttention with rotary needs head_dim a multiple of 16, got {config.head_dim}")
    emb_fmt = scheme.embedding
    if not emb_fmt.is_float and config.dim % emb_fmt.group_size:
        raise UnsupportedError(f"the embedding width {config.dim} is not a multiple of the group size {emb_fmt.group_size}")

    g = GraphWriter()
    lengths = _mask_lengths(g)
    cos, sin = rope_tables(config.head_dim, max_context, config.rope_theta)
    half = config.head_dim // 2  # RotaryEmbedding takes the first half (rotate-half layout)
    rope = g.constant("rope_cos", _np(cos[:, :half])), g.constant("rope_sin", _np(sin[:, :half]))
    x, head_weight = _embed(g, _np(model.embed_tokens.weight), emb_fmt)
    blocks = _store_blocks(g, model, scheme.linear)
    pending, residual = _run_blocks(g, config, blocks, x, lengths, rope)
    h = g.op("SkipSimplifiedLayerNormalization", [pending, residual, "norm"], domain=MS_DOMAIN,
             epsilon=float(config.norm_eps), outputs=1, name="final_norm")[0]
    _lm_head(g, config, h, emb_fmt, head_weight)

    inputs, outputs = _interface(config)
    graph = helper.make_graph(g.nodes, "mobilellm_decoder", inputs, outputs, list(g.initializers.values()))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
                              producer_name="mobilellm-export")
    proto.ir_version = 10
    # What a runtime needs beyond the graph's shapes (read by runtimes/onnx_runtime.py).
    helper.set_model_props(proto, {"max_context": str(max_context), "bos_id": str(config.bos_id),
                                   "eos_id": str(config.eos_id)})
    return proto
