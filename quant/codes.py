"""One matrix as the quantization stage stores it: integer codes, scales and zero points."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .schemes import WeightFormat


@dataclass(frozen=True)
class QuantizedWeight:
    """One matrix [rows, cols] as stored: dequantized value = (codes - zero_points) * scales, each
    scale and zero point covering `fmt.group_size` consecutive values of a row (a whole row when
    the format is per channel)."""

    codes: torch.Tensor  # int8 [rows, cols], within the format's signed range
    scales: torch.Tensor  # float32 [rows, groups], exactly representable in fmt.scale_dtype
    zero_points: torch.Tensor | None  # int8 [rows, groups] for asymmetric formats
    fmt: WeightFormat

    @property
    def group_size(self) -> int:
        return self.fmt.group_size or self.codes.shape[1]

    def dequantize(self) -> torch.Tensor:
        q = self.codes.float()
        if self.zero_points is not None:
            q = q - self.zero_points.float().repeat_interleave(self.group_size, dim=1)
        return q * self.scales.repeat_interleave(self.group_size, dim=1)


def concat_rows(weights: list[QuantizedWeight]) -> QuantizedWeight:
    """Matrices of one format stacked by rows (a fused q/k/v projection): the same numbers."""
    first = weights[0]
    zero_points = None if first.zero_points is None else torch.cat([w.zero_points for w in weights])
    return QuantizedWeight(torch.cat([w.codes for w in weights]), torch.cat([w.scales for w in weights]),
                           zero_points, first.fmt)
