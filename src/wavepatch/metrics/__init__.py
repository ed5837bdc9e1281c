"""Metrics: how good a result is.

``image`` scores a reconstruction against its reference (PSNR, SSIM, NRMSE); its names are re-exported here, so
``from wavepatch.metrics import image_metrics, psnr, ssim`` works. ``generation`` compares a set of generated
images with real ones (sliced Wasserstein, histogram and spectrum distances); import it as
``wavepatch.metrics.generation`` (it needs scipy).
"""

from wavepatch.metrics.image import (
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_TRUNCATE,
    gaussian_window,
    image_metrics,
    mse,
    nrmse,
    psnr,
    ssim,
)

__all__ = [
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA",
    "SSIM_TRUNCATE",
    "gaussian_window",
    "image_metrics",
    "mse",
    "nrmse",
    "psnr",
    "ssim",
]
