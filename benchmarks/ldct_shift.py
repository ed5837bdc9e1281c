"""Where a low-dose CT translator shifts CT numbers (issue 22): by dose, by scale, and whether a low-pass guard
on its correction removes the shift.

For evenly spaced slices of a folder (256^2, the ``ct-lowdose`` task, one noise draw per slice and dose), the
correction c = G(x) - x that the translator G adds to the FBP image x is measured in the tissue regions of
``wavepatch.metrics.hu`` (thresholds on the truth):

- by dose: the mean of c per tissue at each I0 (a translator that shifts only noisy inputs reacts to the noise);
- by scale: the mean of L_k(c), c's wavelet low band of k levels (db3, k = 1..4, scales of 2^k px), i.e. how
  much of the shift a translator whose low band passed through at level k would have been denied;
- the guard: ``prior.ldct.hu_guard`` (x + c - gauss_s(c), the method's own code) for Gaussian widths s (px),
  PSNR and mean bias per tissue (choose s on training slices only).

    python benchmarks/ldct_shift.py --data ../shared/data/ct/train/A0001_B_*.dcm --guard   # training slices
    python benchmarks/ldct_shift.py --data ../shared/data/ct/test --by-dose --by-scale     # the test patient
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from wavepatch.bench import load_slices
from wavepatch.io import unit_to_hu
from wavepatch.metrics import image_metrics
from wavepatch.metrics.hu import MIN_ROI_PIXELS, TISSUES, tissue_rois
from wavepatch.prior.checkpoint import load_translator
from wavepatch.prior.ldct import denoise_image, hu_guard, wavelet_low_band
from wavepatch.resources import prior_path
from wavepatch.run import simulate_measurement
from wavepatch.tasks import TaskOptions


def tissue_means(err_unit: np.ndarray, rois: dict) -> dict:
    """Mean of an error (unit scale) in HU per tissue region with enough pixels."""
    return {t: 2000.0 * float(err_unit[r].mean()) for t, r in rois.items() if r.sum() >= MIN_ROI_PIXELS}


def average(rows: list[dict]) -> str:
    cells = []
    for t in TISSUES:
        vals = [r[t] for r in rows if t in r]
        cells.append(f"{np.mean(vals):+.1f} ({len(vals)})" if vals else "–")
    return " | ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--translator", default=str(prior_path("ldct_metric256")))
    ap.add_argument("--slices", type=int, default=10)
    ap.add_argument("--doses", type=float, nargs="+", default=[1e4, 2.5e3])
    ap.add_argument("--by-dose", action="store_true", help="also the correction at I0 = 2e5 and 1e9")
    ap.add_argument("--by-scale", action="store_true")
    ap.add_argument("--guard", action="store_true")
    args = ap.parse_args()
    translator, _, _ = load_translator(args.translator)
    imgs = load_slices(args.data if len(args.data) > 1 else args.data[0], 256)
    picks = np.linspace(0, len(imgs) - 1, min(args.slices, len(imgs))).round().astype(int)
    doses = list(args.doses) + ([2e5, 1e9] if args.by_dose else [])
    guards = (None, 0.0, 1.0, 2.0, 3.0)
    shift, scale, guard = {}, {}, {}
    for k in picks:
        name, img = imgs[k]
        rois = tissue_rois(unit_to_hu(img))
        for dose in doses:
            task, _, y = simulate_measurement(img, "ct-lowdose", TaskOptions(dose=dose), seed=int(k))
            fbp_t = task.baseline(y)
            out_t = denoise_image(translator, fbp_t)
            corr_t = out_t - fbp_t
            shift.setdefault(dose, []).append(tissue_means(corr_t[0, 0].numpy(), rois))
            if args.by_scale:
                for lv in (1, 2, 3, 4):
                    low = wavelet_low_band(corr_t, "db3", lv)[0, 0].numpy()
                    scale.setdefault((dose, lv), []).append(tissue_means(low, rois))
            if args.guard:
                for s in guards:
                    rec = (fbp_t if s is None else hu_guard(fbp_t, out_t, s))[0, 0].numpy()
                    rec = np.clip(rec, 0, 1)
                    psnr = image_metrics(torch.from_numpy(rec), torch.from_numpy(img))["psnr"]
                    guard.setdefault((dose, s), []).append((psnr, tissue_means(rec - img, rois)))
    print(f"{len(picks)} slices of {args.data[0]}; translator {args.translator}; mean HU (slices with the region)\n")
    print("| I0 | correction G(x) - x: " + " | ".join(TISSUES) + " |")
    print("|---|" + "---|" * len(TISSUES))
    for dose in doses:
        print(f"| {dose:g} | {average(shift[dose])} |")
    if args.by_scale:
        print("\n| I0 | part of the correction in L_k | " + " | ".join(TISSUES) + " |")
        print("|---|---|" + "---|" * len(TISSUES))
        for (dose, lv), rows in scale.items():
            print(f"| {dose:g} | k = {lv} ({2**lv} px) | {average(rows)} |")
    if args.guard:
        print("\n| I0 | reconstruction | PSNR (dB) | bias vs truth: " + " | ".join(TISSUES) + " |")
        print("|---|---|---|" + "---|" * len(TISSUES))
        for (dose, s), rows in guard.items():
            label = "FBP" if s is None else "translator" if s == 0 else f"guard s = {s:g} px"
            print(f"| {dose:g} | {label} | {np.mean([r[0] for r in rows]):.2f} | {average([r[1] for r in rows])} |")


if __name__ == "__main__":
    main()
