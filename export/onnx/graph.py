"""The decoder graph, written node by node from the model's weights (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.model.config import MobileLLMConfig
from mobilellm_export.model.modeling import MobileLLM, rope_tables, temperature_table
from mobilellm_export.quant.codes import QuantizedWeight, concat_rows
from mobilellm_export.quant.stage import EMBEDDING, QuantizedModel

from .weights import ACCURACY_LEVEL, MS_DOMAIN, BlockQuantized, block_layout, row_block

OPSET = 23  # RMSNormalization
_HEAD_WEIGHT = "lm_head/Reshape/out0"  # the output projection's view of the shared matrix


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
    """One stored linear weight [out, in]: float, or the stage's codes in block layout."""

    name: str
    weight: np.ndarray | BlockQuantized  # float [out, in], or quantized
    shape: tuple[int, int]  # [out, in]

    def write(self, g: GraphWriter) -> None:
        w = self.weight
        if isinstance(w, np.ndarray):
            # MatMul multiplies by [in, out]: store the transpose once (block weights are never
            # read any other way).
            g.constant(self.name, w.T.astype(np.float32))
            return
        g.constant(self.name + "_Q", w.packed)
        g.constant(self.name + "_scales", w.scales)
        if w.zero_points is not None:
            g.constant(self.name + "_zero_points", w.zero_points)

    def apply(self, g: GraphWriter, x: str, node: str) -> str:
        w = self.weight
        if isinstance(w, np.ndarray):
            return g.op("MatMul", [x, self.name], name=node)[0]
        inputs = [x, self.name + "_Q", self.name + "_scales"]
        if w.zero_points is not None:
            inputs.append(self.name + "_zero_points")
        n, k = self.shape
        return g.op("MatMulNBits", inputs, domain=MS_DOMAIN, name=node, K=k, N=n, bits=w.bits, block_size=w.block,
                    accuracy_level=ACCURACY_LEVEL)[0]


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


def _embed(g: GraphWriter, embedding: torch.Tensor, quantized: QuantizedWeight | None,
           block: int) -> tuple[str, BlockQuantized | None]:
    """The shared matrix, stored once, and the token lookup over it. Returns the lookup's output
    and, when quantized, the block layout the output projection reads through a Reshape. A
    quantized matrix is built from its codes alone (the float one may be freed, on meta)."""
    if quantized is None:
        g.constant("embed_tokens", _np(embedding))
        return g.op("Gather", ["embed_tokens", "input_ids"], axis=0, name="embed/Gather")[0], None
    if quantized.zero_points is not None:
        raise UnsupportedError("the onnx backend stores the shared matrix symmetrically; choose a symmetric format")
    # Stored once, in the lookup's layout [vocab, dim * bits / 8]; the output projection reads it
    # through a Reshape to MatMulNBits' [vocab, blocks, block bytes]. (onnxruntime folds a Reshape
    # of an initializer into a copy at session start; on this side the copy is the one MatMulNBits
    # prepacks and releases, which measured 4.6 MB less resident memory on the 125M model than
    # reshaping for the lookup, as onnxruntime-genai's builder does.)
    stored = block_layout(quantized, block)
    g.constant("embed_tokens_Q", stored.packed.reshape(embedding.shape[0], -1))
    g.constant("embed_tokens_scales", stored.scales)
    x = g.op("GatherBlockQuantized", ["embed_tokens_Q", "input_ids", "embed_tokens_scales"], domain=MS_DOMAIN,
             name="embed/Gather", bits=stored.bits, block_size=stored.block, gather_axis=0, quantize_axis=1)[0]
    g.op("Reshape", ["embed_tokens_Q", g.constant("lm_head_shape", np.array(stored.packed.shape, np.int64))],
         outputs=[_HEAD_WEIGHT], name="lm_head/Reshape")
    return x, stored


_PROJECTIONS = {"o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


def _stored_linear(name: str, quantized: QuantizedModel, params: dict[str, torch.Tensor], parts: list[str]) -> StoredLinear:
    """The rows of `parts` (parameter names) as one stored matrix: float, or the stage's codes."""
    shape = (sum(params[p].shape[0] for p in parts), params[parts[0]].shape[1])
    if quantized.scheme.linear.is_float:
        return StoredLinear(name, _np(torch.cat([params[p] for p in parts], dim=0)), shape)
    return StoredLinear(name, block_layout(concat_rows([quantized.weight(p) for p in parts]),
                                           row_block(quantized.model.config)), shape)


def _store_blocks(g: GraphWriter, model: MobileLLM, quantized: QuantizedModel) -> list[dict[str, StoredLinear]]:
    """Each stored block's weights, written once whichever executed runs read them."""
    params = dict(model.named_parameters())
    blocks = []
    for b, layer in enumerate(model.layers):
        prefix = f"layers.{b}"
        qkv = [f"{prefix}.self_attn.{p}_proj.weight" for p in "qkv"]
        linears = {"qkv": _stored_linear(f"{prefix}.attn.qkv", quantized, params, qkv)}
        for key, path in _PROJECTIONS.items():
            linears[key] = _stored_linear(f"{prefix}.{path}", quantized, params, [f"{prefix}.{path}.weight"])
        for linear in linears.values():
            linear.write(g)
        g.constant(f"layers.{b}.input_layernorm", _np(layer.input_layernorm.weight))
        g.constant(f"layers.{b}.post_attention_layernorm", _np(layer.post_attention_layernorm.weight))
        blocks.append(linears)
    g.constant("norm", _np(model.norm.weight))
    return blocks


def _qk_norm(g: GraphWriter, config: MobileLLMConfig, x: str, node: str) -> str:
    """Llama4's parameter-free RMS norm of each head of q or k [B, n, heads * head_dim], as plain
    ops: RMSNormalization over the head dimension with unit scales."""
    heads = g.op("Reshape", [x, g.constant("per_head_shape", np.array([0, 0, -1, config.head_dim], np.int64))],
                 name=f"{node}/per_head")[0]
    normed = g.op("RMSNormalization", [heads, g.constant("qk_norm_scale", np.ones(config.head_dim, np.float32))],
                  axis=-1, epsilon=float(config.norm_eps), name=f"{node}/norm")[0]
    return g.op("Reshape", [normed, g.constant("flat_heads_shape", np.array([0, 0, -1], np.int64))],
                name=f"{node}/flat")[0]


def _q_temperature(g: GraphWriter, config: MobileLLMConfig, max_context: int) -> str | None:
    """NoPE blocks' query temperature at position_ids, [B, n, 1] (None when not tuned)."""
    table = temperature_table(config, max_context)
    if table is None:
        return None
    g.constant("q_temperature", _np(table))
    scales = g.op("Gather", ["q_temperature", "position_ids"], axis=0, name="q_temperature/Gather")[0]
    return g.op("Unsqueeze", [scales, g.constant("last_axis", np.array([-1], np.int64))],
                name="q_temperature/Unsqueeze")[0]


def _run_blocks(g: GraphWriter, config: MobileLLMConfig, blocks: list[dict[str, StoredLinear]], x: str,
                lengths: _Lengths, rope: tuple[str, str], q_temperature: str | None) -> tuple[str, str]:
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
        if config.uses_rope(b):
            # Rotary embeddings at the caller's position_ids (GroupQueryAttention's own rotary
            # derives positions from the mask and ignores position_ids on CPU). Llama4's adjacent
            # pairs are the rotate-half layout here: their rows were permuted on load.
            q = g.op("RotaryEmbedding", [q, "position_ids", cos_cache, sin_cache], domain=MS_DOMAIN,
                     name=f"{p}/rope_q", interleaved=0, num_heads=config.n_heads)[0]
            k = g.op("RotaryEmbedding", [k, "position_ids", cos_cache, sin_cache], domain=MS_DOMAIN,
                     name=f"{p}/rope_k", interleaved=0, num_heads=config.n_kv_heads)[0]
            if config.qk_norm:
                q, k = _qk_norm(g, config, q, f"{p}/q_norm"), _qk_norm(g, config, k, f"{p}/k_norm")
        elif q_temperature is not None:
            q = g.op("Mul", [q, q_temperature], name=f"{p}/q_temperature")[0]
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


def _lm_head(g: GraphWriter, config: MobileLLMConfig, h: str, stored: BlockQuantized | None) -> None:
    """Logits from the shared matrix as stored: float through Gemm's transB (a MatMul would need a
    transposed copy), quantized through MatMulNBits over the lookup's packed bytes."""
    vocab, dim = config.vocab_size, config.dim
    if stored is None:
        flat = g.op("Reshape", [h, g.constant("flat_shape", np.array([-1, dim], np.int64))], name="lm_head/flatten")[0]
        scores = g.op("Gemm", [flat, "embed_tokens"], transB=1, name="lm_head/Gemm")[0]
        ids_shape = g.op("Shape", ["input_ids"], name="lm_head/Shape")[0]
        out_shape = g.op("Concat", [ids_shape, g.constant("vocab_dim", np.array([vocab], np.int64))], axis=0,
                         name="lm_head/shape")[0]
        g.op("Reshape", [scores, out_shape], outputs=["logits"], name="lm_head/Reshape")
    else:
        g.op("MatMulNBits", [h, _HEAD_WEIGHT, "embed_tokens_scales"], outputs=["logits"], domain=MS_DOMAIN,
             name="lm_head/MatMulNBits", K=dim, N=vocab, bits=stored.bits, block_size=stored.block,
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


def build_graph(model: MobileLLM, quantized: QuantizedModel, max_context: int) -> Any:
    """The decoder as an onnx.ModelProto (weights inline; the caller decides on external data)."""
    from onnx import helper

    config = model.config
    if not config.share_embedding:
        raise UnsupportedError("the onnx backend expects a shared embedding (every MobileLLM has one)")
    if config.head_dim % 16:
        raise UnsupportedError(f"GroupQueryAttention with rotary needs head_dim a multiple of 16, got {config.head_dim}")

    g = GraphWriter()
    lengths = _mask_lengths(g)
    cos, sin = rope_tables(config.head_dim, max_context, config.rope_theta)
    half = config.head_dim // 2  # RotaryEmbedding takes the first half (rotate-half layout)
    rope = g.constant("rope_cos", _np(cos[:, :half])), g.constant("rope_sin", _np(sin[:, :half]))
    x, head = _embed(g, model.embed_tokens.weight, quantized.weights.get(EMBEDDING), row_block(model.config))
    blocks = _store_blocks(g, model, quantized)
    pending, residual = _run_blocks(g, config, blocks, x, lengths, rope, _q_temperature(g, config, max_context))
    h = g.op("SkipSimplifiedLayerNormalization", [pending, residual, "norm"], domain=MS_DOMAIN,
             epsilon=float(config.norm_eps), outputs=1, name="final_norm")[0]
    _lm_head(g, config, h, head)

    inputs, outputs = _interface(config)
    graph = helper.make_graph(g.nodes, "mobilellm_decoder", inputs, outputs, list(g.initializers.values()))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
                              producer_name="mobilellm-export")
    proto.ir_version = 10
    # What a runtime needs beyond the graph's shapes (read by runtimes/onnx_runtime.py).
    helper.set_model_props(proto, {"max_context": str(max_context), "bos_id": str(config.bos_id),
                                   "eos_id": str(config.eos_id)})
    return proto
