"""Which bundled CT prior at which image size? On TRAINING slices only.

    python benchmarks/prior_size.py --out benchmarks/results/prior_size

The bundled CT priors come in two training resolutions (``ct_patch128`` / ``ct_patch256``, ``ct_whole128`` /
``ct_whole256``; docs/models.md). 20-view parallel-beam CT of four slices of training patient A0001 at each
``--sizes`` value, the fast mode (ADMM-TV warm start, 50 levels from sigma 0.1, the hand-set default without
--auto): ``padis --fast`` with each patch prior and ``ddnm --fast`` with each whole-image prior. Prints a markdown
table of PSNR (mean and per slice) and writes it with the rows (rows.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wavepatch.bench import load_slices
from wavepatch.io.atomic import atomic_write_bytes
from wavepatch.resources import prior_path
from wavepatch.run import simulate_measurement, solve
from wavepatch.tasks import task_options

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SLICES = [SHARED / "ct" / "train" / f"A0001_B_{k:03d}.dcm" for k in (10, 20, 45, 60)]
PAIRS = {"padis": ("ct_patch128", "ct_patch256"), "ddnm": ("ct_whole128", "ct_whole256")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/prior_size"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        for f in SLICES:
            img = load_slices(f, size)[0][1]
            task, x, y = simulate_measurement(img, "ct-parallel", task_options("ct-parallel", views=20))
            for method, priors in PAIRS.items():
                for prior in priors:
                    res = solve(task, y, method, {}, prior=prior_path(prior), fast=True, truth=x)
                    rows.append({"size": size, "slice": f.name, "method": method, "prior": prior,
                                 "psnr": res.metrics["psnr"], "seconds": res.seconds})
                    print(rows[-1], flush=True)
                    atomic_write_bytes(args.out / "rows.json", json.dumps(rows, indent=1).encode())
    lines = ["| size | method | prior | PSNR mean (dB) | per slice |", "|---|---|---|---|---|"]
    for size in args.sizes:
        for method, priors in PAIRS.items():
            for prior in priors:
                got = [r["psnr"] for r in rows if (r["size"], r["method"], r["prior"]) == (size, method, prior)]
                lines.append(f"| {size} | {method} --fast | {prior} | {sum(got) / len(got):.2f} | "
                             + " / ".join(f"{p:.2f}" for p in got) + " |")
    md = "\n".join(lines) + "\n"
    atomic_write_bytes(args.out / "summary.md", md.encode())
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
