"""Periodized discrete wavelet transforms (2D and 3D), batched and differentiable, in torch.

Equal to PyWavelets' ``wavedec2`` / ``wavedecn`` / ``waverec2`` / ``waverecn`` with ``mode='periodization'``.
The signal is treated as periodic, so a side of length n gives exactly n/2 coefficients per level.

Two families of public functions share one implementation:

* :func:`dwt2_periodized` / :func:`dwt3_periodized` and their inverses accept only **orthogonal** wavelets (haar,
  dbN, symN, coifN, ...). The multi-level transform is then an orthogonal matrix W: energy is preserved and the
  inverse is the adjoint. Wavelet thresholding and wavelet score models (WSGM) rely on that, so these functions
  refuse anything else.
* :func:`wavedec2_periodized` / :func:`wavedec3_periodized` and :func:`waverec2_periodized` /
  :func:`waverec3_periodized` accept any discrete pywt wavelet, including the **biorthogonal** families
  ('bior2.2', 'bior4.4' = CDF 9/7, 'rbioN.M'). Analysis uses pywt's ``dec_lo/dec_hi``; synthesis uses the
  reconstruction filters ``rec_lo/rec_hi``, which for a biorthogonal wavelet is the inverse but not the adjoint.
  For an orthogonal wavelet both families give identical results.

Both directions work on polyphase components (even / odd samples along an axis) with shifted views and
multiply-adds, which is faster on CPU than strided convolutions. ptwt has no periodization mode; see
docs/results.md §7.2 for a speed comparison.

Conventions. Images are (B, C, H, W) or volumes (B, C, D, H, W); each side must be divisible by 2**levels.
A detail band is named like pywt by one letter per spatial axis ('a' lowpass, 'd' highpass along that axis):
2D bands are ordered as pywt's (cH, cV, cD) = ('da', 'ad', 'dd'), i.e. highpass along H, highpass along W,
both; 3D bands as pywt's ``wavedecn`` keys 'aad', 'ada', 'add', 'daa', 'dad', 'dda', 'ddd' (axes D, H, W).

:func:`wavelet_shrink` is the one wavelet soft-thresholding (prox of the l1 norm of the detail coefficients) used
by the solvers, the classical denoisers and the samplers.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from itertools import product

import pywt
import torch

from wavepatch.linalg import soft_threshold

Tensor = torch.Tensor

BAND_KEYS: dict[int, tuple[str, ...]] = {
    2: ("da", "ad", "dd"),
    3: tuple("".join(k) for k in product("ad", repeat=3))[1:],
}


@cache
def _filters(wavelet: str) -> tuple[tuple[float, ...], ...]:
    """pywt's (dec_lo, dec_hi, rec_lo, rec_hi), all of one even length L."""
    w = pywt.Wavelet(wavelet)
    return tuple(w.dec_lo), tuple(w.dec_hi), tuple(w.rec_lo), tuple(w.rec_hi)


@cache
def _require_orthogonal(wavelet: str) -> None:
    if not pywt.Wavelet(wavelet).orthogonal:
        raise ValueError(f"wavelet {wavelet!r} is not orthogonal; use wavedec2_periodized / waverec2_periodized "
                         "(or the 3D ones) for biorthogonal wavelets")


def _wrap(x: Tensor, dim: int, first: int, stop: int) -> Tensor:
    """Samples first..stop-1 of the periodic extension of x along dim (indices taken mod the side, so a side
    shorter than the filter, at coarse levels, wraps as often as needed)."""
    if first == 0 and stop == x.shape[dim]:
        return x  # nothing to wrap (Haar)
    idx = torch.arange(first, stop, device=x.device) % x.shape[dim]
    return x.index_select(dim, idx)


def _combine(coeffs: Sequence[float], views: list[Tensor]) -> Tensor:
    """sum_i coeffs[i] * views[i], accumulated in place into one new tensor (autograd-safe: no value is saved).
    Zero taps (pywt pads odd-length biorthogonal filters with zeros) are skipped."""
    terms = [(c, v) for c, v in zip(coeffs, views, strict=True) if c != 0]
    out = terms[0][1] * terms[0][0]
    for c, v in terms[1:]:
        out.add_(v, alpha=c)
    return out


def _analysis_axis(x: Tensor, dim: int, dec_lo: tuple[float, ...], dec_hi: tuple[float, ...]) -> tuple[Tensor, Tensor]:
    """One-level periodized 1D analysis along dim: x (..., n, ...) -> (lo, hi), each (..., n/2, ...).

    pywt's periodization computes a[k] = sum_i h[i] x[(2k + L/2 - i) mod n]. Writing s_i = L/2 - i = 2 q_i + r_i,
    that is a sum of L shifted views of the even (r=0) or odd (r=1) polyphase component: x_r[(k + q_i) mod n/2].
    Both bands read the same views, so the cost is 2L multiply-adds on half-size arrays and no convolution.
    """
    m, L = x.shape[dim] // 2, len(dec_lo)
    shift = [((L // 2 - i) % 2, (L // 2 - i) // 2) for i in range(L)]  # (r_i, q_i)
    q_min, q_max = min(q for _, q in shift), max(q for _, q in shift)
    phases = x.unflatten(dim, (m, 2))
    ext = [_wrap(phases.select(dim + 1, r), dim, q_min, m + q_max) for r in (0, 1)]
    views = [ext[r].narrow(dim, q - q_min, m) for r, q in shift]
    return _combine(dec_lo, views), _combine(dec_hi, views)


def _synthesis_axis(lo: Tensor, hi: Tensor, dim: int, rec_lo: tuple[float, ...], rec_hi: tuple[float, ...]) -> Tensor:
    """One-level periodized 1D synthesis along dim: (lo, hi), each (..., m, ...) -> x (..., 2m, ...).

    pywt's periodized reconstruction is x[(2k + t_i) mod n] += lo[k] g[i] + hi[k] g'[i] with t_i = i - L/2 + 1
    (g, g' = rec_lo, rec_hi). Writing t_i = 2 q_i + r_i, the polyphase component x_r is a sum of shifted views
    lo[(p - q_i) mod m]. With the reconstruction filters this inverts :func:`_analysis_axis`; for an orthogonal
    wavelet it is also its adjoint.
    """
    m, L = lo.shape[dim], len(rec_lo)
    shift = [((i - L // 2 + 1) % 2, (i - L // 2 + 1) // 2) for i in range(L)]  # (r_i, q_i)
    q_min, q_max = min(q for _, q in shift), max(q for _, q in shift)
    lo_ext, hi_ext = (_wrap(b, dim, -q_max, m - q_min) for b in (lo, hi))
    phases = []
    for parity in (0, 1):
        coeffs, views = [], []
        for g, g2, (r, q) in zip(rec_lo, rec_hi, shift, strict=True):
            if r == parity:
                coeffs += [g, g2]
                views += [lo_ext.narrow(dim, q_max - q, m), hi_ext.narrow(dim, q_max - q, m)]
        phases.append(_combine(coeffs, views))
    return torch.stack(phases, dim + 1).flatten(dim, dim + 1)


def _check_shape(x: Tensor, ndim: int, levels: int) -> None:
    if x.dim() != ndim + 2:
        raise ValueError(f"expected a {ndim + 2}-D tensor (B, C, *{ndim} spatial sides), got {tuple(x.shape)}")
    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")
    sides = x.shape[2:]
    if any(s % 2**levels for s in sides):
        raise ValueError(f"spatial sides {tuple(sides)} must be divisible by 2**levels = {2**levels}")


def _binary_index(key: str) -> int:
    """Position of a band in the order the separable loop produces: first axis = most significant bit."""
    return int(key.replace("a", "0").replace("d", "1"), 2)


def _dwtn(x: Tensor, wavelet: str, levels: int, ndim: int) -> tuple[Tensor, list[Tensor]]:
    _check_shape(x, ndim, levels)
    dec_lo, dec_hi = _filters(wavelet)[:2]
    low, details = x, []
    for _ in range(levels):
        bands = [low]
        for axis in range(2, ndim + 2):  # each pass splits every band in (lo, hi): binary order
            bands = [b for band in bands for b in _analysis_axis(band, axis, dec_lo, dec_hi)]
        low = bands[0]
        details.insert(0, torch.stack([bands[_binary_index(k)] for k in BAND_KEYS[ndim]], dim=2))
    return low, details


def _idwtn(lowpass: Tensor, details: list[Tensor], wavelet: str, ndim: int) -> Tensor:
    rec_lo, rec_hi = _filters(wavelet)[2:]
    low = lowpass
    for d in details:
        if d.dim() != ndim + 3 or d.shape[3:] != low.shape[2:] or d.shape[2] != 2**ndim - 1:
            raise ValueError(f"detail band shape {tuple(d.shape)} does not fit lowpass {tuple(low.shape)}")
        bands = [low] * 2**ndim
        for b, key in enumerate(BAND_KEYS[ndim]):
            bands[_binary_index(key)] = d[:, :, b]
        for axis in range(ndim + 1, 1, -1):  # last axis = least significant bit: merge neighbouring pairs
            bands = [_synthesis_axis(bands[i], bands[i + 1], axis, rec_lo, rec_hi) for i in range(0, len(bands), 2)]
        low = bands[0]
    return low


def dwt2_periodized(x: Tensor, wavelet: str = "haar", levels: int = 1) -> tuple[Tensor, list[Tensor]]:
    """Multi-level orthonormal periodized 2D DWT of x (B, C, H, W); orthogonal wavelets only.

    Returns ``(lowpass, details)``: lowpass (B, C, H/2^J, W/2^J) and details, a list of J tensors from the
    coarsest level to the finest, level j of shape (B, C, 3, H/2^(J-j), W/2^(J-j)) with bands in pywt's
    (cH, cV, cD) order, i.e. exactly ``pywt.wavedec2(x, wavelet, mode='periodization', level=J)``.
    Raises ValueError when H or W is not divisible by 2**levels, or when the wavelet is not orthogonal.
    """
    _require_orthogonal(wavelet)
    return _dwtn(x, wavelet, levels, ndim=2)


def idwt2_periodized(lowpass: Tensor, details: list[Tensor], wavelet: str = "haar") -> Tensor:
    """Inverse (= adjoint) of :func:`dwt2_periodized` -> image (B, C, H, W)."""
    _require_orthogonal(wavelet)
    return _idwtn(lowpass, details, wavelet, ndim=2)


def dwt3_periodized(x: Tensor, wavelet: str = "haar", levels: int = 1) -> tuple[Tensor, list[Tensor]]:
    """Multi-level orthonormal periodized 3D DWT of x (B, C, D, H, W); orthogonal wavelets only.

    Returns ``(lowpass, details)`` like :func:`dwt2_periodized` with 7 bands per level, (B, C, 7, d, h, w),
    ordered as pywt's keys 'aad', 'ada', 'add', 'daa', 'dad', 'dda', 'ddd' over axes (D, H, W); equal to
    ``pywt.wavedecn(x, wavelet, mode='periodization', level=J, axes=(-3, -2, -1))``.
    """
    _require_orthogonal(wavelet)
    return _dwtn(x, wavelet, levels, ndim=3)


def idwt3_periodized(lowpass: Tensor, details: list[Tensor], wavelet: str = "haar") -> Tensor:
    """Inverse (= adjoint) of :func:`dwt3_periodized` -> volume (B, C, D, H, W)."""
    _require_orthogonal(wavelet)
    return _idwtn(lowpass, details, wavelet, ndim=3)


def wavedec2_periodized(x: Tensor, wavelet: str = "bior4.4", levels: int = 1) -> tuple[Tensor, list[Tensor]]:
    """Multi-level periodized 2D DWT of x (B, C, H, W) for any discrete pywt wavelet (biorthogonal included).

    Same layout as :func:`dwt2_periodized`; equal to ``pywt.wavedec2(x, wavelet, mode='periodization', level=J)``.
    For a biorthogonal wavelet the transform is invertible but not orthogonal (energy is not preserved).
    """
    return _dwtn(x, wavelet, levels, ndim=2)


def waverec2_periodized(lowpass: Tensor, details: list[Tensor], wavelet: str = "bior4.4") -> Tensor:
    """Inverse of :func:`wavedec2_periodized` (reconstruction filters) -> image (B, C, H, W); = pywt.waverec2."""
    return _idwtn(lowpass, details, wavelet, ndim=2)


def wavedec3_periodized(x: Tensor, wavelet: str = "bior4.4", levels: int = 1) -> tuple[Tensor, list[Tensor]]:
    """Multi-level periodized 3D DWT of x (B, C, D, H, W) for any discrete pywt wavelet (biorthogonal included).

    Same layout as :func:`dwt3_periodized`; equal to ``pywt.wavedecn(x, wavelet, mode='periodization', level=J,
    axes=(-3, -2, -1))``.
    """
    return _dwtn(x, wavelet, levels, ndim=3)


def waverec3_periodized(lowpass: Tensor, details: list[Tensor], wavelet: str = "bior4.4") -> Tensor:
    """Inverse of :func:`wavedec3_periodized` (reconstruction filters) -> volume (B, C, D, H, W)."""
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


def _halvings(n: int) -> int:
    """How many times n halves exactly: 8 -> 3, 12 -> 2, 1 -> 0."""
    k = 0
    while n % 2 == 0 and n > 1:
        n //= 2
        k += 1
    return k


def wavelet_shrink(x: Tensor, tau: float | Tensor, wavelet: str = "haar", levels: int = 3,
                   shift: tuple[int, int] | None = None) -> Tensor:
    """u = W^-1 soft(W x, tau) with the low-pass band kept: the proximal map of tau ||detail coefficients of x||_1,
    W the orthonormal periodized 2D DWT (:func:`dwt2_periodized`). x (B, C, H, W) -> (B, C, H, W).

    tau: a float or a (B,) tensor (one threshold per item); tau <= 0 gives u = x exactly (per item for a tensor).
    ``levels`` is capped at the number of times H and W halve exactly (0 levels: u = x). ``shift`` (dy, dx) rolls x
    circularly before the transform and back after (cycle spinning).
    """
    levels = min(levels, _halvings(x.shape[-2]), _halvings(x.shape[-1]))
    if levels == 0 or (not isinstance(tau, Tensor) and tau <= 0):
        return x
    spin = shift is not None and tuple(shift) != (0, 0)
    v = torch.roll(x, shifts=tuple(shift), dims=(-2, -1)) if spin else x
    low, details = dwt2_periodized(v, wavelet, levels)
    u = idwt2_periodized(low, [soft_threshold(d, tau) for d in details], wavelet)
    if spin:
        u = torch.roll(u, shifts=(-shift[0], -shift[1]), dims=(-2, -1))
    if isinstance(tau, Tensor):
        u = torch.where(tau.to(x.device).reshape(-1, *(1,) * (x.dim() - 1)) <= 0, x, u)
    return u
