"""Image-quality metrics on (B, C, H, W) tensors: PSNR, SSIM, NRMSE, each returned per batch item (B,).

SSIM is the Gaussian-window SSIM of Wang et al. (2004) as the literature reports it, i.e. exactly what
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=...)`` computes: K1 = 0.01, K2 = 0.03, an 11-tap Gaussian (sigma 1.5, truncated at 3.5 sigma),
population (co)variances, and the SSIM map averaged over pixels at least 5 pixels from the border. Note
that skimage's *default* call (7x7 uniform window, sample covariance) is another variant with other numbers.

Evaluation convention (PaDIS): metrics are computed on the windowed image in [0, 1] with data_range 1, after
clamping the reconstruction to that range; :func:`image_metrics` does exactly that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5


def _check_pair(x: Tensor, ref: Tensor) -> None:
    if x.shape != ref.shape or x.dim() != 4:
        shapes = f"{tuple(x.shape)} and {tuple(ref.shape)}"
        raise ValueError(f"expected two (B, C, H, W) tensors of equal shape, got {shapes}")


def mse(x: Tensor, ref: Tensor) -> Tensor:
    """Mean squared error over C, H, W -> (B,)."""
    _check_pair(x, ref)
    return (x - ref).pow(2).flatten(1).mean(dim=1)


def psnr(x: Tensor, ref: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio 10 log10(data_range^2 / MSE) in dB -> (B,).

    The MSE is taken over all channels and pixels (as skimage's ``peak_signal_noise_ratio``). Identical images
    give ``inf``.
    """
    err = mse(x, ref)
    # inf for err == 0 is the honest answer (skimage returns inf too); callers that average should know.
    return 10.0 * torch.log10(data_range**2 / err)


def nrmse(x: Tensor, ref: Tensor) -> Tensor:
    """Normalised root-mean-square error ||x - ref|| / ||ref|| per item -> (B,).

    Same as skimage's ``normalized_root_mse(ref, x)`` with its default ``normalization='euclidean'``.
    """
    _check_pair(x, ref)
    return (x - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)


def gaussian_window(
    sigma: float = SSIM_SIGMA,
    truncate: float = SSIM_TRUNCATE,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Normalised 1D Gaussian taps as scipy.ndimage builds them -> (2r+1,), r = int(truncate*sigma + 0.5)."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return (w / w.sum()).to(dtype=dtype, device=device)


def _filter_valid(img: Tensor, win: Tensor) -> Tensor:
    """Separable Gaussian filter of (N, 1, H, W) with 'valid' borders -> (N, 1, H-2r, W-2r).

    skimage filters with reflected borders and then discards the r outermost pixels, so the surviving values
    never see the border: 'valid' convolution reproduces them exactly without choosing a padding rule.
    """
    k = win.numel()
    img = F.conv2d(img, win.reshape(1, 1, k, 1))
    return F.conv2d(img, win.reshape(1, 1, 1, k))


def ssim(x: Tensor, ref: Tensor, data_range: float = 1.0) -> Tensor:
    """Gaussian-window SSIM (Wang et al. 2004) per item, channels averaged -> (B,).

    x, ref: (B, C, H, W) with H, W >= 11. Matches skimage's ``structural_similarity(x, ref,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range)`` (with
    ``channel_axis`` over C). Computed in the inputs' dtype.
    """
    _check_pair(x, ref)
    B, C, H, W = x.shape
    win = gaussian_window(dtype=x.dtype, device=x.device)
    if H < win.numel() or W < win.numel():
        raise ValueError(f"SSIM needs H, W >= {win.numel()}, got {H}x{W}")
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    a = x.reshape(B * C, 1, H, W)
    b = ref.reshape(B * C, 1, H, W)
    # One batched filter call for the five local moments.
    moments = _filter_valid(torch.cat([a, b, a * a, b * b, a * b]), win).chunk(5)
    ux, uy, uxx, uyy, uxy = moments
    vx = uxx - ux * ux
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
    s_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s_map.reshape(B, C, -1).mean(dim=2).mean(dim=1)


def image_metrics(x: Tensor, ref: Tensor, data_range: float = 1.0, clip: bool = True) -> dict[str, float]:
    """PSNR (dB) and SSIM of one image against its reference, as the PaDIS evaluation reports them.

    x, ref: one image, (H, W), (C, H, W) or (1, C, H, W), intensities in the windowed range [0, data_range].
    With ``clip`` the reconstruction x (not the reference) is clamped to [0, data_range] first.
    Returns ``{"psnr": float, "ssim": float}``; PSNR is ``inf`` for a perfect reconstruction.
    """
    x4, ref4 = (_as_single_batch(t) for t in (x, ref))
    if clip:
        x4 = x4.clamp(0.0, data_range)
    return {"psnr": float(psnr(x4, ref4, data_range)[0]), "ssim": float(ssim(x4, ref4, data_range)[0])}


def _as_single_batch(t: Tensor) -> Tensor:
    if t.dim() == 2:
        return t[None, None]
    if t.dim() == 3:
        return t[None]
    if t.dim() == 4 and t.shape[0] == 1:
        return t
    raise ValueError(f"image_metrics takes one image (H, W), (C, H, W) or (1, C, H, W), got {tuple(t.shape)}")
