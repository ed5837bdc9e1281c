"""Choose the inter-slice coupling weight of learned volume reconstruction on TRAINING data.

PaDIS fast (20-view parallel-beam CT, bundled CT patch prior) on slices --slices of the training patient's
volume (data/ct/train, its first series), resized to --size, with ``coupling="none"`` and ``"tv-z"`` at
several weights, and ``"iscs"`` / ``"tv-z+iscs"`` (noise shared across slices; ``--iscs``); prints volume,
axial, coronal and sagittal PSNR; ``--planes``: also ``"planes"``. Run: ``python benchmarks/tune_coupling.py
[--slices 27:37] [--size 128] [--lams 0.005 0.02] [--skip-none] [--iscs] [--planes]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wavepatch.cli_volume import parse_slices, slice_spacing_mm
from wavepatch.io import normalize_volume, read_image, resize_square
from wavepatch.io.readers import find_dicom_series
from wavepatch.tasks import task_options
from wavepatch.volume import reconstruct_volume, volume_metrics

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct" / "train"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", default="27:37")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--lams", type=float, nargs="+", default=[0.005, 0.02])
    ap.add_argument("--skip-none", action="store_true", help="only the tv-z rows")
    ap.add_argument("--iscs", action="store_true", help="also iscs, and tv-z+iscs at each --lams weight")
    ap.add_argument("--planes", action="store_true", help="also planes (axial / coronal / sagittal in turn)")
    args = ap.parse_args(argv)
    series = sorted(find_dicom_series(TRAIN))[0]  # the folder holds two series of the training patient
    vol = read_image(TRAIN, slices=parse_slices(args.slices), series=series)
    unit, _ = normalize_volume(vol)
    h = unit.shape[1]
    unit = resize_square(unit, args.size)
    z_weight = float(vol.spacing[0] * h / args.size / slice_spacing_mm(vol, TRAIN, 2))
    print(f"{unit.shape[0]} training slices, z_weight {z_weight:.3f}")
    print("| coupling | lam | PSNR | axial | coronal | sagittal | seconds |\n|---|---|---|---|---|---|---|")
    rows = ([] if args.skip_none else [("none", 0.0)]) + [("tv-z", lam) for lam in args.lams]
    if args.iscs:
        rows += [("iscs", 0.0)] + [("tv-z+iscs", lam) for lam in args.lams]
    if args.planes:
        rows += [("planes", 0.0)]
    for coupling, lam in rows:
        r = reconstruct_volume(unit, "ct-parallel", task_options("ct-parallel", views=20), "padis", fast=True,
                               z_weight=z_weight, coupling=coupling, coupling_lam=lam)
        m = volume_metrics(r.recon, unit)
        print(f"| {coupling} | {lam:g} | {m['psnr']:.2f} | {m['psnr_axial']:.2f} | {m['psnr_coronal']:.2f} | "
              f"{m['psnr_sagittal']:.2f} | {r.seconds:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
