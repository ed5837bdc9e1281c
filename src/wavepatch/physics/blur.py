"""Shift-invariant blur: kernel builders and the zero-boundary convolution operator, for images and volumes, and
a reflect-boundary Gaussian low-pass of images (``gaussian_lowpass``, a filter rather than a forward model).

Kernels are ``(k, k)`` (or ``(k, k, k)`` for volumes) float tensors of odd size that sum to 1, indexed like images
(row 0 at the top), so the kernel's centre pixel is ``(k // 2, k // 2)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from scipy.fft import next_fast_len

from wavepatch.physics.buffered import BufferedOperator

Tensor = torch.Tensor


def _check_odd(size: int, what: str = "kernel size") -> int:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"{what} must be a positive odd integer, got {size}")
    return int(size)


def gaussian_kernel(
    sigma: float, size: int | None = None, dtype: torch.dtype = torch.float32, ndim: int = 2
) -> Tensor:
    """Isotropic sampled Gaussian, std ``sigma`` pixels -> ``(size,) * ndim`` summing to 1 (``ndim=3``: a volume
    kernel ``(size, size, size)``); separable, the outer product of one 1D Gaussian along every axis.

    Default ``size = 2 * ceil(3 sigma) + 1`` (covers +-3 sigma).
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if ndim < 1:
        raise ValueError(f"ndim must be >= 1, got {ndim}")
    size = _check_odd(2 * math.ceil(3 * sigma) + 1 if size is None else size)
    r = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(r**2) / (2.0 * sigma**2))
    k = g
    for _ in range(ndim - 1):
        k = k.unsqueeze(-1) * g
    return (k / k.sum()).to(dtype)


def gaussian_lowpass(x: Tensor, width: float, padding: str = "reflect") -> Tensor:
    """x (B, C, H, W) blurred by a Gaussian of std ``width`` pixels, separable; width 0 returns x.
    padding: "reflect" (a constant image is unchanged) or "zeros" (zero outside the image, e.g. an object on an
    empty background)."""
    if padding not in ("reflect", "zeros"):
        raise ValueError(f"padding must be 'reflect' or 'zeros', got {padding!r}")
    if width == 0:
        return x
    k = gaussian_kernel(width, ndim=1, dtype=x.dtype).to(x.device)
    r = k.numel() // 2
    b, c, h, w = x.shape
    if padding == "reflect" and r >= min(h, w):
        raise ValueError(f"a Gaussian of {width} px needs images larger than {2 * r} px, got {h} x {w}")
    mode = "reflect" if padding == "reflect" else "constant"
    y = x.reshape(b * c, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))
    return y.reshape(b, c, h, w)


def uniform_kernel(size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Box (moving-average) kernel -> ``(size, size)`` with every entry ``1 / size^2``; ``size`` odd."""
    size = _check_odd(size)
    return torch.full((size, size), 1.0 / size**2, dtype=torch.float64).to(dtype)


def motion_kernel(
    length: float, angle_deg: float, size: int | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Linear motion blur: a centred segment of ``length`` pixels -> ``(size, size)`` summing to 1.

    ``angle_deg`` is counter-clockwise from the horizontal as the image is displayed (row axis pointing
    down), so 0 is a horizontal streak and 90 a vertical one. Anti-aliasing: the segment is sampled
    densely (8 points per pixel) and each point is splatted bilinearly onto its four neighbouring pixels
    (the ideal segment convolved with a 1-px tent, so a 9-px horizontal streak touches 11 pixels, the two
    end pixels lightly).
    Default ``size = 2 * (floor(length / 2) + 1) + 1``, large enough for any angle; with a smaller
    ``size`` the segment is cropped and the kernel renormalised.
    """
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    size = _check_odd(2 * (math.floor(length / 2) + 1) + 1 if size is None else size)
    centre = size // 2
    n_points = max(2, math.ceil(8 * length) + 1)
    t = torch.linspace(-length / 2, length / 2, n_points, dtype=torch.float64)
    theta = math.radians(angle_deg)
    rows = centre - t * math.sin(theta)
    cols = centre + t * math.cos(theta)
    r0, c0 = rows.floor(), cols.floor()
    fr, fc = rows - r0, cols - c0
    kernel = torch.zeros(size, size, dtype=torch.float64)
    corners = ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc))
    for dr, dc, w in corners:
        r, c = (r0 + dr).long(), (c0 + dc).long()
        inside = (r >= 0) & (r < size) & (c >= 0) & (c < size)
        kernel.index_put_((r[inside], c[inside]), w[inside], accumulate=True)
    return (kernel / kernel.sum()).to(dtype)


def heavy_blur_kernel(dtype: torch.dtype = torch.float32) -> Tensor:
    """The "heavy deblurring" preset: a 31 x 31 uniform (box) kernel.

    Chosen to match the PaDIS reference code (Hu et al., NeurIPS 2024), whose ``deblur_uniform`` task uses
    ``--blursize`` default 31. On 256 x 256 images this removes almost all detail finer than ~30 px, and
    the box's sinc-shaped spectrum has near-zeros, so the problem is severely ill-posed.
    """
    return uniform_kernel(31, dtype=dtype)


#: Named kernel presets with their default parameters (typical of the diffusion-deblurring literature):
#: ``gaussian``: sigma 2.0 px, 13 x 13; ``uniform``: 9 x 9 box (DDRM's ``deblur_uniform``);
#: ``motion``: length 15 px at 30 degrees, 17 x 17; ``heavy``: :func:`heavy_blur_kernel` (31 x 31 box).
BLUR_KERNELS: dict[str, Callable[[], Tensor]] = {
    "gaussian": lambda: gaussian_kernel(2.0),
    "uniform": lambda: uniform_kernel(9),
    "motion": lambda: motion_kernel(15.0, 30.0),
    "heavy": heavy_blur_kernel,
}


def make_blur_kernel(name: str) -> Tensor:
    """The preset kernel ``name`` from :data:`BLUR_KERNELS` (float32, odd size, sums to 1)."""
    try:
        return BLUR_KERNELS[name]()
    except KeyError:
        raise ValueError(f"unknown blur kernel {name!r}; choose from {sorted(BLUR_KERNELS)}") from None


class Blur(BufferedOperator):
    """'Same'-size convolution with zero boundary, channel by channel: ``(B, C, H, W) -> (B, C, H, W)`` for a 2D
    kernel ``(kh, kw)``, ``(B, C, D, H, W) -> (B, C, D, H, W)`` for a 3D kernel ``(kd, kh, kw)``.

    ``A x = x * kernel`` (true convolution, i.e. ``scipy.ndimage.convolve(x, kernel, mode='constant')``).
    Zero padding keeps the operator a plain matrix whose exact adjoint is the transposed convolution
    (correlation with the kernel), unlike reflective or circular boundaries in a mismatched pair.

    Computed by FFT on a grid of at least (H + kh - 1, W + kw - 1) (volumes: also D + kd - 1), large enough that the
    circular convolution equals the linear one (no wrap-around), then cropped: the same matrix as the direct
    convolution to rounding, at a cost independent of the kernel size (``benchmarks/blur.py``: 10-700x faster than
    ``conv2d`` on a CPU).
    """

    def __init__(self, kernel: Tensor, image_shape: tuple[int, ...]) -> None:
        kernel = torch.as_tensor(kernel)
        if kernel.dim() not in (2, 3):
            raise ValueError(f"kernel must be 2D (kh, kw) or 3D (kd, kh, kw), got shape {tuple(kernel.shape)}")
        for n, what in zip(kernel.shape, ("depth", "height", "width")[-kernel.dim():], strict=True):
            _check_odd(n, f"kernel {what}")
        if len(image_shape) != kernel.dim() + 1:
            expected = "(C, H, W)" if kernel.dim() == 2 else "(C, D, H, W)"
            raise ValueError(f"image_shape must be {expected} for a {kernel.dim()}D kernel, got {image_shape}")
        self.image_shape = tuple(image_shape)
        self.kernel = kernel.to(torch.float64)
        self.dims = tuple(range(-kernel.dim(), 0))  # the axes convolved: the last 2 (images) or 3 (volumes)
        self.offset = tuple(k // 2 for k in kernel.shape)
        # any grid of at least (H + kh - 1, W + kw - 1) avoids wrap-around; take the next fast FFT length
        sizes = zip(self.image_shape[1:], kernel.shape, strict=True)
        self.fft_shape = tuple(next_fast_len(n + k - 1, real=True) for n, k in sizes)
        self.kernel_fft = torch.fft.rfftn(self.kernel, s=self.fft_shape)  # complex128, cast per call

    def _kernel_fft(self, like: Tensor) -> Tensor:
        dtype = torch.complex128 if like.dtype == torch.float64 else torch.complex64
        return self._held("kernel_fft", like, dtype)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        s, dims = self.fft_shape, self.dims
        full = torch.fft.irfftn(torch.fft.rfftn(x, s=s, dim=dims) * self._kernel_fft(x), s=s, dim=dims)
        return full[(..., *(slice(o, o + n) for o, n in zip(self.offset, self.image_shape[1:], strict=True)))]

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        # embed y at the crop's offset in the FFT grid, correlate with the kernel (conjugate spectrum), keep the image
        s, dims, sizes = self.fft_shape, self.dims, self.image_shape[1:]
        # F.pad lists (before, after) per axis, last axis first
        pad = [p for o, n, m in reversed(tuple(zip(self.offset, sizes, s, strict=True))) for p in (o, m - n - o)]
        z = F.pad(y, pad)
        full = torch.fft.irfftn(torch.fft.rfftn(z, dim=dims) * self._kernel_fft(y).conj(), s=s, dim=dims)
        return full[(..., *(slice(0, n) for n in sizes))]
