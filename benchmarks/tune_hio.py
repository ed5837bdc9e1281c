"""Choose HIO's defaults (iterations, shrink-wrap threshold) on TRAINING CT slices (phase retrieval, x2 oversampling,
noise std 0.01 on the magnitudes, 128²): mean PSNR after ambiguity alignment.
Run: ``python benchmarks/tune_hio.py [--size 128]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import wavepatch.physics.phase_retrieval as pr
from wavepatch.io import normalize_volume, read_image, resize_square
from wavepatch.metrics import psnr
from wavepatch.physics.noise import gaussian_noise

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct" / "train"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args(argv)
    files = sorted(TRAIN.glob("*.dcm"))
    slices = [files[i] for i in (39, 20, 100)]
    shrink = pr._shrinkwrap
    print("| shrink-wrap | threshold | HIO iterations | PSNR per slice | mean |\n|---|---|---|---|---|")
    for sw, threshold in ((False, None), (True, 0.04), (True, 0.1), (True, 0.2)):
        pr._shrinkwrap = (lambda g, box, s, t, thr=threshold: shrink(g, box, s, thr)) if sw else shrink
        for n_iter in (300, 1000):
            values = []
            for f in slices:
                unit, _ = normalize_volume(read_image(f))
                x = torch.from_numpy(resize_square(unit[0], args.size)).float()[None, None]
                op = pr.FourierMagnitude((1, args.size, args.size), 2.0)
                y = gaussian_noise(op.A(x), 0.01, torch.Generator().manual_seed(1))
                est = pr.hio(op, y, n_iter=n_iter, shrinkwrap=sw)
                values.append(float(psnr(pr.resolve_ambiguities(est, x, op), x)))
            print(f"| {sw} | {threshold} | {n_iter} | {' / '.join(f'{v:.2f}' for v in values)} | "
                  f"{sum(values) / len(values):.2f} |")
    pr._shrinkwrap = shrink
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
