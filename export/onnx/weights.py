"""Block quantization in MatMulNBits' layout (int4 and int8, symmetric, float32 scales)."""

from __future__ import annotations

import dataclasses
import numpy as np

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.quant.schemes import QuantScheme, WeightFormat

MS_DOMAIN = "com.microsoft"
# MatMulNBits accuracy level 4: activations quantized to int8 at run time, so CPUs use their int8
# dot-product instructions (the setting onnxruntime-genai's builder uses for CPU int4).
ACCURACY_LEVEL = 4


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
