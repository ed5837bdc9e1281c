"""Which hold-out criterion picks the fast mode's start level sigma_start well? On TRAINING slices only.

    python benchmarks/auto_criteria.py --out benchmarks/results/auto_criteria

``--auto`` for the learned fast mode (wavepatch.selection) reconstructs from 80 % of the measurement for each
candidate sigma_start and scores the held-out 20 %. It tends to pick small values, also where the prior gains
several dB (docs/results.md section 17.3). Candidate explanation: a reconstruction with a larger sigma_start is
closer to a posterior *sample*, whose error in the directions the kept data do not determine is the posterior
mean's error plus the posterior variance; the held-out rows measure mostly those directions. Criteria compared,
each from the same fits:

- ``ramp``: the current score (ramp-weighted CT projections, plain k-space);
- ``plain``: unweighted residual (CT projections as they are);
- ``debiased``: ramp score of seed 0 minus half the held-out distance between the fits of seeds 0 and 1 (an
  unbiased estimate of the held-out error of the posterior mean: E||P(x1 - x2)||^2 = 2 tr Cov_P).

For each case the table gives each criterion's choice and its PSNR on the full measurement against the oracle
(best candidate by ground truth). Cases: 20-view CT with the CT and with the MRI patch prior (the second a
distribution shift), MRI x4 with the MRI prior; CT patient A0001 and glioma training slices.

``--zero`` adds the candidate sigma_start = 0 (no prior step: the ADMM-TV warm start itself) and records the PSNR
of every fit on the kept 80 % (``psnr_split``: what the held-out score should rank); ``--cross`` adds the CT
prior on the MRI slices (a second shift case); ``--more`` uses four CT and three MRI training slices; ``--seeds 1``
skips the second fit (and the debiased criterion); ``--fraction`` holds out another share of the views or lines;
``--full-from`` reuses an earlier run's full-measurement PSNRs.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from wavepatch.bench import load_slices
from wavepatch.io.atomic import atomic_write_bytes
from wavepatch.learned import default_prior
from wavepatch.metrics import image_metrics
from wavepatch.run import simulate_measurement, solve
from wavepatch.selection import FAST_AUTO, HOLDOUT_FRACTION, split_task
from wavepatch.tasks import task_options

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CT = [SHARED / "ct" / "train" / f for f in ("A0001_B_020.dcm", "A0001_B_045.dcm")]
MRI = [SHARED / "mri_brain" / "train" / f for f in ("1841.jpg", "2100.jpg")]
CT_MORE = CT + [SHARED / "ct" / "train" / f for f in ("A0001_B_010.dcm", "A0001_B_060.dcm")]
MRI_MORE = MRI + [SHARED / "mri_brain" / "train" / "2500.jpg"]


def cases(more: bool, cross: bool) -> list:
    """(task, options, slices, the prior's modality)."""
    ct, mri = (CT_MORE, MRI_MORE) if more else (CT, MRI)
    out = [("ct-parallel", {"views": 20}, ct, "ct"), ("ct-parallel", {"views": 20}, ct, "mri"),
           ("mri", {"accel": 4.0}, mri, "mri")]
    if cross:
        out.append(("mri", {"accel": 4.0}, mri, "ct"))
    return out


def spread(split, a, b) -> float:
    """Held-out distance between two estimates in the split's own norm: ``Split.score`` against zero data."""
    return replace(split, held_y=torch.zeros_like(split.held_y)).score(a - b)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/auto_criteria"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--zero", action="store_true", help="add sigma_start = 0 (the warm start) and psnr_split")
    ap.add_argument("--cross", action="store_true", help="add the CT prior on the MRI slices")
    ap.add_argument("--more", action="store_true", help="four CT and three MRI training slices")
    ap.add_argument("--seeds", type=int, default=2, choices=(1, 2))
    ap.add_argument("--fraction", type=float, default=HOLDOUT_FRACTION, help="held-out fraction of the views/lines")
    ap.add_argument("--only", choices=("ct", "mri"), default=None, help="only the CT or only the MRI cases")
    ap.add_argument("--full-from", type=Path, default=None,
                    help="rows.json of an earlier run: take the full-measurement PSNRs from it (same cases)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    values = ([0.0] if args.zero else []) + [v for v in FAST_AUTO[1] if v > 0]
    rows = []
    earlier = {}
    if args.full_from:
        earlier = {(r["task"], r["prior"], r["slice"], r["sigma_start"]): r["psnr"]
                   for r in json.loads(args.full_from.read_text())}

    def fit(task, y, v, seed, prior, truth=None):
        if v == 0:  # no prior step: the fast mode's warm start (ADMM-TV at the task's defaults)
            return solve(task, y, "admm-tv", {}, truth=truth)
        return solve(task, y, "padis", {"sigma_start": v}, seed=seed, prior=prior, fast=True, truth=truth)

    for task_name, opts, files, prior_modality in cases(args.more, args.cross):
        if args.only and not task_name.startswith(args.only):
            continue
        prior = default_prior("mri" if prior_modality == "mri" else "ct-parallel", "patch")
        for f in files:
            img = load_slices(f, args.size)[0][1]
            task, x, y = simulate_measurement(img, task_name, task_options(task_name, **opts))
            split = split_task(task, y, args.fraction)
            for v in values:
                fits = [fit(split.task, split.y, v, s, prior).recon for s in range(args.seeds)]
                ramp, plain = split.score(fits[0]), replace(split, ramp=False).score(fits[0])
                var2 = spread(split, fits[0], fits[-1])
                key = (task_name, prior_modality, f.name, v)
                full_psnr = earlier[key] if key in earlier else fit(task, y, v, 0, prior, truth=x).metrics["psnr"]
                row = {"task": task_name, "prior": prior_modality, "slice": f.name, "sigma_start": v, "ramp": ramp,
                       "plain": plain, "debiased": ramp - var2 / 2, "psnr": full_psnr,
                       "psnr_split": float(image_metrics(fits[0], x)["psnr"])}
                rows.append(row)
                print(row, flush=True)
                atomic_write_bytes(args.out / "rows.json", json.dumps(rows, indent=1).encode())
    crits = ("ramp", "plain", "debiased") if args.seeds == 2 else ("ramp", "plain")
    lines = ["| task | prior | slice | oracle sigma (PSNR) | " + " | ".join(f"{c} picks" for c in crits)
             + " | best on the kept part |", "|---|---|---|---|" + "---|" * (len(crits) + 1)]
    keys = sorted({(r["task"], r["prior"], r["slice"]) for r in rows})
    for key in keys:
        per = [r for r in rows if (r["task"], r["prior"], r["slice"]) == key]
        best = max(per, key=lambda r: r["psnr"])
        cells = []
        for crit in crits:
            pick = min(per, key=lambda r: r[crit])
            cells.append(f"{pick['sigma_start']:g} ({pick['psnr'] - best['psnr']:+.2f} dB)")
        kept = max(per, key=lambda r: r["psnr_split"])
        cells.append(f"{kept['sigma_start']:g} ({kept['psnr'] - best['psnr']:+.2f} dB)")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {best['sigma_start']:g} ({best['psnr']:.2f}) | "
                     + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    atomic_write_bytes(args.out / "summary.md", md.encode())
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
