"""Coil sensitivity maps from measured multi-coil k-space: ESPIRiT (via SigPy) and phase normalisation.

K-space is in the centred layout of ``wavepatch.physics.mri`` (DC at ``(H // 2, W // 2)``), which is also
SigPy's convention, so no shifting is needed.

``espirit_maps`` wraps the maintained implementation, ``sigpy.mri.app.EspiritCalib`` (Uecker et al., MRM
2014): calibration Hankel matrix from the fully sampled centre, SVD, kernels above ``threshold * s_max``
taken to image space, per-pixel top eigenvector kept where its eigenvalue exceeds ``crop``, phase relative to
the first coil. Its maps are unit-norm per pixel (``sum_c |S_c|^2 = 1`` inside the object, 0 where cropped),
the normalisation ``simulate_coil_maps`` also uses.

``phase_normalized`` then fixes the one thing ESPIRiT leaves free: a per-pixel common phase. ESPIRiT maps
explain the data with the image ``x * exp(i phi_0)`` (phase of the first coil), which is complex. wavepatch's
priors are trained on real, non-negative magnitude images and ``MultiCoilMRI`` defaults to
``real_image=True``, so the maps are multiplied by the phase of a low-resolution coil-combined image: the
image the new maps explain is then (close to) real and non-negative, and a real-image reconstruction with
them is meaningful.
"""

from __future__ import annotations

import numpy as np
import torch

Tensor = torch.Tensor


def _as_kspace_numpy(kspace, name: str = "kspace") -> np.ndarray:
    if isinstance(kspace, torch.Tensor):
        kspace = kspace.detach().cpu().numpy()
    arr = np.asarray(kspace)
    if arr.ndim == 4 and arr.shape[0] == 1:  # (1, C, H, W) batch of one
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be complex (C, H, W), got shape {arr.shape}")
    if not np.iscomplexobj(arr):
        raise ValueError(f"{name} must be complex, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.complex64)


def espirit_maps(
    kspace,
    calib_width: int = 24,
    kernel: int = 6,
    threshold: float = 0.02,
    crop: float = 0.95,
    max_iter: int = 100,
) -> Tensor:
    """ESPIRiT coil sensitivities of centred k-space ``(C, H, W)`` (numpy or torch, complex) -> complex64
    torch ``(C, H, W)`` maps (on the CPU).

    ``calib_width``: side of the fully sampled centre square used for calibration (it must really be fully
    sampled: ``calib_width`` <= the number of centre columns actually acquired); ``kernel``: ESPIRiT kernel
    width; ``threshold``: singular values kept above ``threshold * s_max``; ``crop``: eigenvalue below which a
    pixel's maps are set to 0 (outside the object); ``max_iter``: power iterations per pixel.
    Needs SigPy (``pip install sigpy``); runs on the CPU.
    """
    data = _as_kspace_numpy(kspace)
    c, h, w = data.shape
    if not 1 <= kernel < calib_width <= min(h, w):
        raise ValueError(f"need 1 <= kernel ({kernel}) < calib_width ({calib_width}) <= min(H, W) ({min(h, w)})")
    if not 0.0 <= threshold < 1.0 or not 0.0 <= crop < 1.0:
        raise ValueError(f"threshold ({threshold}) and crop ({crop}) must lie in [0, 1)")
    try:
        from sigpy.mri.app import EspiritCalib
    except ImportError as exc:
        raise ImportError(
            f"espirit_maps needs SigPy for ESPIRiT calibration: pip install sigpy (import failed: {exc})"
        ) from exc
    scale = float(np.abs(data).max())
    if scale == 0.0:
        raise ValueError("kspace is all zeros: no data to calibrate coil maps from")
    app = EspiritCalib(
        data / scale,  # ESPIRiT is scale invariant; this keeps the thresholds meaningful in float32
        calib_width=calib_width,
        kernel_width=kernel,
        thresh=threshold,
        crop=crop,
        max_iter=max_iter,
        show_pbar=False,
    )
    maps = np.asarray(app.run())
    return torch.from_numpy(np.ascontiguousarray(maps, dtype=np.complex64))


def _centred_ifft2(k: Tensor) -> Tensor:
    x = torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho")
    return torch.fft.fftshift(x, dim=(-2, -1))


def lowres_combined_image(maps: Tensor, kspace, calib_width: int = 24) -> Tensor:
    """Low-resolution coil-combined image ``sum_c conj(S_c) F^H (g * y_c)`` -> complex ``(H, W)``.

    ``g`` is a separable Gaussian window on the k-space centre (standard deviation ``calib_width / 4``
    samples, so it lives inside a ``calib_width`` wide fully sampled centre and ignores the undersampled
    outer k-space). A Gaussian has a positive point-spread function, so the low-resolution image of a
    non-negative object has no Gibbs sign flips near its edges.
    """
    y = torch.from_numpy(_as_kspace_numpy(kspace)).to(torch.complex128)
    s = torch.as_tensor(maps).to(torch.complex128)
    if s.shape != y.shape:
        raise ValueError(f"maps {tuple(s.shape)} and kspace {tuple(y.shape)} must have the same (C, H, W) shape")
    _, h, w = y.shape
    sigma = max(calib_width, 2) / 4.0
    rows = torch.exp(-0.5 * ((torch.arange(h, dtype=torch.float64) - h // 2) / sigma) ** 2)
    cols = torch.exp(-0.5 * ((torch.arange(w, dtype=torch.float64) - w // 2) / sigma) ** 2)
    coil_images = _centred_ifft2(y * (rows[:, None] * cols[None, :]))
    return (s.conj() * coil_images).sum(dim=0)


def phase_normalized(maps, kspace, calib_width: int = 24) -> Tensor:
    """Maps times the phase of the low-resolution coil-combined image -> complex64 ``(C, H, W)``.

    ESPIRiT (and any map estimate) is defined only up to a per-pixel common phase ``exp(i phi)``: ``S`` and
    ``S exp(i phi)`` explain the same k-space with images ``x`` and ``x exp(-i phi)``. Choosing ``phi`` as the
    phase of the low-resolution combined image (see :func:`lowres_combined_image`) makes the image the new
    maps explain (close to) real and non-negative, which is what wavepatch's priors (trained on real
    magnitude images) and ``MultiCoilMRI(real_image=True)`` assume. What remains is the object's
    high-resolution phase (e.g. flow or susceptibility), which a smooth estimate cannot remove. Pixels where
    the combined image is exactly zero (cropped maps) are left unchanged.
    """
    s = torch.as_tensor(maps)
    if not s.is_complex() or s.dim() != 3:
        raise ValueError(f"maps must be complex (C, H, W), got {tuple(s.shape)} {s.dtype}")
    lowres = lowres_combined_image(s, kspace, calib_width)
    mag = lowres.abs()
    tiny = mag.max() * 1e-12 if mag.numel() else 0.0
    phase = torch.where(mag > tiny, lowres / mag.clamp_min(torch.finfo(torch.float64).tiny), 1.0 + 0j)
    return (s.to(torch.complex128) * phase).to(torch.complex64)


__all__ = ["espirit_maps", "lowres_combined_image", "phase_normalized"]


def calibration_width(mask, largest: int = 24) -> int:
    """Side of the largest fully sampled square at the k-space centre of a bool ``(H, W)`` mask (centred
    layout, DC at ``(H // 2, W // 2)``), capped at ``largest``: the ``calib_width`` that
    :func:`espirit_maps` may use. 0 when the centre itself is not sampled."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {m.shape}")
    h, w = m.shape
    best = 0
    for n in range(1, min(h, w, largest) + 1):
        r0, c0 = h // 2 - n // 2, w // 2 - n // 2
        if not m[r0:r0 + n, c0:c0 + n].all():
            break
        best = n
    return best
