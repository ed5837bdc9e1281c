"""Super-resolution: anti-aliasing blur followed by subsampling by an integer factor."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wavepatch.physics.blur import Blur, gaussian_kernel
from wavepatch.physics.buffered import BufferedOperator

Tensor = torch.Tensor


class SuperResolution(BufferedOperator):
    """``A x = S_F (k * x)``: ``(B, C, H, W) -> (B, C, H / F, W / F)``; H and W must be divisible by F.

    ``kernel`` picks the low-resolution pixel model:

    * ``None`` or ``'gaussian'`` (default): Gaussian blur with ``sigma = F / 2`` px and size
      ``2 * ceil(3 sigma) + 1`` (zero boundary, see :class:`~wavepatch.physics.blur.Blur`), then keep every
      F-th pixel starting at offset ``F // 2`` in both axes (the block centre for odd F, half a pixel past
      it for even F).
    * ``'box'``: exact F x F block average (``avg_pool2d`` with stride F), for any F. Its adjoint is
      nearest-neighbour upsampling divided by F^2 and its pseudo-inverse is plain nearest upsampling.
    * a ``(k, k)`` tensor with odd k: that kernel, then the same subsampling as the Gaussian path.
    """

    def __init__(
        self, factor: int, image_shape: tuple[int, int, int], kernel: Tensor | str | None = None
    ) -> None:
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        self.factor = int(factor)
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape}")
        _, h, w = image_shape
        if h % self.factor or w % self.factor:
            raise ValueError(
                f"image size {(h, w)} is not divisible by the super-resolution factor {self.factor}"
            )
        self.image_shape = tuple(image_shape)
        self.offset = self.factor // 2
        self.box = isinstance(kernel, str) and kernel == "box"
        self.blur: Blur | None = None
        if not self.box:
            if kernel is None or (isinstance(kernel, str) and kernel == "gaussian"):
                kernel = gaussian_kernel(self.factor / 2.0, dtype=torch.float64)
            elif isinstance(kernel, str):
                raise ValueError(f"unknown kernel {kernel!r}; use 'gaussian', 'box' or a (k, k) tensor")
            self.blur = Blur(kernel, self.image_shape)

    @property
    def low_res_shape(self) -> tuple[int, int, int]:
        """Per-item measurement shape ``(C, H / F, W / F)``."""
        c, h, w = self.image_shape
        return (c, h // self.factor, w // self.factor)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        self._follow(x)  # moves the blur too, and keeps ``device`` truthful on the kernel-free box path
        if self.box:
            return F.avg_pool2d(x, self.factor)
        o, f = self.offset, self.factor
        return self.blur.A(x)[..., o::f, o::f]

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        self._follow(y)
        if self.box:
            return self._nearest_upsample(y) / self.factor**2
        o, f = self.offset, self.factor
        # Zero-filled upsampling (the adjoint of subsampling), then the blur's adjoint.
        z = y.new_zeros(y.shape[:-2] + tuple(self.image_shape[-2:]))
        z[..., o::f, o::f] = y
        return self.blur.A_adjoint(z)

    def A_dagger(self, y: Tensor, n_iter: int = 100, tol: float = 1e-6) -> Tensor:  # noqa: N802
        """Box: exact ``F^2 A^T y`` = nearest upsampling (since ``A A^T = I / F^2``). Otherwise CG."""
        if self.box:
            return self._nearest_upsample(y)
        return super().A_dagger(y, n_iter=n_iter, tol=tol)

    def _nearest_upsample(self, y: Tensor) -> Tensor:
        return y.repeat_interleave(self.factor, dim=-2).repeat_interleave(self.factor, dim=-1)
