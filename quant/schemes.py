"""Quantization schemes as named objects.

A scheme says how each class of weight is stored: the linear layers of the blocks, and the one
shared embedding matrix (which is both the input lookup and the output projection, so it is
stored, and quantized, once). Backends map a scheme onto their own mechanism (torchao configs
applied with `quantize_`, MatMulNBits, coremltools' optimize); the scheme's name and parameters
go into the artifact's manifest. Nothing about a scheme is ever encoded in a file name.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.model.config import MobileLLMConfig


@dataclass(frozen=True)
class WeightFormat:
    """Storage of one weight matrix [rows, cols]: float of `bits`, or symmetric integers of `bits`
    with one scale per `group_size` consecutive values of a row (None: one scale per row)."""

    bits: int
    group_size: int | None = None
    scale_bytes: int = 4

    def __post_init__(self) -> None:
        if self.bits not in (4, 8, 16, 32):
            raise UnsupportedError(f"unsupported weight width {self.bits} bits")
        if self.group_size is not None and self.group_size <= 0:
            raise UnsupportedError(f"group size must be positive, got {self.group_size}")

    @property
    def is_float(self) -> bool:
        return self.bits >= 16

    def nbytes(self, rows: int, cols: int) -> int:
        payload = math.ceil(rows * cols * self.bits / 8)
        if self.is_float:
            return payload
        groups_per_row = 1 if self.group_size is None else math.ceil(cols / self.group_size)
        return payload + rows * groups_per_row * self.scale_bytes

    def describe(self) -> str:
        if self.is_float:
            return f"fp{self.bits}"
        granularity = "per channel" if self.group_size is None else f"group {self.group_size}"
        return f"int{self.bits} {granularity}"

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


FP32 = WeightFormat(32)
FP16 = WeightFormat(16)


@dataclass(frozen=True)
class QuantScheme:
    name: str
    linear: WeightFormat
    embedding: WeightFormat
    dynamic_activations: bool = False  # int8 activations quantized at run time (8da4w)
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


SCHEMES: dict[str, QuantScheme] = {
    "fp32": QuantScheme("fp32", FP32, FP32, description="float32 weights (reference)"),
    "fp16": QuantScheme("fp16", FP16, FP16, description="float16 weights"),
    "int8": QuantScheme("int8", WeightFormat(8), WeightFormat(8),
                        description="int8 weights, one scale per output channel"),
    "int4": QuantScheme("int4", WeightFormat(4, 32), WeightFormat(4, 32),
                        description="int4 weights, one scale per block of 32"),
    "8da4w": QuantScheme("8da4w", WeightFormat(4, 32), WeightFormat(4, 32), dynamic_activations=True,
                         description="int8 dynamic activations, int4 weights in groups of 32 (XNNPACK recipe)"),
}


EMBEDDING_CHOICES = ("none", "int8", "int4")


def embedding_format(choice: str, group_size: int) -> WeightFormat:
    """The shared matrix's format for --embedding-quant: float, int8 per row, or int4 per group."""
    formats = {"none": FP32, "int8": WeightFormat(8), "int4": WeightFormat(4, group_size)}
    try:
        return formats[choice]
    except KeyError:
        raise UnsupportedError(f"unknown embedding quantization {choice!r}; choose one of: {', '.join(formats)}") from None


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
