"""Wu et al.'s sampler (``--method wavelet-langevin``) on low-dose CT: its SART data step against the MAP data step
(``--param data=map``), on training slices of the prior's patient (docs/results.md section 18.2).

    python benchmarks/wu_data_step.py --prior runs/wu_ct256/prior.safetensors      # 2 slices x 2 doses x 2 steps

Prints PSNR and seconds per (dose, slice, data step) and the mean per dose. Seeds 100 + k as the tuning scripts.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from wavepatch.bench import load_slices
from wavepatch.metrics import image_metrics
from wavepatch.run import simulate_measurement, solve
from wavepatch.tasks import TaskOptions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", required=True, help="a score prior trained on low-dose scans (wavepatch train ...)")
    ap.add_argument("--slices", nargs="+", default=["../shared/data/ct/train/A0001_B_020.dcm",
                                                    "../shared/data/ct/train/A0001_B_045.dcm"])
    ap.add_argument("--doses", type=float, nargs="+", default=[1e4, 2500])
    ap.add_argument("--steps", nargs="+", default=["sart", "map"], help="data steps to compare")
    args = ap.parse_args()
    imgs = [load_slices(f, 256)[0] for f in args.slices]
    rows = []
    for dose in args.doses:
        for k, (name, img) in enumerate(imgs):
            task, x, y = simulate_measurement(img, "ct-lowdose", TaskOptions(dose=dose), seed=100 + k)
            for data in args.steps:
                t = time.perf_counter()
                rec = solve(task, y, "wavelet-langevin", {"data": data}, prior=args.prior, truth=x).recon
                rows.append((dose, data, float(image_metrics(rec, x)["psnr"]), time.perf_counter() - t))
                print(f"I0={dose:g} {name} {data}: {rows[-1][2]:.2f} dB, {rows[-1][3]:.1f} s", flush=True)
    for dose in args.doses:
        for data in args.steps:
            print(f"I0={dose:g} {data}: mean {np.mean([r[2] for r in rows if r[:2] == (dose, data)]):.2f} dB")


if __name__ == "__main__":
    main()
