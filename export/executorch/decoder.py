"""The module ExecuTorch exports: MobileLLM over ExecuTorch's LLM custom ops, with the shared
matrix's lookup built over the bytes XNNPACK stores for the output projection (see the package
docstring), and the quantization stage's codes held as the torchao tensors XNNPACK lowers."""

from __future__ import annotations

import dataclasses
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.model.modeling import MobileLLM, Positions, RMSNorm, replace_parameter, run_blocks
from mobilellm_export.quant.schemes import QuantScheme, WeightFormat
from mobilellm_export.quant.codes import QuantizedWeight
from mobilellm_export.quant.stage import QuantizedModel, linear_names


# -- the exported module -------------------------------------------------------------------------

class CustomOpCache(nn.Module):
    """One executed block's cache, [1, max_context, kv_heads, head_dim], in ExecuTorch's custom ops."""

    def __init__(self, max_context: int, n_kv_heads: int, head_dim: int) -> None:
        super().__init__()
        shape = (1, max_context, n_kv_heads, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape), persistent=False)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, start: int) -> Tensor:
        torch.ops.llama.update_cache(k, self.k_cache, start)
        torch.ops.llama.update_cache(v, self.v_cache, start)
        # Causal from `start`: query i attends cache positions 0..start+i; handles GQA natively.
        return torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start, None, 0.0, True)


class FloatLookup(nn.Module):
    def __init__(self, weight: nn.Parameter) -> None:
        super().__init__()
        self.weight = weight  # the very Parameter the output projection reads

    def forward(self, tokens: Tensor) -> Tensor:
        return F.embedding(tokens, self.weight)


class Int8Lookup(nn.Module):
    """Rows of the output projection's int8 weight and fp32 per-row scales, as XNNPACK stores them."""

    def __init__(self, qdata: Tensor, scales: Tensor) -> None:
        super().__init__()
        self.register_buffer("qdata", qdata)
        self.register_buffer("scales", scales)

    def forward(self, tokens: Tensor) -> Tensor:
        return torch.ops.quantized_decomposed.embedding_byte.dtype(
            self.qdata, self.scales, None, -128, 127, tokens, dtype=torch.float32)


class Int4Lookup(nn.Module):
    """Rows of the output projection's int4 weight in XNNPACK's packing, with its bf16 scales.

    XNNPACK packs element 2k in the low nibble and 2k+1 in the high one (offset by 8);
    ExecuTorch's embedding_4bit kernel reads the high nibble first, so its output comes back with
    each pair swapped, which one cheap flip on the looked-up rows undoes. Groups (32 wide) hold
    whole pairs, so every value still meets its own scale.
    """

    def __init__(self, packed: Tensor, scales: Tensor) -> None:
        super().__init__()
        self.register_buffer("packed", packed)
        self.register_buffer("scales", scales)

    def forward(self, tokens: Tensor) -> Tensor:
        rows = torch.ops.quantized_decomposed.embedding_4bit.dtype(
            self.packed, self.scales, None, -8, 7, tokens, dtype=torch.float32)
        return rows.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)


def pack_int4_like_xnnpack(qdata: Tensor) -> Tensor:
    """int4 values [-8, 7] as int8 [rows, cols] -> uint8 [rows, cols/2], XNNPACK's byte layout."""
    u = (qdata.to(torch.int16) + 8).to(torch.uint8)
    return (u[:, 1::2] << 4) | u[:, ::2]


# XNNPACK takes linear layers, elementwise ops and reshapes with one inferred dimension, but not
# a mean over the last dimension nor slices of a dynamically shaped tensor. RMSNorm and RoPE are
# therefore written with linear layers here, which keeps each executed block in one XNNPACK
# partition instead of five (fewer delegate calls per token, no portable-kernel hops).

class LinearRMSNorm(nn.Module):
    """An RMS norm whose mean of squares is a linear layer with weights 1/dim: the model's RMSNorm
    (same weight Parameter) or, without a weight, the qk norm over the head dimension."""

    def __init__(self, eps: float, dim: int, weight: nn.Parameter | None = None) -> None:
        super().__init__()
        self.weight = weight
        self.eps = eps
        self.register_buffer("averager", torch.full((1, dim), 1.0 / dim), persistent=False)

    @classmethod
    def replacing(cls, norm: RMSNorm) -> "LinearRMSNorm":
        return cls(norm.eps, norm.weight.shape[0], norm.weight)

    def forward(self, x: Tensor) -> Tensor:
        normed = x * torch.rsqrt(F.linear(x * x, self.averager) + self.eps)
        return normed if self.weight is None else normed * self.weight


def rotate_half_matrix(head_dim: int) -> Tensor:
    """R with x @ R.T == rotate_half(x) = cat(-x[half:], x[:half]); exact (entries are 0 and +-1)."""
    half = head_dim // 2
    eye = torch.eye(half)
    zero = torch.zeros(half, half)
    return torch.cat((torch.cat((zero, -eye), 1), torch.cat((eye, zero), 1)), 0)


class ExecuTorchDecoder(nn.Module):
    """MobileLLM as the ExecuTorch LLM runner expects it; shares every weight with `model`."""

    def __init__(self, model: MobileLLM, max_context: int, lookup: nn.Module, lm_head: nn.Linear) -> None:
        super().__init__()
        config = model.config
        self.order = config.execution_order
        self.max_context = max_context
        for layer in model.layers:
            layer.input_layernorm = LinearRMSNorm.replacing(layer.input_layernorm)
            layer.post_attention_layernorm = LinearRMSNorm.replacing(layer.post_attention_layernorm)
            if layer.self_attn.qk_norm is not None:
                layer.self_attn.qk_norm = LinearRMSNorm(layer.self_attn.qk_norm.eps, config.head_dim)
        self.layers = model.layers
        self.norm = LinearRMSNorm.replacing(model.norm)
        self.lookup = lookup
        self.lm_head = lm_head
        self.caches = nn.ModuleList(
            CustomOpCache(max_context, config.n_kv_heads, config.head_dim) for _ in range(config.n_executed_layers)
        )
        # [positions, 1, head_dim]: broadcasts over heads without an unsqueeze in the graph.
        self.register_buffer("rope_cos", model.rope_cos[:max_context, None, :].clone(), persistent=False)
        self.register_buffer("rope_sin", model.rope_sin[:max_context, None, :].clone(), persistent=False)
        self.register_buffer("rotate", rotate_half_matrix(config.head_dim), persistent=False)
        # NoPE blocks' query temperature per position, [positions, 1, 1] (None: not tuned).
        temperature = None if model.q_temperature is None else model.q_temperature[:max_context, None, None].clone()
        self.register_buffer("q_temperature", temperature, persistent=False)

    def forward(self, tokens: Tensor, input_pos: Tensor) -> Tensor:
        n = tokens.shape[1]
        start = input_pos[0].item()
        torch._check(start >= 0)
        torch._check(start + n <= self.max_context)
        cos = self.rope_cos.narrow(0, start, n)
        sin = self.rope_sin.narrow(0, start, n)

        def rope(x: Tensor) -> Tensor:
            return x * cos + F.linear(x, self.rotate) * sin

        q_scale = None if self.q_temperature is None else self.q_temperature.narrow(0, start, n)
        attends = [partial(cache.attend, start=start) for cache in self.caches]
        x = run_blocks(self.layers, self.order, self.lookup(tokens), Positions(rope, q_scale), attends)
        # Only the last position's logits are needed: normalise and project that row alone.
        return self.lm_head(self.norm(x[:, -1, :]))


# -- the stage's codes as torchao tensors -----------------------------------------------------------

def intx_weight(weight: QuantizedWeight) -> nn.Parameter:
    """The stage's codes and scales as the torchao tensor XNNPACK lowers (int8 dynamic activations
    x int4 per group, or x int8 per channel), built from the given numbers: nothing is rounded
    again. XNNPACK stores no zero points (it fixes them at the signed range's middle), so only
    symmetric formats can be held."""
    from torchao.quantization import IntxUnpackedToInt8Tensor

    if weight.zero_points is not None:
        raise UnsupportedError("the executorch backend (XNNPACK) stores symmetric weights only; "
                               "choose a symmetric scheme")
    # torchao's own symmetric tensors carry all-zero int8 zero points and scales of the weight's
    # dtype; XNNPACK serializes group scales as bf16, which the stage's scales already are exactly.
    tensor = IntxUnpackedToInt8Tensor(
        weight.codes.contiguous(), weight.scales.to(torch.float32).contiguous(),
        torch.zeros(weight.scales.shape, dtype=torch.int8), getattr(torch, f"int{weight.fmt.bits}"),
        (1, weight.group_size), torch.float32, "int8_asym_per_token")
    return nn.Parameter(tensor, requires_grad=False)


def _install_codes(model: MobileLLM, quantized: QuantizedModel) -> None:
    for name in linear_names(model):
        if name in quantized.weights:
            replace_parameter(model, name, intx_weight(quantized.weight(name)))


def shared_matrix_modules(model: MobileLLM, quantized: QuantizedModel) -> tuple[nn.Module, nn.Linear]:
    """The lookup and the output projection over the one stored matrix."""
    # On the meta device: its weight is replaced just below, so no random matrix is allocated.
    lm_head = nn.Linear(model.config.dim, model.config.vocab_size, bias=False, device="meta")
    weight = quantized.embedding
    if weight is None:
        lm_head.weight = model.embed_tokens.weight  # the same Parameter: one constant
        return FloatLookup(lm_head.weight), lm_head
    lm_head.weight = intx_weight(weight)
    if weight.fmt.bits == 8:
        return Int8Lookup(weight.codes, weight.scales.reshape(-1).to(torch.float32)), lm_head
    if model.config.dim % 2 or weight.group_size % 2:
        raise UnsupportedError("int4 shared embedding needs an even width and group size")
    return Int4Lookup(pack_int4_like_xnnpack(weight.codes), weight.scales.to(torch.bfloat16)), lm_head


def stored_scheme(scheme: QuantScheme) -> QuantScheme:
    """The scheme as this backend stores it. XNNPACK keeps group scales in bf16 and per-channel
    scales in fp32, and runs every integer linear with int8 dynamically quantized activations:
    torchao's int8 *weight-only* linear lowers to XNNPACK without error but computes wrong results
    there (ExecuTorch 1.5.1), while qd8 x qc8w uses the same per-channel int8 weights exactly."""
    def stored(fmt: WeightFormat) -> WeightFormat:
        if fmt.is_float:
            return fmt
        return dataclasses.replace(fmt, scale_dtype="bf16" if fmt.group_size is not None else "fp32")
    dynamic = not (scheme.linear.is_float and scheme.embedding.is_float)
    return dataclasses.replace(scheme, linear=stored(scheme.linear), embedding=stored(scheme.embedding),
                               dynamic_activations=dynamic)


def build_decoder(model: MobileLLM, quantized: QuantizedModel, max_context: int) -> ExecuTorchDecoder:
    """Put the stage's codes into `model` (this export's copy) and wrap it for export."""
    if not model.config.share_embedding:
        raise UnsupportedError("the executorch backend expects a shared embedding (every MobileLLM has one)")
    for fmt in (quantized.scheme.linear, quantized.scheme.embedding):
        if not fmt.is_float and fmt.group_size is not None and fmt.scale_dtype != "bf16":
            raise UnsupportedError("XNNPACK stores group scales in bf16; the scheme's group scales must be bf16")
    _install_codes(model, quantized)
    lookup, lm_head = shared_matrix_modules(model, quantized)
    return ExecuTorchDecoder(model, max_context, lookup, lm_head).eval()
