"""Orthonormal periodized discrete wavelet transforms (2D and 3D), batched and differentiable, in torch.

Equal to PyWavelets' ``wavedec2`` / ``wavedecn`` with ``mode='periodization'`` for any orthogonal wavelet pywt
knows (haar, dbN, symN, coifN, ...). The signal is treated as periodic, so a side of length n gives exactly n/2
coefficients per level and the multi-level transform is an orthogonal matrix W: energy is preserved and the
inverse is the adjoint, which is how :func:`idwt2_periodized` / :func:`idwt3_periodized` are computed
(transposed strided convolution plus folding of the periodic extension). ptwt has no periodization mode, and an
orthonormal transform is what wavelet score models (WSGM) and wavelet thresholding want.

Conventions. Images are (B, C, H, W) or volumes (B, C, D, H, W); each side must be divisible by 2**levels.
A detail band is named like pywt by one letter per spatial axis ('a' lowpass, 'd' highpass along that axis):
2D bands are ordered as pywt's (cH, cV, cD) = ('da', 'ad', 'dd'), i.e. highpass along H, highpass along W,
both; 3D bands as pywt's ``wavedecn`` keys 'aad', 'ada', 'add', 'daa', 'dad', 'dda', 'ddd' (axes D, H, W).
"""

from __future__ import annotations

from functools import cache
from itertools import product

import pywt
import torch
import torch.nn.functional as F

Tensor = torch.Tensor

BAND_KEYS: dict[int, tuple[str, ...]] = {
    2: ("da", "ad", "dd"),
    3: tuple("".join(k) for k in product("ad", repeat=3))[1:],
}


@cache
def _dec_filters(wavelet: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    w = pywt.Wavelet(wavelet)
    if not w.orthogonal:
        raise ValueError(f"wavelet {wavelet!r} is not orthogonal; the periodized transform here needs one")
    return tuple(w.dec_lo), tuple(w.dec_hi)


def _analysis_weight(wavelet: str, like: Tensor) -> Tensor:
    """(2, 1, L) conv1d weight: reversed dec_lo / dec_hi, because conv1d correlates rather than convolves."""
    lo, hi = _dec_filters(wavelet)
    w = torch.tensor([lo[::-1], hi[::-1]], dtype=torch.float64)
    return w.unsqueeze(1).to(dtype=like.dtype, device=like.device)


def _periodic_index(n: int, length: int, device: torch.device) -> Tensor:
    """Indices of the periodic extension that conv1d(stride 2) reads, for a side of n samples -> (n + L - 2,).

    pywt's periodization computes a[k] = sum_i h[i] x[(2k + L/2 - i) mod n]; with correlation by the reversed
    filter that is a left shift of L/2 - 1. Taking indices mod n (rather than F.pad(mode='circular')) also
    covers coarse levels where n is shorter than the filter and the signal wraps several times.
    """
    return (torch.arange(n + length - 2, device=device) - (length // 2 - 1)) % n


def _analysis_axis(x: Tensor, weight: Tensor) -> Tensor:
    """One-level 1D analysis along axis 1 of x (M, n, *rest) -> (2M, n/2, *rest), band (lo, hi) leading."""
    M, n = x.shape[:2]
    rest = x.shape[2:]
    y = x.movedim(1, -1).reshape(-1, 1, n)
    y = y.index_select(-1, _periodic_index(n, weight.shape[-1], x.device))
    y = F.conv1d(y, weight, stride=2)  # (M*prod(rest), 2, n/2)
    y = y.reshape(M, *rest, 2, n // 2).movedim(-2, 1).movedim(-1, 2)  # (M, 2, n/2, *rest)
    return y.reshape(2 * M, n // 2, *rest)


def _synthesis_axis(y: Tensor, weight: Tensor) -> Tensor:
    """Adjoint (= inverse) of :func:`_analysis_axis`: (2M, n/2, *rest) -> (M, n, *rest)."""
    M2, half = y.shape[:2]
    rest = y.shape[2:]
    M, n = M2 // 2, 2 * half
    z = y.reshape(M, 2, half, *rest).movedim(2, -1).movedim(1, -2).reshape(-1, 2, half)
    z = F.conv_transpose1d(z, weight, stride=2)  # (M*prod(rest), 1, n + L - 2)
    idx = _periodic_index(n, weight.shape[-1], y.device)
    # Fold the periodic extension back: each padded sample adds into the sample it copied.
    z = torch.zeros(z.shape[0], n, dtype=z.dtype, device=z.device).index_add(1, idx, z[:, 0])
    return z.reshape(M, *rest, n).movedim(-1, 1)


def _check_shape(x: Tensor, ndim: int, levels: int) -> None:
    if x.dim() != ndim + 2:
        raise ValueError(f"expected a {ndim + 2}-D tensor (B, C, *{ndim} spatial sides), got {tuple(x.shape)}")
    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")
    sides = x.shape[2:]
    if any(s % 2**levels for s in sides):
        raise ValueError(f"spatial sides {tuple(sides)} must be divisible by 2**levels = {2**levels}")


def _public_order(ndim: int) -> list[int]:
    """Position of each public band (BAND_KEYS order) in the binary order the separable loop produces."""
    return [int(k.replace("a", "0").replace("d", "1"), 2) - 1 for k in BAND_KEYS[ndim]]


def _dwtn(x: Tensor, wavelet: str, levels: int, ndim: int) -> tuple[Tensor, list[Tensor]]:
    _check_shape(x, ndim, levels)
    B, C = x.shape[:2]
    weight = _analysis_weight(wavelet, x)
    order = _public_order(ndim)
    low = x.reshape(B * C, *x.shape[2:])
    details: list[Tensor] = []
    for _ in range(levels):
        y = low
        for _axis in range(ndim):
            # Rotate so the axis to filter sits at position 1; after ndim rotations the layout is restored,
            # and the band index is sum_i bit_i 2^(ndim-1-i) (first axis = most significant bit).
            y = _analysis_axis(y, weight).movedim(1, -1)
        y = y.reshape(B * C, 2**ndim, *y.shape[1:])
        low = y[:, 0]
        details.insert(0, y[:, 1:][:, order].reshape(B, C, 2**ndim - 1, *y.shape[2:]))
    return low.reshape(B, C, *low.shape[1:]), details


def _idwtn(lowpass: Tensor, details: list[Tensor], wavelet: str, ndim: int) -> Tensor:
    B, C = lowpass.shape[:2]
    weight = _analysis_weight(wavelet, lowpass)
    inverse_order = torch.argsort(torch.tensor(_public_order(ndim))).tolist()
    low = lowpass.reshape(B * C, *lowpass.shape[2:])
    for d in details:
        if d.shape[3:] != low.shape[1:] or d.shape[2] != 2**ndim - 1:
            raise ValueError(f"detail band shape {tuple(d.shape)} does not fit lowpass {tuple(low.shape)}")
        bands = d.reshape(B * C, 2**ndim - 1, *d.shape[3:])[:, inverse_order]
        y = torch.cat([low.unsqueeze(1), bands], dim=1).reshape(B * C * 2**ndim, *d.shape[3:])
        for _ in range(ndim):
            y = _synthesis_axis(y.movedim(-1, 1), weight)
        low = y
    return low.reshape(B, C, *low.shape[1:])


def dwt2_periodized(x: Tensor, wavelet: str = "haar", levels: int = 1) -> tuple[Tensor, list[Tensor]]:
    """Multi-level orthonormal periodized 2D DWT of x (B, C, H, W).

    Returns ``(lowpass, details)``: lowpass (B, C, H/2^J, W/2^J) and details, a list of J tensors from the
    coarsest level to the finest, level j of shape (B, C, 3, H/2^(J-j), W/2^(J-j)) with bands in pywt's
    (cH, cV, cD) order, i.e. exactly ``pywt.wavedec2(x, wavelet, mode='periodization', level=J)``.
    Raises ValueError when H or W is not divisible by 2**levels.
    """
    return _dwtn(x, wavelet, levels, ndim=2)


def idwt2_periodized(lowpass: Tensor, details: list[Tensor], wavelet: str = "haar") -> Tensor:
    """Inverse (= adjoint) of :func:`dwt2_periodized` -> image (B, C, H, W)."""
    return _idwtn(lowpass, details, wavelet, ndim=2)


def dwt3_periodized(x: Tensor, wavelet: str = "haar", levels: int = 1) -> tuple[Tensor, list[Tensor]]:
    """Multi-level orthonormal periodized 3D DWT of x (B, C, D, H, W).

    Returns ``(lowpass, details)`` like :func:`dwt2_periodized` with 7 bands per level, (B, C, 7, d, h, w),
    ordered as pywt's keys 'aad', 'ada', 'add', 'daa', 'dad', 'dda', 'ddd' over axes (D, H, W); equal to
    ``pywt.wavedecn(x, wavelet, mode='periodization', level=J, axes=(-3, -2, -1))``.
    """
    return _dwtn(x, wavelet, levels, ndim=3)


def idwt3_periodized(lowpass: Tensor, details: list[Tensor], wavelet: str = "haar") -> Tensor:
    """Inverse (= adjoint) of :func:`dwt3_periodized` -> volume (B, C, D, H, W)."""
    return _idwtn(lowpass, details, wavelet, ndim=3)


def _band_slices(key: str, sides: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(0, s) if k == "a" else slice(s, 2 * s) for k, s in zip(key, sides, strict=True))


def wavelet_pack(lowpass: Tensor, details: list[Tensor]) -> Tensor:
    """All coefficients in one tensor of the image's shape, laid out like ``pywt.coeffs_to_array``.

    The lowpass fills the leading corner; each level's band sits at offset (side if 'd' else 0) per axis, so
    e.g. in 2D cH is below, cV right of and cD diagonal to the coarser block. Works for 2D and 3D.
    """
    ndim = lowpass.dim() - 2
    sides = lowpass.shape[2:]
    full = tuple(s * 2 ** len(details) for s in sides)
    out = lowpass.new_zeros(*lowpass.shape[:2], *full)
    out[(..., *_band_slices("a" * ndim, sides))] = lowpass
    for d in details:
        sides = d.shape[3:]
        for b, key in enumerate(BAND_KEYS[ndim]):
            out[(..., *_band_slices(key, sides))] = d[:, :, b]
    return out


def wavelet_unpack(packed: Tensor, levels: int) -> tuple[Tensor, list[Tensor]]:
    """Inverse of :func:`wavelet_pack`: (B, C, *sides) -> (lowpass, details) as the dwt functions return."""
    ndim = packed.dim() - 2
    _check_shape(packed, ndim, levels)
    details: list[Tensor] = []
    for j in range(levels, 0, -1):  # coarsest level first
        sides = tuple(s // 2**j for s in packed.shape[2:])
        bands = [packed[(..., *_band_slices(key, sides))] for key in BAND_KEYS[ndim]]
        details.append(torch.stack(bands, dim=2))
    sides = tuple(s // 2**levels for s in packed.shape[2:])
    return packed[(..., *_band_slices("a" * ndim, sides))], details
