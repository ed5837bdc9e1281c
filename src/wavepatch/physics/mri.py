"""Cartesian MRI: undersampling masks, simulated coil sensitivities, single- and multi-coil operators.

Conventions:

* k-space is in the CENTRED layout: the DC sample sits at index ``(H // 2, W // 2)``. The centred unitary
  DFT is ``F = fftshift . fft2(norm='ortho') . ifftshift`` on the last two axes, so ``F^H = F^{-1}``.
* 1D masks undersample the phase-encode direction, taken to be the image columns (W axis): a sampled
  "line" is a whole k-space column. Masks are boolean, ``True`` = sampled.
* Acceleration R means about ``W / R`` sampled columns in total, the fully sampled centre included
  (the fastMRI convention).
"""

from __future__ import annotations

import math

import torch

from wavepatch.physics.buffered import BufferedOperator

Tensor = torch.Tensor

_SPATIAL = (-2, -1)


def centered_fft2(x: Tensor) -> Tensor:
    """Unitary 2D DFT of the last two axes, image centre -> k-space centre (DC at ``(H//2, W//2)``)."""
    k = torch.fft.fft2(torch.fft.ifftshift(x, dim=_SPATIAL), norm="ortho")
    return torch.fft.fftshift(k, dim=_SPATIAL)


def centered_ifft2(k: Tensor) -> Tensor:
    """Inverse (= adjoint) of :func:`centered_fft2`."""
    x = torch.fft.ifft2(torch.fft.ifftshift(k, dim=_SPATIAL), norm="ortho")
    return torch.fft.fftshift(x, dim=_SPATIAL)


# --------------------------------------------------------------------------------------------- masks


def default_center_fraction(acceleration: float) -> float:
    """fastMRI's fully sampled centre fraction: 0.08 for R=4, 0.04 for R=8; ``0.32 / R`` in general
    (the rule both fastMRI settings follow), capped at 1."""
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    return min(1.0, 0.32 / acceleration)


def _center_columns(width: int, center_fraction: float) -> tuple[int, int]:
    """(start, count) of the fully sampled centre block, placed like fastMRI so it contains DC (W//2)."""
    if not 0.0 <= center_fraction <= 1.0:
        raise ValueError(f"center_fraction must be in [0, 1], got {center_fraction}")
    count = max(1, min(width, round(width * center_fraction)))
    return (width - count + 1) // 2, count


def _target_lines(width: int, acceleration: float) -> int:
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    return max(1, round(width / acceleration))


def _centre_and_outside(width: int, acceleration: float, center_fraction: float | None) -> tuple[Tensor, Tensor, int]:
    """The 1-D masks' common start: (bool (W,) mask holding the fully sampled centre block, the columns outside
    it, how many of those to sample so the total is ``round(W / R)``, at most all of them)."""
    if center_fraction is None:
        center_fraction = default_center_fraction(acceleration)
    mask = torch.zeros(width, dtype=torch.bool)
    start, n_center = _center_columns(width, center_fraction)
    mask[start : start + n_center] = True
    outside = torch.nonzero(~mask).flatten()
    return mask, outside, min(len(outside), max(0, _target_lines(width, acceleration) - n_center))


def uniform_1d_mask(
    width: int,
    acceleration: float,
    center_fraction: float | None = None,
    offset: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Equispaced Cartesian mask (fastMRI "equispaced fraction" style) -> bool ``(W,)``, centred layout.

    The centre block (``round(W * center_fraction)`` columns around DC, default
    :func:`default_center_fraction`) is fully sampled; the remaining ``round(W / R) - n_centre`` lines are
    equispaced over the columns outside that block (spacing computed with the block removed, so the total
    is exactly ``round(W / R)`` whenever the centre block is smaller than that). ``offset`` (an integer in
    ``[0, spacing)``) shifts the grid; ``None`` draws it uniformly with ``generator`` (the global torch RNG
    if ``None``), as fastMRI draws a random offset.
    """
    mask, outside, n_out = _centre_and_outside(width, acceleration, center_fraction)
    if n_out == 0:
        return mask
    spacing = len(outside) / n_out
    if offset is None:
        offset = int(torch.randint(0, math.ceil(spacing), (1,), generator=generator))
    if not 0 <= offset < spacing:
        raise ValueError(f"offset must be in [0, {spacing:.3g}), got {offset}")
    picks = torch.floor(offset + spacing * torch.arange(n_out, dtype=torch.float64)).long()
    mask[outside[picks]] = True
    return mask


def gaussian_1d_mask(
    width: int,
    acceleration: float,
    center_fraction: float | None = None,
    generator: torch.Generator | None = None,
    std_fraction: float = 15.0 / 128.0,
) -> Tensor:
    """Variable-density random Cartesian mask -> bool ``(W,)``, centred layout.

    The centre block is fully sampled as in :func:`uniform_1d_mask`; the other
    ``round(W / R) - n_centre`` lines are drawn without replacement from the remaining columns with
    probability proportional to ``exp(-(j - W//2)^2 / (2 std^2))``, ``std = std_fraction * W`` columns.
    The default ``std_fraction = 15/128`` is the "gaussian1d" density of score-MRI (Chung & Ye, 2022).
    The total is exactly ``round(W / R)`` lines whenever the centre block is smaller than that.
    """
    if std_fraction <= 0:
        raise ValueError(f"std_fraction must be > 0, got {std_fraction}")
    mask, outside, n_out = _centre_and_outside(width, acceleration, center_fraction)
    if n_out == 0:
        return mask
    std = std_fraction * width
    # float64 weights: far-tail columns keep a small but non-zero probability (multinomial needs
    # at least n_out non-zero weights).
    weights = torch.exp(-((outside - width // 2).double() ** 2) / (2.0 * std**2))
    picks = torch.multinomial(weights, n_out, replacement=False, generator=generator)
    mask[outside[picks]] = True
    return mask


def mirror_index(n: int) -> Tensor:
    """Index of frequency -f for each centred index (frequency f = j - n//2), wrapping modulo n."""
    return (2 * (n // 2) - torch.arange(n)) % n


def centre_block(mask: Tensor) -> Tensor:
    """The largest fully sampled rectangle of a phase-encode mask (S, H) grown from the DC point (S//2, H//2), as
    a bool (S, H) mask: the calibration centre, never held out. All False when DC is not sampled. 2-D MRI's
    columns are the case S = 1 (the contiguous sampled run through the centre column)."""
    s, h = mask.shape
    block = torch.zeros_like(mask, dtype=torch.bool)
    if not bool(mask[s // 2, h // 2]):
        return block
    z0, z1, y0, y1 = s // 2, s // 2 + 1, h // 2, h // 2 + 1
    grown = True
    while grown:
        grown = False
        for side in range(4):
            nz0, nz1, ny0, ny1 = (z0 - (side == 0), z1 + (side == 1), y0 - (side == 2), y1 + (side == 3))
            if nz0 < 0 or ny0 < 0 or nz1 > s or ny1 > h:
                continue
            if bool(mask[nz0:nz1, ny0:ny1].all()):
                z0, z1, y0, y1, grown = nz0, nz1, ny0, ny1, True
    block[z0:z1, y0:y1] = True
    return block


# ---------------------------------------------------------------------------------------- coil maps


def simulate_coil_maps(
    n_coils: int,
    height: int,
    width: int,
    coil_distance: float = 1.5,
    loop_radius: float = 0.5,
    phase_slope: float = math.pi / 2,
    dtype: torch.dtype = torch.complex64,
) -> Tensor:
    """Smooth, deterministic complex coil sensitivities -> ``(n_coils, H, W)``, with sum_c |S_c|^2 = 1.

    Positions are normalised so the longer image side spans [-1, 1] (pixel centres). Coil c is a small
    loop at angle ``2 pi c / n_coils`` on a circle of radius ``coil_distance`` around the image centre.
    Magnitude: a Biot-Savart-like falloff, the on-axis field law of a loop of radius ``a = loop_radius``
    applied to the in-plane distance ``d`` from the pixel to the coil, ``a^2 / (a^2 + d^2)^{3/2}``.
    Phase: the coil angle plus a linear ramp of ``phase_slope`` radians per unit length along the
    direction towards the coil.
    Finally each pixel is divided by ``sqrt(sum_c |S_c|^2)``, so the maps are normalised (the coil-combined
    image ``sum_c conj(S_c) S_c x`` equals ``x``).
    """
    if n_coils < 1:
        raise ValueError(f"n_coils must be >= 1, got {n_coils}")
    half = max(height, width) / 2.0
    rows = (torch.arange(height, dtype=torch.float64) - (height - 1) / 2.0) / half
    cols = (torch.arange(width, dtype=torch.float64) - (width - 1) / 2.0) / half
    y, x = torch.meshgrid(rows, cols, indexing="ij")
    angles = 2.0 * math.pi * torch.arange(n_coils, dtype=torch.float64) / n_coils
    ux, uy = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
    dist2 = (x - coil_distance * ux) ** 2 + (y - coil_distance * uy) ** 2
    magnitude = loop_radius**2 / (loop_radius**2 + dist2) ** 1.5
    phase = angles[:, None, None] + phase_slope * (x * ux + y * uy)
    maps = torch.polar(magnitude, phase)
    maps = maps / magnitude.pow(2).sum(dim=0).sqrt()
    return maps.to(dtype)


# ---------------------------------------------------------------------------------------- operators


def _as_2d_mask(mask: Tensor, image_shape: tuple[int, ...] | None) -> tuple[Tensor, tuple[int, int, int]]:
    """Broadcast a (W,) or (H, W) mask to (H, W) bool and settle the (C, H, W) image shape."""
    mask = torch.as_tensor(mask).to(torch.bool)
    if mask.dim() == 2:
        h, w = mask.shape
    elif mask.dim() == 1:
        if image_shape is None:
            raise ValueError("a 1D (W,) mask needs image_shape=(C, H, W) to know H")
        h, w = image_shape[-2], mask.shape[0]
        mask = mask[None, :].expand(h, w)
    else:
        raise ValueError(f"mask must be (W,) or (H, W), got shape {tuple(mask.shape)}")
    shape = (1, h, w) if image_shape is None else tuple(image_shape)
    if len(shape) != 3 or shape[-2:] != (h, w):
        raise ValueError(f"image_shape {shape} does not match mask (H, W) = {(h, w)}")
    return mask.contiguous(), shape


def _complex_dtype(x: Tensor) -> torch.dtype:
    """complex64 for float32/complex64 data, complex128 for float64/complex128."""
    return torch.promote_types(x.dtype, torch.complex64)


def _real_dtype(x: Tensor) -> torch.dtype:
    """float32 for float32/complex64 data, float64 for float64/complex128."""
    return x.real.dtype if x.is_complex() else x.dtype


class SingleCoilMRI(BufferedOperator):
    """Masked centred Fourier transform, ``A x = M F x``.

    Image ``(B, C, H, W)`` (real, or complex when ``real_image=False``) -> k-space ``(B, C, H, W)``
    complex with unsampled entries exactly 0. Channels are independent images (normally C = 1).

    With ``real_image=True`` the image space is real and, for the real inner product, the adjoint is
    ``Re(F^H M y)``; with ``False`` it is the complex ``F^H M y``.
    """

    closed_form_dagger = True

    def __init__(
        self, mask: Tensor, image_shape: tuple[int, int, int] | None = None, real_image: bool = True
    ) -> None:
        self.mask, self.image_shape = _as_2d_mask(mask, image_shape)
        self.real_image = real_image
        # Pseudo-inverse weights for real images: frequency k and its mirror -k carry the same information
        # (Hermitian symmetry), so a line sampled without its mirror is seen with half the gain by
        # Re(F^H M .). Weight 2/(1 + M(-k)) on sampled entries undoes that (see A_dagger).
        mirrored = self.mask[mirror_index(self.mask.shape[0])][:, mirror_index(self.mask.shape[1])]
        self.real_dagger_weight = torch.where(self.mask, 2.0 / (1.0 + mirrored.double()), 0.0)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        mask = self._held("mask", x, _real_dtype(x))
        return centered_fft2(x) * mask

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        mask = self._held("mask", y, _real_dtype(y))
        x = centered_ifft2(y * mask)
        return x.real if self.real_image else x

    def A_dagger(self, y: Tensor, n_iter: int = 100, tol: float = 1e-6) -> Tensor:  # noqa: N802
        """Exact pseudo-inverse (``n_iter``/``tol`` unused).

        Complex images: zero-filled ``F^H M y`` (F unitary, M a projection). Real images:
        ``Re(F^H (w M y))`` with ``w = 2`` on lines whose mirror (-k) is unsampled and 1 elsewhere; plain
        zero filling would return those lines at half amplitude unless the mask is point-symmetric.
        """
        if not self.real_image:
            return self.A_adjoint(y)
        weight = self._held("real_dagger_weight", y, _real_dtype(y))
        return centered_ifft2(y * weight).real


class MultiCoilMRI(BufferedOperator):
    """Parallel-imaging operator ``A x = (M F (S_c x))_c``.

    Image ``(B, 1, H, W)`` -> k-space ``(B, Ncoil, H, W)`` complex. Adjoint ``sum_c conj(S_c) F^H M y_c``
    (its real part when ``real_image=True``). ``A_dagger`` is the inherited CG least-squares solver:
    ``A^H A`` is not diagonal in any simple basis once coils and masks combine.
    """

    def __init__(self, mask: Tensor, sensitivity_maps: Tensor, real_image: bool = True) -> None:
        maps = torch.as_tensor(sensitivity_maps)
        if maps.dim() != 3:
            raise ValueError(f"sensitivity_maps must be (Ncoil, H, W), got shape {tuple(maps.shape)}")
        self.mask, self.image_shape = _as_2d_mask(mask, (1,) + tuple(maps.shape[-2:]))
        # Kept in complex128 so float64 data meets no float32 rounding; cast down per call for float32.
        self.sensitivity_maps = maps.to(torch.complex128)
        self.real_image = real_image

    @property
    def n_coils(self) -> int:
        return self.sensitivity_maps.shape[0]

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        mask = self._held("mask", x, _real_dtype(x))
        maps = self._held("sensitivity_maps", x, _complex_dtype(x))
        return centered_fft2(x * maps) * mask  # (B, 1, H, W) * (Ncoil, H, W) -> (B, Ncoil, H, W)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        mask = self._held("mask", y, _real_dtype(y))
        maps = self._held("sensitivity_maps", y, _complex_dtype(y))
        x = (maps.conj() * centered_ifft2(y * mask)).sum(dim=1, keepdim=True)
        return x.real if self.real_image else x


def kspace_noise_std(kspace: Tensor, mask: Tensor, outer: float = 0.125) -> float:
    """Thermal noise std per complex entry (``E|n|^2 = std^2``, the convention of
    :func:`wavepatch.physics.noise.gaussian_noise`; std / sqrt(2) per real component) of measured k-space
    ``(C, H, W)`` (centred layout), from the sampled entries of the outer ``outer`` fraction of readout rows at
    each end, where the object's signal has decayed far below the noise: ``median |z| / sqrt(ln 2)``, from the
    Rayleigh median of complex Gaussian noise. The median keeps the few bright outer samples of sharp edges
    from biasing it. Same units as ``kspace``; with the unitary FFT it is also each coil image's per-pixel
    noise std."""
    k = torch.as_tensor(kspace)
    if k.dim() != 3:
        raise ValueError(f"kspace must be (C, H, W), got shape {tuple(k.shape)}")
    h = k.shape[-2]
    n = max(1, int(round(outer * h)))
    rows = torch.zeros(h, dtype=torch.bool)
    rows[:n] = True
    rows[h - n:] = True
    where = rows[:, None] & torch.as_tensor(mask, dtype=torch.bool).expand(h, -1)
    samples = k[:, where].abs().flatten()
    if samples.numel() == 0:
        raise ValueError("no sampled k-space entries in the outer readout rows to estimate the noise from")
    return float(samples.double().median()) / math.sqrt(math.log(2.0))
