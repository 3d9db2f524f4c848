"""The module Core AI converts: MobileLLM with its KV cache as states and the quantization stage's
codes as Core AI's blockwise dequantization op.

Interface of both functions (`prefill`: 1..max_context tokens, `decode`: one token):
  input_ids int32 [1, n], input_pos int32 [n] (the tokens' positions, consecutive)
  -> logits float32 [1, n, vocab].
Every position's logits, as our ONNX graphs and Apple's own LLM exports return them: apps read the
last row, evaluation scores a whole window in one call (the Linux runtime dequantizes every
weight on every call, so scoring token by token would take hours on real weights). Apps that
prefill long prompts bound the output's memory by prefilling in chunks.
The call writes the tokens' keys and values at `input_pos` in the states and attends over the
whole cache under a mask built from the positions, so no shape depends on how many tokens are
cached and no scalar is ever read back from a tensor.

Every matrix is stored as [in, out] (the transpose of torch's Linear layout) and multiplied as
x @ W: with [out, in] constants the converter emits a transpose of each weight, which the Linux
runtime executes on every call. The shared matrix is stored once as [dim, vocab]: the output
projection multiplies by it and the lookup gathers its columns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mobilellm_export.model.modeling import MobileLLM, Positions, apply_rope, run_blocks
from mobilellm_export.quant.codes import QuantizedWeight
from mobilellm_export.quant.stage import EMBEDDING, QuantizedModel, linear_names


class StateCache(nn.Module):
    """One executed block's keys and values: fp16 [1, kv_heads, max_context, head_dim] states.

    Head-major, so attention reads a state as it is. Written with `scatter_` at the tokens'
    positions: the converter takes a scatter with a dynamic token count, where index_put (our
    eager model's `index_copy_`) converts only with a fixed one.
    """

    def __init__(self, n_kv_heads: int, max_context: int, head_dim: int) -> None:
        super().__init__()
        shape = (1, n_kv_heads, max_context, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=torch.float16), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=torch.float16), persistent=False)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, index: Tensor, mask: Tensor) -> Tensor:
        """q [1, n, H, D], k/v [1, n, Hkv, D]; index [1, Hkv, n, D] of the positions; mask
        [1, 1, n, max_context] (True: attend)."""
        self.k.scatter_(2, index, k.transpose(1, 2).to(torch.float16))
        self.v.scatter_(2, index, v.transpose(1, 2).to(torch.float16))
        keys, values = self.k.to(q.dtype), self.v.to(q.dtype)
        n_rep = q.shape[2] // keys.shape[1]
        if n_rep > 1:  # HF's grouping: query head h reads KV head h // n_rep
            keys = keys.repeat_interleave(n_rep, dim=1)
            values = values.repeat_interleave(n_rep, dim=1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=mask)
        return out.transpose(1, 2)


class CodedMatrix(nn.Module):
    """A matrix [in, out] from the stage's codes, fp16 scales and (asymmetric) zero points,
    dequantized by `coreai.constexpr_blockwise_shift_scale`, which the converter stores as packed
    int4 or int8 constants: the numbers the stage computed, not rounded again."""

    def __init__(self, weight: QuantizedWeight, compute: torch.dtype) -> None:
        super().__init__()
        # Transposed: groups run along the input dimension, now dim 0 (scales [in / group, out]).
        self.register_buffer("codes", weight.codes.T.contiguous())
        self.register_buffer("scales", weight.scales.T.to(torch.float16).contiguous())
        zero_points = None if weight.zero_points is None else weight.zero_points.T.contiguous()
        self.register_buffer("zero_points", zero_points)
        # Always named: the converter would otherwise guess the width from the values' range.
        self.bits = torch.int4 if weight.fmt.bits == 4 else torch.int8
        self.compute = compute

    def forward(self) -> Tensor:
        matrix = torch.ops.coreai.constexpr_blockwise_shift_scale(self.codes, self.scales, self.zero_points, None,
                                                                  self.bits, None)
        return matrix.to(self.compute)


class FloatMatrix(nn.Module):
    """A float matrix [in, out] stored at the scheme's width, computed at the program's.

    A wider compute type goes through the blockwise op's float mode (scale 1): the converter folds
    a plain cast of a constant into a constant of the wider type, which would store an fp16
    scheme's weights in fp32."""

    def __init__(self, weight: Tensor, stored: torch.dtype, compute: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().T.to(stored).contiguous())
        self.register_buffer("one", torch.ones(1, 1, dtype=compute))
        self.compute = compute

    def forward(self) -> Tensor:
        if self.weight.dtype == self.compute:
            return self.weight
        return torch.ops.coreai.constexpr_blockwise_shift_scale(self.weight, self.one, None, None, None, self.compute)


class Linear(nn.Module):
    """x @ W over a stored [in, out] matrix (float or coded)."""

    def __init__(self, matrix: nn.Module) -> None:
        super().__init__()
        self.matrix = matrix

    def forward(self, x: Tensor) -> Tensor:
        return torch.matmul(x, self.matrix())


def _changed_in_fp16(weight: QuantizedWeight) -> tuple[int, int]:
    """(scales that fp16 storage rounds, scales) of one matrix."""
    scales = weight.scales.float()
    return int((scales.to(torch.float16).float() != scales).sum()), scales.numel()


def install_matrices(model: MobileLLM, quantized: QuantizedModel, stored: torch.dtype,
                     compute: torch.dtype) -> tuple[nn.Module, dict[str, float]]:
    """Replace every block projection of `model` (this export's copy) by its stored matrix; return
    the shared matrix's module and, per integer format, the fraction of scales fp16 rounded."""
    import coreai_torch._compression.custom_layers  # noqa: F401  registers torch.ops.coreai.*

    rounded: dict[str, list[int]] = {}  # format -> [rounded, all]

    def matrix(name: str, tensor: Tensor) -> nn.Module:
        weight = quantized.weights.get(name)
        if weight is None:
            return FloatMatrix(tensor, stored, compute)
        changed, count = _changed_in_fp16(weight)
        totals = rounded.setdefault(weight.fmt.describe(), [0, 0])
        totals[0] += changed
        totals[1] += count
        return CodedMatrix(weight, compute)

    for name in linear_names(model):
        module_name = name.removesuffix(".weight")
        parent, _, attribute = module_name.rpartition(".")
        linear = model.get_submodule(module_name)
        setattr(model.get_submodule(parent), attribute, Linear(matrix(name, linear.weight)))
    shared = matrix(EMBEDDING, model.embed_tokens.weight)
    return shared, {fmt: changed / count for fmt, (changed, count) in rounded.items()}


class CoreAIDecoder(nn.Module):
    """forward(input_ids int32 [1, n], input_pos int32 [n]) -> float32 logits [1, n, vocab]."""

    def __init__(self, model: MobileLLM, shared: nn.Module, max_context: int, compute: torch.dtype) -> None:
        super().__init__()
        config = model.config
        self.layers = model.layers
        self.norm = model.norm
        self.shared = shared  # the one stored matrix [dim, vocab]: output projection and lookup table
        self.order = config.execution_order
        self.head_dim = config.head_dim
        self.caches = nn.ModuleList(StateCache(config.n_kv_heads, max_context, config.head_dim)
                                    for _ in range(config.n_executed_layers))
        self.register_buffer("rope_cos", model.rope_cos[:max_context].to(compute), persistent=False)
        self.register_buffer("rope_sin", model.rope_sin[:max_context].to(compute), persistent=False)
        temperature = model.q_temperature  # NoPE blocks' query temperature per position (None: not tuned)
        self.register_buffer("q_temperature", None if temperature is None else temperature[:max_context].to(compute),
                             persistent=False)
        self.register_buffer("key_positions", torch.arange(max_context, dtype=torch.int32), persistent=False)

    def forward(self, input_ids: Tensor, input_pos: Tensor) -> Tensor:
        n = input_ids.shape[1]
        matrix = self.shared()
        cos, sin = self.rope_cos[input_pos], self.rope_sin[input_pos]
        mask = (self.key_positions[None, :] <= input_pos[:, None])[None, None]
        kv_heads = self.caches[0].k.shape[1]
        index = input_pos.to(torch.int64).view(1, 1, n, 1).expand(1, kv_heads, n, self.head_dim)
        attends = [lambda q, k, v, c=cache: c.attend(q, k, v, index=index, mask=mask) for cache in self.caches]
        x = matrix.index_select(1, input_ids.view(-1)).T[None]  # the lookup: columns of [dim, vocab]
        q_scale = None if self.q_temperature is None else self.q_temperature[input_pos][:, None, None]
        x = run_blocks(self.layers, self.order, x, Positions(lambda t: apply_rope(t, cos, sin), q_scale), attends)
        return self.head(x, matrix)

    def head(self, x: Tensor, matrix: Tensor) -> Tensor:
        """The output projection: the final norm, then x @ [dim, vocab]."""
        return torch.matmul(self.norm(x), matrix).float()


def build_decoder(model: MobileLLM, quantized: QuantizedModel, max_context: int, *, stored: torch.dtype,
                  compute: torch.dtype) -> tuple[CoreAIDecoder, dict[str, float]]:
    """`model` (this export's copy) computing in `compute`, float matrices stored in `stored`, the
    stage's codes installed, wrapped for export."""
    model = model.to(compute)
    shared, rounded = install_matrices(model, quantized, stored, compute)
    return CoreAIDecoder(model, shared, max_context, compute).eval(), rounded
