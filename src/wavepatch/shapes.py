"""Shape helpers shared by the N-D data sets and patch priors (foundation layer: imports nothing from wavepatch)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

Tensor = torch.Tensor
Size = int | Sequence[int]  # one value for every axis, or one per axis


def per_axis(value: Size, d: int, name: str = "size") -> tuple[int, ...]:
    """``value`` as a d-tuple of ints: an int is repeated on every axis, a sequence must have length d."""
    if isinstance(value, numbers.Integral):
        return (int(value),) * d
    out = tuple(int(v) for v in value)
    if len(out) != d:
        raise ValueError(f"{name} {tuple(value)} has {len(out)} entries for {d} spatial axes")
    return out


def axis_view(t: Tensor, axis: int, d: int) -> Tensor:
    """(B, P) -> (B, 1, .., P, .., 1) with P at spatial position ``axis`` of d (to broadcast over a patch)."""
    return t.reshape(t.shape[0], *[t.shape[1] if i == axis else 1 for i in range(d)])
