"""How well --auto (hold-out parameter selection, wavepatch.selection) chooses, on TRAINING slices.

    python benchmarks/auto_selection.py --out benchmarks/results/auto_selection
    python benchmarks/auto_selection.py --learned --out benchmarks/results/auto_selection_learned

For each training slice (CT patient A0001; MRI glioma patients of mri_brain/train), task and method: the PSNR at
the hand-set default, with --auto (chosen without ground truth), and the best candidate of the same grid by
ground truth (the oracle, which no user has). ``--learned`` runs PaDIS fast with the bundled prior of the task
instead of the classical methods (sigma_start selection; about 5x a fast-mode run per slice). Prints a markdown
table and writes rows.csv / summary.md into --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from wavepatch.bench import load_slices
from wavepatch.io.atomic import atomic_write_bytes
from wavepatch.run import simulate_measurement, solve
from wavepatch.selection import select_and_solve
from wavepatch.tasks import task_options

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CT_TRAIN = [SHARED / "ct" / "train" / f for f in ("A0001_B_020.dcm", "A0001_B_045.dcm")]
MRI_TRAIN = [SHARED / "mri_brain" / "train" / f for f in ("1841.jpg", "2100.jpg", "2500.jpg")]
SETTINGS = [("ct-parallel", {"views": 20}, CT_TRAIN), ("ct-lowdose", {"dose": 1e4}, CT_TRAIN),
            ("mri", {"accel": 4.0}, MRI_TRAIN), ("mri", {"accel": 8.0}, MRI_TRAIN)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/auto_selection"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--learned", action="store_true")
    args = ap.parse_args()
    methods = [("padis", True)] if args.learned else [("admm-tv", False), ("l1-wavelet", False)]
    rows = []
    for task_name, opts, files in SETTINGS:
        for f in files:
            if not f.exists():
                raise SystemExit(f"missing training slice {f}")
            img = load_slices(f, args.size)[0][1]
            task, x, y = simulate_measurement(img, task_name, task_options(task_name, **opts))
            for method, fast in methods:
                default = solve(task, y, method, fast=fast, truth=x)
                auto, rep = select_and_solve(task, y, method, fast=fast, truth=x)
                grid = [solve(task, y, method, {rep["param"]: v}, fast=fast, truth=x).metrics["psnr"]
                        for v in rep["candidates"]]
                row = {"task": task_name + "".join(f" {k}={v:g}" for k, v in opts.items()), "slice": f.name,
                       "method": method + (" fast" if fast else ""), "param": rep["param"],
                       "default": default.metrics["psnr"], "auto": auto.metrics["psnr"], "oracle": max(grid),
                       "chosen": rep["chosen"], "oracle_value": rep["candidates"][int(np.argmax(grid))],
                       "cost": (rep["selection_seconds"] + auto.seconds) / max(default.seconds, 1e-9)}
                rows.append(row)
                print(row, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    buf = [",".join(rows[0])] + [",".join(str(v) for v in r.values()) for r in rows]
    atomic_write_bytes(args.out / "rows.csv", ("\n".join(buf) + "\n").encode())
    lines = ["| task | method | slices | default (dB) | --auto (dB) | auto - default | worst auto - default | "
             "oracle (dB) | time vs default |", "|---|---|---|---|---|---|---|---|---|"]
    for key in dict.fromkeys((r["task"], r["method"]) for r in rows):
        sel = [r for r in rows if (r["task"], r["method"]) == key]
        d = np.array([r["default"] for r in sel])
        a = np.array([r["auto"] for r in sel])
        o = np.array([r["oracle"] for r in sel])
        c = np.mean([r["cost"] for r in sel])
        lines.append(f"| {key[0]} | {key[1]} | {len(sel)} | {d.mean():.2f} | {a.mean():.2f} | {(a - d).mean():+.2f} | "
                     f"{(a - d).min():+.2f} | {o.mean():.2f} | {c:.1f}x |")
    md = "\n".join(lines) + "\n"
    atomic_write_bytes(args.out / "summary.md", md.encode())
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
