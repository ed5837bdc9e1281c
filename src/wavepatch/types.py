"""Types shared by every layer. Imports nothing from wavepatch, so any module may use them.

``Denoiser``: ``denoise(x, sigma) -> x_hat``, the one interface between priors (networks, classical denoisers)
and samplers / solvers. x is (B, C, *spatial) in data units; sigma is the noise standard deviation in the same
units, a float, a 0-d tensor or a (B,) tensor (one level per item); x_hat has x's shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields

import torch

Tensor = torch.Tensor

Denoiser = Callable[[Tensor, Tensor | float], Tensor]
"""``denoise(x, sigma) -> x_hat``: x (B, C, *spatial) in data units, sigma a float, 0-d or (B,) tensor."""


def from_known_fields(cls, data: dict, what: str):
    """``cls(**data)`` for a dataclass ``cls``, with a one-line ValueError naming the keys it does not have (a
    config saved by another version or another model): "unknown {what}: a, b"."""
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(unknown)}")
    return cls(**data)


class JsonConfig:
    """Mixin for the dataclass configs stored in checkpoint headers: ``to_dict`` (JSON-ready) and ``from_dict``
    (a one-line ValueError naming keys this version does not know)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return from_known_fields(cls, d, f"{cls.__name__} fields")
