"""Inpainting: observe a subset of pixels. Masks are boolean with ``True`` = observed."""

from __future__ import annotations

import torch

from wavepatch.physics.buffered import BufferedOperator

Tensor = torch.Tensor


def random_pixel_mask(
    shape: tuple[int, int], keep_fraction: float, generator: torch.Generator | None = None
) -> Tensor:
    """Uniformly random pixel mask -> bool ``(H, W)`` with exactly ``round(keep_fraction * H * W)`` observed
    pixels (a random permutation, not independent coin flips, so the sampling rate is exact)."""
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    h, w = shape
    n_keep = round(keep_fraction * h * w)
    mask = torch.zeros(h * w, dtype=torch.bool)
    mask[torch.randperm(h * w, generator=generator)[:n_keep]] = True
    return mask.reshape(h, w)


def box_mask(
    shape: tuple[int, int], box_fraction: float = 0.5, center: tuple[int, int] | None = None
) -> Tensor:
    """Mask with one missing rectangle -> bool ``(H, W)``, ``False`` inside the box.

    The box is ``round(box_fraction * H) x round(box_fraction * W)`` pixels centred on ``center``
    (row, col; default the image centre ``(H // 2, W // 2)``), clipped to the image. The default
    ``box_fraction = 0.5`` hides a quarter of the area, like the 128 x 128 box on 256 x 256 images used
    by DPS/DDRM box inpainting.
    """
    if not 0.0 <= box_fraction <= 1.0:
        raise ValueError(f"box_fraction must be in [0, 1], got {box_fraction}")
    h, w = shape
    bh, bw = round(box_fraction * h), round(box_fraction * w)
    cr, cc = (h // 2, w // 2) if center is None else center
    top, left = cr - bh // 2, cc - bw // 2
    mask = torch.ones(h, w, dtype=torch.bool)
    mask[max(0, top) : max(0, top + bh), max(0, left) : max(0, left + bw)] = False
    return mask


class Inpainting(BufferedOperator):
    """``A x = m * x`` (unobserved pixels set to 0): ``(B, C, H, W) -> (B, C, H, W)``.

    ``mask`` is ``(H, W)`` (shared by all channels) or ``(C, H, W)``. A is an orthogonal projection, so it
    is self-adjoint and is its own pseudo-inverse.
    """

    closed_form_dagger = True

    def __init__(self, mask: Tensor, image_shape: tuple[int, int, int] | None = None) -> None:
        mask = torch.as_tensor(mask).to(torch.bool)
        if mask.dim() not in (2, 3):
            raise ValueError(f"mask must be (H, W) or (C, H, W), got shape {tuple(mask.shape)}")
        if image_shape is None:
            image_shape = (1,) + tuple(mask.shape) if mask.dim() == 2 else tuple(mask.shape)
        if len(image_shape) != 3 or tuple(image_shape[-2:]) != tuple(mask.shape[-2:]):
            raise ValueError(f"image_shape {image_shape} does not match mask shape {tuple(mask.shape)}")
        if mask.dim() == 3 and mask.shape[0] != image_shape[0]:
            raise ValueError(f"mask has {mask.shape[0]} channels, image_shape {image_shape[0]}")
        self.image_shape = tuple(image_shape)
        self.mask = mask

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return x * self._held("mask", x, x.real.dtype if x.is_complex() else x.dtype)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return self.A(y)

    def A_dagger(self, y: Tensor, n_iter: int = 100, tol: float = 1e-6) -> Tensor:  # noqa: N802
        """Exact pseudo-inverse: ``m * y`` (``n_iter``/``tol`` unused)."""
        return self.A(y)
