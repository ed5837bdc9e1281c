"""PaDIS fast mode on MRI: the warm start's first noise level, swept on TRAINING slices of the real MRI data.

    python benchmarks/tune_fast_mri.py --prior models/mri_patch256.safetensors --out benchmarks/results/tune_fast_mri.md

Three glioma-patient slices of ``../shared/data/mri_brain/train`` (never a test patient), 256 px, simulated
single-coil x4 and x8 Gaussian-mask MRI (mask and noise seed = slice index), PaDIS fast with the given prior at
each ``sigma_start`` (the other parameters at their defaults). Prints mean PSNR per (acceleration, value) and the
mean over both accelerations, and the ADMM-TV warm start for reference.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from wavepatch.bench import load_slices
from wavepatch.io.atomic import atomic_write_bytes
from wavepatch.run import run_reconstruction
from wavepatch.tasks import task_options

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "mri_brain" / "train"
SLICES = ("1900.jpg", "2300.jpg", "2700.jpg")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prior", required=True)
    ap.add_argument("--values", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    ap.add_argument("--accels", type=float, nargs="+", default=[4.0, 8.0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    imgs = [load_slices(TRAIN / f, 256)[0][1] for f in SLICES]
    table = {}
    for accel in args.accels:
        opts = task_options("mri", accel=accel, mask="gaussian")
        table[(accel, "admm-tv")] = np.mean([run_reconstruction(img, "mri", opts, "admm-tv", seed=k).metrics["psnr"]
                                             for k, img in enumerate(imgs)])
        for v in args.values:
            table[(accel, v)] = np.mean([run_reconstruction(img, "mri", opts, "padis", {"sigma_start": v}, seed=k,
                                                            prior=args.prior, fast=True).metrics["psnr"]
                                         for k, img in enumerate(imgs)])
            print(f"x{accel:g} sigma_start {v:g}: {table[(accel, v)]:.2f} dB", flush=True)
    lines = ["| sigma_start | " + " | ".join(f"x{a:g}" for a in args.accels) + " | mean |",
             "|---|" + "---|" * (len(args.accels) + 1)]
    for v in ["admm-tv", *args.values]:
        vals = [table[(a, v)] for a in args.accels]
        lines.append(f"| {v} | " + " | ".join(f"{x:.2f}" for x in vals) + f" | {np.mean(vals):.2f} |")
    md = "\n".join(lines) + "\n"
    print(md)
    if args.out:
        atomic_write_bytes(args.out, md.encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
