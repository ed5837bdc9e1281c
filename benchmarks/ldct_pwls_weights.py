"""PWLS weights of low-dose CT and the CT-number bias they cause (issue 22): ADMM-TV on ``ct-lowdose`` with the
weights from each bin's own count (``weight_box`` 1) and from the post-log data averaged over k x k (views,
bins) boxes (``wavepatch.fidelity.PoissonFidelity``), on training slices, several noise draws each.

A weight that depends on its own bin's noise biases the weighted fit: a count that fluctuated up gives a low
post-log value and a high weight. The mean error per tissue region (``wavepatch.metrics.hu``) over slices and
draws shows the bias; PSNR what the smoothing costs.

    python benchmarks/ldct_pwls_weights.py --data ../shared/data/ct/train/A0001_B_*.dcm --doses 2500
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from wavepatch.bench import load_slices
from wavepatch.io import unit_to_hu
from wavepatch.metrics.hu import MIN_ROI_PIXELS, TISSUES, tissue_rois
from wavepatch.run import simulate_measurement, solve
from wavepatch.tasks import TaskOptions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--doses", type=float, nargs="+", default=[2.5e3])
    ap.add_argument("--boxes", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--method", default="admm-tv")
    args = ap.parse_args()
    imgs = load_slices(args.data if len(args.data) > 1 else args.data[0], 256)
    picks = np.linspace(0, len(imgs) - 1, min(args.slices, len(imgs))).round().astype(int)
    res: dict = {}
    for dose in args.doses:
        for k in picks:
            name, img = imgs[k]
            rois = tissue_rois(unit_to_hu(img))
            for draw in range(args.draws):
                task, x, y = simulate_measurement(img, "ct-lowdose", TaskOptions(dose=dose), seed=100 * int(k) + draw)
                for box in args.boxes:
                    t0 = time.perf_counter()
                    run = solve(dataclasses.replace(task, noise=dataclasses.replace(task.noise, weight_box=box)),
                                y, args.method, truth=x)
                    err = run.recon[0, 0].numpy() - img
                    for t, r in rois.items():
                        if r.sum() >= MIN_ROI_PIXELS:
                            res.setdefault((dose, box, t), []).append(2000.0 * float(err[r].mean()))
                    res.setdefault((dose, box, "psnr"), []).append(run.metrics["psnr"])
                    print(f"I0 {dose:g} {name} draw {draw} box {box}: {run.metrics['psnr']:.2f} dB, "
                          f"{time.perf_counter() - t0:.0f} s", flush=True)
    print(f"\n{len(picks)} slices x {args.draws} draws of {args.data[0]}; {args.method}; mean error per tissue (HU)\n")
    print("| I0 | weight box | PSNR (dB) | " + " | ".join(TISSUES) + " |")
    print("|---|---|---|" + "---|" * len(TISSUES))
    for dose in args.doses:
        for box in args.boxes:
            cells = [f"{np.mean(v):+.1f}" if (v := res.get((dose, box, t))) else "–" for t in TISSUES]
            print(f"| {dose:g} | {box} | {np.mean(res[(dose, box, 'psnr')]):.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
