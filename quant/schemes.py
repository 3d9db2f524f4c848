"""Quantization schemes as named objects.

A scheme says how each class of weight is stored: the linear layers of the blocks, and the one
shared embedding matrix (which is both the input lookup and the output projection, so it is
stored, and quantized, once). A format is named by what is stored: bits, group, symmetric or not,
and the precision of the scales. The quantization stage (stage.py) computes the numbers; the
scheme's name and formats go into the artifact's manifest, never into a file name.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.model.config import MobileLLMConfig


SCALE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# How the stage chooses codes (quant/methods.py and quant/gptq.py implement them; named here so
# that listing them for the command line does not load torch).
METHOD_NAMES = ("rtn", "mse", "gptq")
# "auto": gptq for integer linears when there is calibration text, else rtn. On real weights
# (SmolLM2-135M, README "Quantization") 4-bit round to nearest loses +23% perplexity and fails
# `verify`, gptq about +9%; at 8 bits with XNNPACK's per-token int8 activations rtn loses +2.1%,
# gptq +0.6%.
AUTO = "auto"
METHOD_CHOICES = (AUTO, *METHOD_NAMES)
DEFAULT_METHOD = AUTO


@dataclass(frozen=True)
class WeightFormat:
    """Storage of one weight matrix [rows, cols]: float of `bits`, or integers of `bits` with one
    scale (and, when not symmetric, one zero point of `bits`) per `group_size` consecutive values
    of a row (None: one per row). `scale_dtype` is the precision of the scales' values."""

    bits: int
    group_size: int | None = None
    scale_dtype: str = "fp32"
    symmetric: bool = True

    def __post_init__(self) -> None:
        if self.bits not in (4, 8, 16, 32):
            raise UnsupportedError(f"unsupported weight width {self.bits} bits")
        if self.group_size is not None and self.group_size <= 0:
            raise UnsupportedError(f"group size must be positive, got {self.group_size}")
        if self.scale_dtype not in SCALE_BYTES:
            raise UnsupportedError(f"unknown scale precision {self.scale_dtype!r}; choose one of: {', '.join(SCALE_BYTES)}")

    @property
    def scale_bytes(self) -> int:
        return SCALE_BYTES[self.scale_dtype]

    @property
    def is_float(self) -> bool:
        return self.bits >= 16

    def nbytes(self, rows: int, cols: int) -> int:
        payload = math.ceil(rows * cols * self.bits / 8)
        if self.is_float:
            return payload
        groups_per_row = 1 if self.group_size is None else math.ceil(cols / self.group_size)
        zero_points = 0 if self.symmetric else rows * math.ceil(groups_per_row * self.bits / 8)
        return payload + rows * groups_per_row * self.scale_bytes + zero_points

    def describe(self) -> str:
        if self.is_float:
            return f"fp{self.bits}"
        granularity = "per channel" if self.group_size is None else f"group {self.group_size}"
        return f"int{self.bits} {granularity}" + ("" if self.symmetric else " asymmetric")

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


FP32 = WeightFormat(32)
FP16 = WeightFormat(16)


@dataclass(frozen=True)
class QuantScheme:
    name: str
    linear: WeightFormat
    embedding: WeightFormat
    # Activation handling is the backend's (XNNPACK quantizes activations to int8 at run time;
    # MatMulNBits at accuracy level 4 too): backends record it in what they stored.
    dynamic_activations: bool = False
    description: str = ""

    def with_embedding(self, embedding: WeightFormat) -> "QuantScheme":
        return dataclasses.replace(self, embedding=embedding)

    def with_group_size(self, group_size: int) -> "QuantScheme":
        """Apply `group_size` to every grouped (non per-channel) integer format of the scheme."""
        def regroup(fmt: WeightFormat) -> WeightFormat:
            return dataclasses.replace(fmt, group_size=group_size) if fmt.group_size is not None else fmt
        return dataclasses.replace(self, linear=regroup(self.linear), embedding=regroup(self.embedding))

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "linear": self.linear.to_dict(), "embedding": self.embedding.to_dict(),
                "dynamic_activations": self.dynamic_activations}


INT8 = WeightFormat(8)
INT4_G32 = WeightFormat(4, 32, scale_dtype="bf16")

SCHEMES: dict[str, QuantScheme] = {
    "fp32": QuantScheme("fp32", FP32, FP32, description="float32 weights (reference)"),
    "fp16": QuantScheme("fp16", FP16, FP16, description="float16 weights"),
    "int8": QuantScheme("int8", INT8, INT8,
                        description="int8 weights, one scale per output channel"),
    # Group scales in bf16: the precision XNNPACK stores, so every backend can hold the same numbers.
    # The shared matrix at int8: at int4 it alone costs SmolLM2-135M +8% perplexity (it is both the
    # lookup and the output projection); int8 per row costs +0.2% for 12.6 MB more.
    "int4": QuantScheme("int4", INT4_G32, INT8, description="int4 weights, one scale per block of 32, int8 shared matrix"),
    "int4-asym": QuantScheme("int4-asym", dataclasses.replace(INT4_G32, symmetric=False), INT8,
                             description="int4 weights with a zero point per block of 32, int8 shared matrix"),
}


EMBEDDING_CHOICES = ("none", "int8", "int4")


def embedding_format(choice: str, group_size: int) -> WeightFormat:
    """The shared matrix's format for --embedding-quant: float, int8 per row, or int4 per group."""
    formats = {"none": FP32, "int8": INT8, "int4": dataclasses.replace(INT4_G32, group_size=group_size)}
    try:
        return formats[choice]
    except KeyError:
        raise UnsupportedError(f"unknown embedding quantization {choice!r}; choose one of: {', '.join(formats)}") from None


def resolve_method(method: str, scheme: QuantScheme, *, has_text: bool) -> str:
    """The method `method` stands for with `scheme` ("auto" is resolved; others are themselves)."""
    if method != AUTO:
        return method
    if scheme.linear.is_float or not has_text:
        return "rtn"
    return "gptq"


def fp16_storage(scheme: QuantScheme) -> QuantScheme:
    """`scheme` as Apple's formats store it (Core ML, Core AI): float weights in fp16, integer
    formats with fp16 scales."""
    def stored(fmt: WeightFormat) -> WeightFormat:
        return FP16 if fmt.is_float else dataclasses.replace(fmt, scale_dtype="fp16")
    return dataclasses.replace(scheme, linear=stored(scheme.linear), embedding=stored(scheme.embedding))


def get_scheme(name: str) -> QuantScheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise UnsupportedError(f"unknown quantization scheme {name!r}; choose one of: {', '.join(SCHEMES)}") from None


def weight_shapes(config: MobileLLMConfig) -> list[tuple[str, int, int]]:
    """(kind, rows, cols) of every *stored* matrix: unique blocks once, the shared embedding once."""
    shapes: list[tuple[str, int, int]] = [("embedding", config.vocab_size, config.dim)]
    if not config.share_embedding:
        shapes.append(("linear", config.vocab_size, config.dim))
    q_dim = config.n_heads * config.head_dim
    block = [(q_dim, config.dim), (config.kv_dim, config.dim), (config.kv_dim, config.dim), (config.dim, q_dim),
             (config.ffn_dim, config.dim), (config.ffn_dim, config.dim), (config.dim, config.ffn_dim)]
    for _ in range(config.n_layers):
        shapes.extend(("linear", rows, cols) for rows, cols in block)
        shapes.extend([("norm", 1, config.dim), ("norm", 1, config.dim)])
    shapes.append(("norm", 1, config.dim))
    return shapes


def expected_weight_bytes(config: MobileLLMConfig, scheme: QuantScheme) -> int:
    """Bytes of weights an artifact of `scheme` should hold when every shared matrix is stored once.

    Norm weights stay float (fp32, or fp16 in an fp16 scheme). A backend's file adds its own
    program and metadata on top; its tests compare against this figure within a few percent.
    """
    norm_fmt = FP16 if scheme.linear.bits == 16 else FP32
    formats = {"embedding": scheme.embedding, "linear": scheme.linear, "norm": norm_fmt}
    return sum(formats[kind].nbytes(rows, cols) for kind, rows, cols in weight_shapes(config))
