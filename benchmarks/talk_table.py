"""The talk's table (seed 002, PaDIS: "CT, 20 / 8 / 60 views, fan beam, deblurring, heavy deblurring,
super-resolution") beside wavepatch's bench rows of the same methods, and the ordering of the methods in each.

    python benchmarks/talk_table.py benchmarks/results/bench_talk_table/ct/results.csv \
        benchmarks/results/bench_talk_table/restoration/results.csv

Reads ``wavepatch bench`` results.csv files (any number; rows are averaged over their slices) and prints, per
setting, one markdown row per method: the talk's PSNR / SSIM (averaged over its test set, 1000 NFE for the
diffusion rows), wavepatch's PSNR / SSIM / NFE / seconds, and each method's rank (1 = best PSNR) in both.
Nothing is run here; the bench commands are in benchmarks/results/bench_talk_table/run.sh.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict

# The talk's numbers (seed 002, PaDIS slides: "Averages across all test images"), PSNR dB / SSIM; None: not reported.
TALK = {
    "CT, 20 views": {"Baseline": (24.93, 0.595), "ADMM-TV": (26.82, 0.724), "PnP-ADMM": (26.86, 0.607),
                     "PnP-RED": (27.99, 0.622), "Whole image diffusion": (32.84, 0.835),
                     "Langevin dynamics": (33.03, 0.846), "Predictor-corrector": (32.35, 0.820),
                     "VE-DDNM": (31.98, 0.861), "Patch averaging": (33.35, 0.850),
                     "Patch stitching": (32.87, 0.837), "PaDIS": (33.57, 0.854)},
    "CT, 8 views": {"Baseline": (21.39, 0.415), "ADMM-TV": (23.09, 0.555), "PnP-ADMM": (22.39, 0.489),
                    "PnP-RED": (23.08, 0.441), "Whole image diffusion": (25.74, 0.706),
                    "Langevin dynamics": (27.03, 0.689), "Predictor-corrector": (23.65, 0.546),
                    "VE-DDNM": (27.71, 0.759), "Patch averaging": (28.43, 0.765),
                    "Patch stitching": (26.71, 0.710), "PaDIS": (29.48, 0.767)},
    "Deblurring": {"Baseline": (24.54, 0.688), "ADMM-TV": (28.22, 0.792), "PnP-ADMM": (28.82, 0.818),
                   "PnP-RED": (29.91, 0.867), "Whole image diffusion": (30.19, 0.853),
                   "Langevin dynamics": (30.60, 0.867), "Predictor-corrector": (28.42, 0.724),
                   "Patch averaging": (29.41, 0.847), "Patch stitching": (29.69, 0.849), "PaDIS": (30.80, 0.870)},
    "Superresolution": {"Baseline": (25.86, 0.739), "ADMM-TV": (25.66, 0.745), "PnP-ADMM": (26.61, 0.785),
                        "PnP-RED": (26.36, 0.766), "Whole image diffusion": (29.17, 0.827),
                        "Langevin dynamics": (26.83, 0.744), "Predictor-corrector": (26.97, 0.685),
                        "VE-DDNM": (26.01, 0.727), "Patch averaging": (27.67, 0.802),
                        "Patch stitching": (27.50, 0.780), "PaDIS": (29.47, 0.846)},
    "CT, 60 views": {"Baseline": (25.89, 0.746), "ADMM-TV": (30.93, 0.833), "Whole image diffusion": (35.83, 0.894),
                     "PaDIS": (39.28, 0.941)},
    "CT, fan beam": {"Baseline": (20.07, 0.521), "ADMM-TV": (25.78, 0.719), "Whole image diffusion": (26.89, 0.835),
                     "PaDIS": (29.91, 0.932)},
    "Heavy deblurring": {"Baseline": (21.14, 0.569), "ADMM-TV": (26.03, 0.724),
                         "Whole image diffusion": (28.35, 0.808), "PaDIS": (28.91, 0.818)},
}
SETTINGS = {"ct-parallel 20 views": "CT, 20 views", "ct-parallel 8 views": "CT, 8 views",
            "ct-parallel 60 views": "CT, 60 views", "ct-fan 60 views": "CT, fan beam",
            "deblur gaussian": "Deblurring", "deblur heavy": "Heavy deblurring", "sr x4": "Superresolution"}
# wavepatch bench label -> the talk's row ("whole image diffusion" is the talk's DPS-type loop on a whole-image prior)
ROWS = {"baseline": "Baseline", "admm-tv": "ADMM-TV", "pnp-admm (learned)": "PnP-ADMM", "red (learned)": "PnP-RED",
        "dps (whole image)": "Whole image diffusion", "langevin": "Langevin dynamics", "pc": "Predictor-corrector",
        "ddnm": "VE-DDNM", "patch averaging": "Patch averaging", "patch stitching": "Patch stitching",
        "padis": "PaDIS"}


def read_rows(paths: list[str]) -> dict[str, dict[str, dict]]:
    """{setting: {method: mean psnr, ssim, seconds, nfe, slices}} over the rows of every results.csv."""
    acc: dict = defaultdict(lambda: defaultdict(list))
    for path in paths:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                acc[r["setting"]][r["method"]].append(r)
    out: dict = {}
    for setting, methods in acc.items():
        out[setting] = {}
        for method, rows in methods.items():
            n = len(rows)
            out[setting][method] = {"psnr": sum(float(r["psnr"]) for r in rows) / n,
                                    "ssim": sum(float(r["ssim"]) for r in rows) / n,
                                    "seconds": sum(float(r["seconds"]) for r in rows) / n,
                                    "nfe": int(float(rows[0]["nfe"] or 0)), "slices": n}
    return out


def ranks(values: dict[str, float]) -> dict[str, int]:
    """1 = the highest value."""
    order = sorted(values, key=values.get, reverse=True)
    return {k: i + 1 for i, k in enumerate(order)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+", help="wavepatch bench results.csv files")
    args = ap.parse_args()
    ours = read_rows(args.results)
    for setting, talk_name in SETTINGS.items():
        if setting not in ours:
            continue
        talk, mine = TALK[talk_name], ours[setting]
        shared = [m for m in mine if m in ROWS and ROWS[m] in talk]
        talk_rank = ranks({m: talk[ROWS[m]][0] for m in shared})
        our_rank = ranks({m: mine[m]["psnr"] for m in shared})
        print(f"\n#### {setting} (the talk: {talk_name})\n")
        print("| method | talk PSNR / SSIM | rank | wavepatch PSNR / SSIM | rank | NFE | s / image |")
        print("|---|---|---|---|---|---|---|")
        for m, r in mine.items():
            t = talk.get(ROWS.get(m, ""))
            tcell = f"{t[0]:.2f} / {t[1]:.3f}" if t else "–"
            print(f"| {m} | {tcell} | {talk_rank.get(m, '–')} | {r['psnr']:.2f} / {r['ssim']:.3f} | "
                  f"{our_rank.get(m, '–')} | {r['nfe'] or '–'} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
