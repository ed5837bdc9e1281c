"""Forward models that couple the slices of a volume: thick-slice acquisition (z super-resolution) and 3-D
Cartesian MRI.

Volumes are (B, 1, S, H, W): S slices along z, each H x W.

- :class:`ThickSliceZ`: each measured slice is the mean of ``factor`` consecutive thin slices (a box slice
  profile of width ``factor`` thin slices, contiguous thick slices), y (B, 1, S / factor, H, W). A A^T = I / F,
  so the pseudo-inverse is ``F A^T`` (every thin slice gets its thick slice's value), closed form.
- :class:`Cartesian3DMRI`: the unitary centred 3-D DFT of the volume, masked on the two phase-encode axes (z and
  y) and fully sampled along the readout (x, the W axis): y (B, 1, S, H, W) complex, unsampled entries 0. The
  image is real, so the adjoint is Re(F^H M y); the pseudo-inverse reweights entries whose mirror (-k) is not
  sampled (as :class:`wavepatch.physics.mri.SingleCoilMRI` does in 2-D).
- :func:`gaussian_2d_mask`: the phase-encode mask: a fully sampled centre block plus points drawn without
  replacement with a Gaussian density, ``round(S H / R)`` points in all.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from wavepatch.physics.buffered import BufferedOperator
from wavepatch.physics.mri import default_center_fraction, mirror_index

Tensor = torch.Tensor
_AXES3 = (-3, -2, -1)


def _check_volume(x: Tensor, shape: tuple[int, ...], what: str) -> None:
    if x.ndim != 5 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{what} takes volumes (B, {', '.join(map(str, shape))}), got shape {tuple(x.shape)}")


class ThickSliceZ(BufferedOperator):
    """z super-resolution: thin-slice volume (B, 1, S, H, W) -> thick slices (B, 1, S / factor, H, W), each the
    mean of ``factor`` consecutive thin slices. S must be a multiple of ``factor``."""

    closed_form_dagger = True

    def __init__(self, factor: int, image_shape: tuple[int, int, int, int]) -> None:
        factor = int(factor)
        if factor < 2:
            raise ValueError(f"the z factor must be an integer >= 2, got {factor}")
        c, s, h, w = (int(v) for v in image_shape)
        if c != 1 or s % factor:
            raise ValueError(f"z super-resolution x{factor} needs a one-channel volume whose slice count is a "
                             f"multiple of {factor}, got image shape {tuple(image_shape)}")
        self.factor, self.image_shape = factor, (c, s, h, w)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        _check_volume(x, self.image_shape, "ThickSliceZ.A")
        b, c, s, h, w = x.shape
        return x.reshape(b, c, s // self.factor, self.factor, h, w).mean(3)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return y.repeat_interleave(self.factor, dim=2) / self.factor

    def A_dagger(self, y: Tensor, n_iter: int = 100, tol: float = 1e-6) -> Tensor:  # noqa: N802
        """Exact pseudo-inverse F A^T (``n_iter``/``tol`` unused): each thick slice copied to its thin slices."""
        return y.repeat_interleave(self.factor, dim=2)


def cubic_along(x: Tensor, factor: int, dim: int) -> Tensor:
    """Cubic interpolation (Keys, a = -0.75, PyTorch's bicubic) of ``x`` by ``factor`` along ``dim``, with
    half-pixel alignment: sample k of the input sits at the centre of output samples k F .. k F + F - 1 (the
    centre of the box it averages, :func:`box_mean_along`). Every other axis is untouched."""
    moved = x.movedim(dim, -1)
    lead = moved.shape[:-1]
    line = moved.reshape(-1, 1, 1, moved.shape[-1])
    up = F.interpolate(line, scale_factor=(1, factor), mode="bicubic", align_corners=False)
    return up.reshape(*lead, up.shape[-1]).movedim(-1, dim).contiguous()


def box_mean_along(x: Tensor, factor: int, dim: int) -> Tensor:
    """The mean of consecutive groups of ``factor`` samples along ``dim`` (its length a multiple of ``factor``):
    the thick-slice profile of :class:`ThickSliceZ` along any axis."""
    moved = x.movedim(dim, -1)
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // factor, factor).mean(-1).movedim(-1, dim)


def cubic_z(y: Tensor, factor: int) -> Tensor:
    """The z-SR baseline: cubic interpolation along z of thick slices (B, 1, S', H, W) to (B, 1, S' factor, H, W)
    (:func:`cubic_along` on the slice axis: thick slice k sits at the centre of thin slices k F .. k F + F - 1,
    so the in-plane samples are untouched)."""
    return cubic_along(y, factor, 2)


def gaussian_2d_mask(shape: tuple[int, int], acceleration: float, center_fraction: float | None = None,
                     generator: torch.Generator | None = None, std_fraction: float = 15.0 / 128.0) -> Tensor:
    """Variable-density phase-encode mask over (z, y): bool (S, H), centred layout (DC at (S//2, H//2)).

    A centre block of ``center_fraction`` of each side (default ``sqrt(0.32 / R)``: the same share of samples
    as the 2-D masks' centre lines, 0.08 of them for R = 4) is fully sampled; the other points of the total
    ``round(S H / R)`` are drawn without replacement with probability ~ exp(-(dz^2 / S^2 + dy^2 / H^2) /
    (2 std_fraction^2)), the 2-D masks' Gaussian density per axis.
    """
    s, h = (int(v) for v in shape)
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    if center_fraction is None:
        center_fraction = math.sqrt(default_center_fraction(acceleration))
    if not 0.0 <= center_fraction <= 1.0:
        raise ValueError(f"center_fraction must be in [0, 1], got {center_fraction}")
    mask = torch.zeros(s, h, dtype=torch.bool)
    cs, ch = max(1, round(s * center_fraction)), max(1, round(h * center_fraction))
    zs, ys = (s - cs + 1) // 2, (h - ch + 1) // 2
    mask[zs:zs + cs, ys:ys + ch] = True
    total = max(1, round(s * h / acceleration))
    outside = torch.nonzero(~mask.flatten()).flatten()
    n_out = min(len(outside), max(0, total - int(mask.sum())))
    if n_out:
        dz = (outside // h - s // 2).double() / s
        dy = (outside % h - h // 2).double() / h
        weights = torch.exp(-(dz**2 + dy**2) / (2.0 * std_fraction**2))
        picks = torch.multinomial(weights, n_out, replacement=False, generator=generator)
        mask.view(-1)[outside[picks]] = True
    return mask


class Cartesian3DMRI(BufferedOperator):
    """3-D Cartesian MRI: real volume (B, 1, S, H, W) -> k-space (B, 1, S, H, W) complex, ``A x = M F3 x`` with
    the (S, H) phase-encode ``mask`` applied on every readout line (W). Adjoint Re(F3^H M y)."""

    closed_form_dagger = True

    def __init__(self, mask: Tensor, image_shape: tuple[int, int, int, int]) -> None:
        mask = torch.as_tensor(mask).to(torch.bool)
        c, s, h, w = (int(v) for v in image_shape)
        if c != 1 or tuple(mask.shape) != (s, h):
            raise ValueError(f"the phase-encode mask must be (S, H) = {(s, h)} for image shape "
                             f"{tuple(image_shape)}, got {tuple(mask.shape)}")
        self.mask, self.image_shape = mask[:, :, None].expand(s, h, w).contiguous(), (c, s, h, w)
        mirrored = self.mask[mirror_index(s)][:, mirror_index(h)][:, :, mirror_index(w)]
        self.real_dagger_weight = torch.where(self.mask, 2.0 / (1.0 + mirrored.double()), 0.0)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        _check_volume(x, self.image_shape, "Cartesian3DMRI.A")
        mask = self._held("mask", x, x.dtype)
        k = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x, dim=_AXES3), dim=_AXES3, norm="ortho"),
                               dim=_AXES3)
        return k * mask

    def _inverse(self, y: Tensor) -> Tensor:
        x = torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(y, dim=_AXES3), dim=_AXES3, norm="ortho"),
                               dim=_AXES3)
        return x.real

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return self._inverse(y * self._held("mask", y, y.real.dtype))

    def A_dagger(self, y: Tensor, n_iter: int = 100, tol: float = 1e-6) -> Tensor:  # noqa: N802
        """Exact pseudo-inverse for real volumes (``n_iter``/``tol`` unused): Re(F3^H (w M y)), w = 2 where the
        mirror frequency is unsampled, 1 elsewhere."""
        return self._inverse(y * self._held("real_dagger_weight", y, y.real.dtype))
