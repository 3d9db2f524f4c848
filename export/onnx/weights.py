"""The quantization stage's codes in MatMulNBits' and GatherBlockQuantized's layout."""

from __future__ import annotations

import dataclasses
import numpy as np

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.model.config import MobileLLMConfig
from mobilellm_export.quant.schemes import QuantScheme, WeightFormat
from mobilellm_export.quant.codes import QuantizedWeight

MS_DOMAIN = "com.microsoft"
# MatMulNBits accuracy level 4: activations quantized to int8 at run time, so CPUs use their int8
# dot-product instructions (the setting onnxruntime-genai's builder uses for CPU int4).
ACCURACY_LEVEL = 4
# MatMulNBits needs blocks (a power of two of at least 16): per-channel formats are stored in
# blocks, each row's one scale repeated, of the largest of these sizes that divides every width
# of the model (64 for every preset: 576 = 9 x 64). The repeated fp32 scales cost half a bit per
# weight at 64 (at 32 they cost one: 1.8 MB more for the 125M's int8 shared matrix alone).
_ROW_BLOCKS = (64, 32, 16)


def row_block(config: MobileLLMConfig) -> int:
    """The block that per-channel formats are stored in for this model's widths."""
    widths = (config.dim, config.n_heads * config.head_dim, config.ffn_dim)
    for block in _ROW_BLOCKS:
        if all(w % block == 0 for w in widths):
            return block
    raise UnsupportedError(f"the onnx backend needs model widths that are multiples of 16, got {widths}")


def _unsigned(values: np.ndarray, bits: int) -> np.ndarray:
    """Signed codes as onnxruntime stores them: q + 2^(bits-1) in uint8 (its default zero point)."""
    return (values.astype(np.int16) + 2 ** (bits - 1)).astype(np.uint8)


def _pack_last(u: np.ndarray, bits: int) -> np.ndarray:
    """4-bit values two to a byte along the last axis, low nibble first (odd lengths padded)."""
    if bits == 8:
        return u
    if u.shape[-1] % 2:
        u = np.concatenate([u, np.zeros(u.shape[:-1] + (1,), np.uint8)], axis=-1)
    return u[..., 0::2] | (u[..., 1::2] << 4)


@dataclasses.dataclass(frozen=True)
class BlockQuantized:
    """A stage-quantized matrix [N, K] in MatMulNBits' layout (GatherBlockQuantized reads the same
    bytes reshaped to [N, K * bits / 8])."""

    packed: np.ndarray  # uint8 [N, K / block, block * bits / 8]
    scales: np.ndarray  # float32 [N, K / block]
    zero_points: np.ndarray | None  # uint8 [N, ceil(K / block * bits / 8)], packed like the data
    bits: int
    block: int


def block_layout(weight: QuantizedWeight, row_block: int) -> BlockQuantized:
    """The stage's codes and scales as MatMulNBits stores them. A per-channel format is stored in
    blocks of `row_block` with each row's one scale (and zero point) repeated per block: the same numbers,
    in the block layout the operator requires."""
    codes = weight.codes.numpy()
    n, k = codes.shape
    group = weight.fmt.group_size or k
    block = group if weight.fmt.group_size else row_block
    if k % block:
        raise UnsupportedError(f"width {k} is not a multiple of the quantization block {block}")
    repeat = group // block
    scales = np.repeat(weight.scales.numpy().astype(np.float32), repeat, axis=1)
    bits = weight.fmt.bits
    packed = _pack_last(_unsigned(codes, bits).reshape(n, k // block, block), bits)
    zero_points = None
    if weight.zero_points is not None:
        zero_points = _pack_last(_unsigned(np.repeat(weight.zero_points.numpy(), repeat, axis=1), bits), bits)
    return BlockQuantized(np.ascontiguousarray(packed), np.ascontiguousarray(scales), zero_points, bits, block)


def dequantize_blockwise(packed: np.ndarray, scales: np.ndarray, bits: int,
                         zero_points: np.ndarray | None = None) -> np.ndarray:
    """The float weight [N, K] that MatMulNBits computes with (tests compare it with the stage's)."""
    n, blocks = scales.shape
    if bits == 4:
        q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, blocks, -1)
    else:
        q = packed.reshape(n, blocks, -1)
    if zero_points is None:
        zero = np.full((n, blocks, 1), 2 ** (bits - 1), np.float32)
    else:
        unpacked = np.stack([zero_points & 0x0F, zero_points >> 4], axis=-1).reshape(n, -1) if bits == 4 else zero_points
        zero = unpacked[:, :blocks, None].astype(np.float32)
    values = (q.astype(np.float32) - zero) * scales[..., None]
    return values.reshape(n, -1)


def stored_scheme(scheme: QuantScheme, row_block: int) -> QuantScheme:
    """The layout of the stored numbers: float32 scale containers (bf16 values are held exactly),
    and per-channel formats in blocks of `row_block` with the row's scale repeated (see block_layout)."""
    def stored(fmt: WeightFormat) -> WeightFormat:
        if fmt.is_float:
            return fmt
        return dataclasses.replace(fmt, group_size=fmt.group_size or row_block, scale_dtype="fp32")
    return dataclasses.replace(scheme, linear=stored(scheme.linear), embedding=stored(scheme.embedding),
                               dynamic_activations=not scheme.linear.is_float)
