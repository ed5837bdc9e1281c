"""Base for operators that hold tensors (masks, kernels, coil maps) which must follow the data's device."""

from __future__ import annotations

from typing import TypeVar

import torch

from wavepatch.physics.base import LinearOperator

Tensor = torch.Tensor
Op = TypeVar("Op", bound="BufferedOperator")


class BufferedOperator(LinearOperator):
    """A :class:`LinearOperator` whose tensor attributes (and operator attributes) move together.

    ``to(device)`` moves every tensor attribute and every nested ``BufferedOperator``; :meth:`_held` moves
    them lazily to the input's device on first use, so an operator built on CPU works on GPU inputs.
    Held tensors keep their own dtype (bool masks, float64 kernels) and are cast per call to the input's
    dtype, so one operator serves float32 and float64 data.
    """

    _device: torch.device = torch.device("cpu")

    def to(self: Op, device: torch.device | str) -> Op:
        """Move all held tensors to ``device`` (in place) and return ``self``."""
        for name, value in list(vars(self).items()):
            if isinstance(value, (Tensor, BufferedOperator)):
                setattr(self, name, value.to(device))
        # Normalise e.g. "cuda" -> cuda:0 so comparisons with tensor devices are exact.
        self._device = torch.empty(0, device=device).device
        return self

    @property
    def device(self) -> torch.device:
        return self._device

    def _follow(self, like: Tensor) -> None:
        """Move to ``like``'s device if elsewhere, for good (not per call): later calls copy nothing."""
        if like.device != self._device:
            self.to(like.device)

    def _held(self, tensor_name: str, like: Tensor, dtype: torch.dtype) -> Tensor:
        """The held tensor ``tensor_name`` on ``like``'s device, cast to ``dtype``."""
        self._follow(like)
        return getattr(self, tensor_name).to(dtype)
