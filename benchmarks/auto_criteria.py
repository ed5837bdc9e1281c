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
``--resample N`` makes every slice the shift suite's "N px upsampled" image; ``--full-from`` reuses an earlier
run's full-measurement PSNRs; ``--cand-steps`` fits the kept part with fewer noise
levels than the final reconstruction (does a cheaper fit rank the candidates as the full one does?).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from wavepatch.bench import load_slices
from wavepatch.io import resize_square
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


def summary(rows: list[dict], crits: tuple[str, ...], candidates: list[float] | None = None) -> str:
    """Markdown table: per case the oracle (best full-measurement PSNR over all fitted values), each criterion's
    choice among ``candidates`` (default: all fitted values) and its PSNR against the oracle; a last line with
    the mean and the worst difference of each criterion, and lines against sigma_start 0.1 (the default) and 0
    (its ADMM-TV warm start) where those were fitted."""
    lines = ["| task | prior | slice | oracle sigma (PSNR) | " + " | ".join(f"{c} picks" for c in crits)
             + " | best on the kept part |", "|---|---|---|---|" + "---|" * (len(crits) + 1)]
    keys = sorted({(r["task"], r["prior"], r["slice"]) for r in rows})
    diffs: dict[str, list[float]] = {c: [] for c in (*crits, "kept")}
    refs: dict[float, dict[str, list[float]]] = {v: {c: [] for c in diffs} for v in (0.1, 0.0)}
    for key in keys:
        per = [r for r in rows if (r["task"], r["prior"], r["slice"]) == key]
        best = max(per, key=lambda r: r["psnr"])
        among = [r for r in per if candidates is None or r["sigma_start"] in candidates]
        cells = []
        for crit, pick in [(c, min(among, key=lambda r, c=c: r[c])) for c in crits] + \
                [("kept", max(among, key=lambda r: r["psnr_split"]))]:
            diffs[crit].append(pick["psnr"] - best["psnr"])
            for v, per_crit in refs.items():
                ref = [r["psnr"] for r in per if r["sigma_start"] == v]
                if ref:
                    per_crit[crit].append(pick["psnr"] - ref[0])
            cells.append(f"{pick['sigma_start']:g} ({pick['psnr'] - best['psnr']:+.2f} dB)")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {best['sigma_start']:g} ({best['psnr']:.2f}) | "
                     + " | ".join(cells) + " |")
    lines.append("| mean / worst against the oracle | | | | " + " | ".join(
        f"{sum(d) / len(d):+.3f} / {min(d):+.2f}" for d in diffs.values()) + " |")
    for v, per_crit in refs.items():
        if all(len(d) == len(keys) for d in per_crit.values()):
            lines.append(f"| mean / worst against sigma_start {v:g} | | | | " + " | ".join(
                f"{sum(d) / len(d):+.3f} / {min(d):+.2f}" for d in per_crit.values()) + " |")
    return "\n".join(lines) + "\n"


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
    ap.add_argument("--cand-steps", type=int, default=None,
                    help="noise levels of the fits on the kept part (default: the fast mode's own)")
    ap.add_argument("--full-from", type=Path, default=None,
                    help="rows.json of an earlier run: take the full-measurement PSNRs from it (same cases)")
    ap.add_argument("--candidates", type=str, default=None,
                    help="comma-separated sigma_start values to fit (default: FAST_AUTO's); with --summarise, the "
                         "subset the criteria choose from")
    ap.add_argument("--resample", type=int, default=None,
                    help="reduce each slice to N x N and bring it back (the shift suite's 'N px upsampled')")
    ap.add_argument("--summarise", type=Path, default=None,
                    help="rows.json of an earlier run: only print its table (choices among --candidates)")
    args = ap.parse_args()
    chosen = [float(v) for v in args.candidates.split(",")] if args.candidates else None
    if args.summarise:
        rows = json.loads(args.summarise.read_text())
        two_seeds = any(r["debiased"] != r["ramp"] for r in rows)
        print(summary(rows, ("ramp", "plain", "debiased") if two_seeds else ("ramp", "plain"), chosen))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    values = chosen or (([0.0] if args.zero else []) + [v for v in FAST_AUTO[1] if v > 0])
    rows = []
    earlier = {}
    if args.full_from:
        earlier = {(r["task"], r["prior"], r["slice"], r["sigma_start"]): r["psnr"]
                   for r in json.loads(args.full_from.read_text())}

    def fit(task, y, v, seed, prior, truth=None, steps=None):
        if v == 0:  # no prior step: the fast mode's warm start (ADMM-TV at the task's defaults)
            return solve(task, y, "admm-tv", {}, truth=truth)
        extra = {"steps": steps} if steps else {}
        return solve(task, y, "padis", {"sigma_start": v, **extra}, seed=seed, prior=prior, fast=True, truth=truth)

    for task_name, opts, files, prior_modality in cases(args.more, args.cross):
        if args.only and not task_name.startswith(args.only):
            continue
        prior = default_prior("mri" if prior_modality == "mri" else "ct-parallel", "patch")
        for f in files:
            img = load_slices(f, args.size)[0][1]
            if args.resample:  # as bench's resampled settings: antialiased bilinear down and up, clipped
                img = np.clip(resize_square(resize_square(img, args.resample), args.size), 0.0, 1.0)
            task, x, y = simulate_measurement(img, task_name, task_options(task_name, **opts))
            split = split_task(task, y, args.fraction)
            for v in values:
                fits = [fit(split.task, split.y, v, s, prior, steps=args.cand_steps).recon for s in range(args.seeds)]
                ramp, plain = split.score(fits[0]), replace(split, ramp=False).score(fits[0])
                var2 = spread(split, fits[0], fits[-1])
                name = f.name + (f"@{args.resample}" if args.resample else "")
                key = (task_name, prior_modality, name, v)
                full_psnr = earlier[key] if key in earlier else fit(task, y, v, 0, prior, truth=x).metrics["psnr"]
                row = {"task": task_name, "prior": prior_modality, "slice": name, "sigma_start": v, "ramp": ramp,
                       "plain": plain, "debiased": ramp - var2 / 2, "psnr": full_psnr,
                       "psnr_split": float(image_metrics(fits[0], x)["psnr"])}
                rows.append(row)
                print(row, flush=True)
                atomic_write_bytes(args.out / "rows.json", json.dumps(rows, indent=1).encode())
    crits = ("ramp", "plain", "debiased") if args.seeds == 2 else ("ramp", "plain")
    md = summary(rows, crits)
    atomic_write_bytes(args.out / "summary.md", md.encode())
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
