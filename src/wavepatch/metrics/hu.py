"""CT-number (HU) fidelity of a CT reconstruction against its reference, where PSNR does not look.

Tissue regions come from thresholds on the **reference** image (HU), inside the body (the hole-filled largest
connected region above -500 HU, so lungs and bowel gas count as inside), each eroded by ``ROI_EROSION`` pixels so
edges and partial-volume pixels are left out:

    lung [-950, -600], fat [-150, -50], soft tissue (muscle, liver, blood) [20, 80], bone [300, inf) HU.

Per region: the mean signed error (bias, HU), its absolute value, and the standard deviation of the error (noise,
HU). Also: the Wasserstein-1 distance between the HU histograms inside the body (HU), and the noise power spectrum
(NPS) of the error over the central half of the image, radially averaged (HU^2 px^2 per frequency bin, frequency
in cycles per pixel; its integral over the 2-D frequency plane equals the error variance there).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

TISSUES = {"lung": (-950.0, -600.0), "fat": (-150.0, -50.0), "soft tissue": (20.0, 80.0), "bone": (300.0, np.inf)}
ROI_EROSION = 2  # pixels
MIN_ROI_PIXELS = 50  # regions smaller than this are reported but not averaged


def histogram_w1(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 distance between the empirical distributions of two samples of equal size (1-D arrays,
    same units): the mean absolute difference of the sorted samples, which equals the area between the two
    CDFs (``scipy.stats.wasserstein_distance``, tested; not imported here: scipy.stats costs 0.2 s of start-up)."""
    a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
    if a.shape != b.shape:
        raise ValueError(f"histogram_w1 needs samples of equal size, got {a.size} and {b.size}")
    return float(np.mean(np.abs(a.astype(np.float64) - b))) if a.size else 0.0


def body_mask(truth_hu: np.ndarray) -> np.ndarray:
    """(H, W) bool: the largest connected region above -500 HU, holes filled."""
    above = truth_hu > -500
    labels, n = ndimage.label(above)
    if n == 0:
        return np.zeros_like(above)
    largest = 1 + int(np.argmax(ndimage.sum(above, labels, index=range(1, n + 1))))
    return ndimage.binary_fill_holes(labels == largest)


def tissue_rois(truth_hu: np.ndarray) -> dict[str, np.ndarray]:
    """{tissue: (H, W) bool region} by the module's thresholds on the reference, inside the body, eroded."""
    body = body_mask(truth_hu)
    out = {}
    for name, (lo, hi) in TISSUES.items():
        region = body & (truth_hu >= lo) & (truth_hu <= hi)
        out[name] = ndimage.binary_erosion(region, iterations=ROI_EROSION) if ROI_EROSION else region
    return out


def noise_power_spectrum(error_hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in cycles/pixel, radially averaged NPS) of an error image over its central half (mean
    removed): NPS(f) = |DFT(e)|^2 / (number of pixels), so sum over the 2-D grid / pixels = the variance."""
    h, w = error_hu.shape
    crop = error_hu[h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2].astype(np.float64)
    crop = crop - crop.mean()
    n = crop.size
    power = np.abs(np.fft.fftshift(np.fft.fft2(crop))) ** 2 / n
    fy = np.fft.fftshift(np.fft.fftfreq(crop.shape[0]))
    fx = np.fft.fftshift(np.fft.fftfreq(crop.shape[1]))
    radius = np.hypot(*np.meshgrid(fy, fx, indexing="ij"))
    bins = np.linspace(0, 0.5, 26)
    idx = np.digitize(radius.ravel(), bins) - 1
    keep = idx < len(bins) - 1
    sums = np.bincount(idx[keep], power.ravel()[keep], minlength=len(bins) - 1)
    counts = np.bincount(idx[keep], minlength=len(bins) - 1)
    return (bins[:-1] + bins[1:]) / 2, sums / np.maximum(counts, 1)


def hu_metrics(recon_hu: np.ndarray, truth_hu: np.ndarray) -> dict:
    """HU fidelity figures of a reconstruction (H, W) against its reference (H, W), both in HU (module docstring)."""
    recon_hu, truth_hu = np.asarray(recon_hu, np.float64), np.asarray(truth_hu, np.float64)
    if recon_hu.shape != truth_hu.shape or recon_hu.ndim != 2:
        raise ValueError(f"need two (H, W) images of one shape, got {recon_hu.shape} and {truth_hu.shape}")
    error = recon_hu - truth_hu
    regions = {}
    for name, roi in tissue_rois(truth_hu).items():
        e = error[roi]
        regions[name] = {"pixels": int(roi.sum()),
                         "mean_error_hu": float(e.mean()) if e.size else None,
                         "noise_std_hu": float(e.std()) if e.size else None}
    used = [r for r in regions.values() if r["pixels"] >= MIN_ROI_PIXELS]
    body = body_mask(truth_hu)
    freq, nps = noise_power_spectrum(error)
    return {
        "rois": regions,
        "roi_mean_abs_error_hu": float(np.mean([abs(r["mean_error_hu"]) for r in used])) if used else None,
        "roi_noise_std_hu": float(np.mean([r["noise_std_hu"] for r in used])) if used else None,
        "histogram_w1_hu": histogram_w1(recon_hu[body], truth_hu[body]) if body.any() else None,
        "nps_frequency_cycles_per_px": freq.round(4).tolist(),
        "nps_hu2": nps.tolist(),
        "rules": {"tissues_hu": {k: list(v) for k, v in TISSUES.items()}, "erosion_px": ROI_EROSION,
                  "min_pixels": MIN_ROI_PIXELS},
    }
