"""How the regularisation weight of ADMM-TV and L1-wavelet should grow with the measurement noise (MRI).

The per-task ``lam`` defaults were chosen on noiseless simulations; measured k-space is noisy. This sweeps
``lam = c * sigma`` on simulated single-coil x4 Gaussian-mask MRI of three TRAINING slices of
``data/mri_brain/train`` at 160 px, for noise std sigma (per complex k-space entry) 0.03 and 0.07, and prints
the mean PSNR. It chose ``methods.LAM_PER_NOISE`` (c = 0.3). Run: ``python benchmarks/tune_noise_lam.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wavepatch.io import normalize_volume, read_image, resize_square
from wavepatch.run import run_reconstruction
from wavepatch.tasks import task_options

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "mri_brain" / "train"
SLICES = ("1841.jpg", "2100.jpg", "2500.jpg")


def main() -> int:
    imgs = [resize_square(normalize_volume(read_image(TRAIN / f), None)[0][0], 160) for f in SLICES]
    print("| method | sigma | c | lam | mean PSNR (dB) | zero-filled |\n|---|---|---|---|---|---|")
    for method in ("admm-tv", "l1-wavelet"):
        for sigma in (0.03, 0.07):
            for c in (0.05, 0.1, 0.2, 0.4, 0.8):
                runs = [run_reconstruction(img, "mri", task_options("mri", noise=sigma), method,
                                           {"lam": c * sigma}, seed=0) for img in imgs]
                psnr = np.mean([r.metrics["psnr"] for r in runs])
                zf = np.mean([r.baseline_metrics["psnr"] for r in runs])
                print(f"| {method} | {sigma:g} | {c:g} | {c * sigma:.4g} | {psnr:.2f} | {zf:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
