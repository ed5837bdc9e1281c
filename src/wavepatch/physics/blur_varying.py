"""Spatially varying blur: the point-spread function widens from the centre of the field of view to its corners.

Linear but not a convolution. The PSF at output pixel p is interpolated between K node PSFs (Nagy & O'Leary,
"Restoring images degraded by spatially variant blur", SIAM J. Sci. Comput. 1998)::

    (A x)(p) = sum_k w_k(p) (h_k * x)(p),        A^T y = sum_k h_k^T (w_k . y),

with h_k isotropic Gaussians of std sigma_k, evenly spaced from ``sigma_centre`` to ``sigma_edge``, and w_k(p)
piecewise-linear "hat" weights of the normalised radius t(p) = |p - c| / |corner - c| in [0, 1] (K nodes at
t = k / (K - 1); the weights sum to 1 at every pixel, so the PSF at p is a Gaussian mixture of total mass 1,
of std about sigma_centre + t (sigma_edge - sigma_centre)). Each h_k * x is the exact zero-boundary
convolution of :class:`~wavepatch.physics.blur.Blur`, so the adjoint is exact. The model of lens / detector blur
that grows off-axis (and of depth-dependent blur in microscopy).
"""

from __future__ import annotations

import torch

from wavepatch.physics.blur import Blur, gaussian_kernel
from wavepatch.physics.buffered import BufferedOperator

Tensor = torch.Tensor

VARYING_DEFAULTS = {"sigma_centre": 0.5, "sigma_edge": 3.0, "nodes": 5}  # the deblur --kernel varying preset (px)


def radial_hat_weights(height: int, width: int, nodes: int) -> Tensor:
    """(K, H, W) float64 weights w_k of the normalised radius t (0 at the image centre, 1 at the corners): hat
    functions centred on t = k / (K - 1), each pixel's weights summing to 1 (K = 1: all ones)."""
    if nodes < 1:
        raise ValueError(f"nodes must be at least 1, got {nodes}")
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    cy, cx = (height - 1) / 2, (width - 1) / 2
    t = torch.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / max(1e-12, (cy**2 + cx**2) ** 0.5)
    if nodes == 1:
        return torch.ones(1, height, width, dtype=torch.float64)
    pos = t * (nodes - 1)
    return torch.stack([(1 - (pos - k).abs()).clamp_min(0) for k in range(nodes)])


class VaryingBlur(BufferedOperator):
    """Spatially varying Gaussian blur (module docstring): ``(B, C, H, W) -> (B, C, H, W)``, zero boundary."""

    def __init__(self, image_shape: tuple[int, int, int], sigma_centre: float = 0.5, sigma_edge: float = 3.0,
                 nodes: int = 5) -> None:
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape}")
        if not (0 < sigma_centre and 0 < sigma_edge):
            raise ValueError(f"PSF widths must be positive, got {sigma_centre} and {sigma_edge}")
        self.image_shape = tuple(image_shape)
        self.sigmas = [float(s) for s in torch.linspace(sigma_centre, sigma_edge, nodes, dtype=torch.float64)]
        self.blurs = [Blur(gaussian_kernel(s, dtype=torch.float64), self.image_shape) for s in self.sigmas]
        self.weights = radial_hat_weights(image_shape[1], image_shape[2], nodes)

    def to(self, device: torch.device | str) -> VaryingBlur:
        self.blurs = [b.to(device) for b in self.blurs]
        return super().to(device)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        w = self._held("weights", x, x.dtype)
        return sum(w[k] * blur.A(x) for k, blur in enumerate(self.blurs))

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        w = self._held("weights", y, y.dtype)
        return sum(blur.A_adjoint(w[k] * y) for k, blur in enumerate(self.blurs))

    def psf_at(self, row: int, col: int) -> Tensor:
        """The PSF of output pixel (row, col): row p of A as a (k, k) float64 patch centred on p (k: the widest
        node kernel's size; zero outside the image)."""
        h, w = self.image_shape[1:]
        if not (0 <= row < h and 0 <= col < w):
            raise ValueError(f"pixel ({row}, {col}) is outside the {h} x {w} image")
        size = max(b.kernel.shape[-1] for b in self.blurs)
        e = torch.zeros((1,) + self.image_shape, dtype=torch.float64)
        e[0, 0, row, col] = 1.0
        r = size // 2
        padded = torch.nn.functional.pad(self.A_adjoint(e)[0, 0], (r, r, r, r))  # A^T e_p = row p of A
        return padded[row:row + size, col:col + size]
