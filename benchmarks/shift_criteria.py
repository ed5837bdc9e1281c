"""Issue 17's done-when checks on a `wavepatch bench --suite shift` run, per image (not per mean):

    python benchmarks/shift_criteria.py benchmarks/results/shift_auto_steps/results.csv

For every learned column with selection ("... auto"): its worst difference to ADMM-TV over the images of every
setting (goal: no worse than -0.5 dB on any image), and on the in-distribution setting its difference to the
same prior without selection (goal: at most 0.3 dB lost), and its time against that run's (seconds per image,
mean ratio). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", type=Path)
    args = ap.parse_args()
    psnr: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)  # (setting, method) -> slice -> dB
    secs: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for row in csv.DictReader(args.csv.open()):
        psnr[(row["setting"], row["method"])][row["slice"]] = float(row["psnr"])
        secs[(row["setting"], row["method"])][row["slice"]] = float(row["seconds"])
    settings = list(dict.fromkeys(s for s, _ in psnr))
    autos = sorted({m for _, m in psnr if m.endswith(" auto") and m != "admm-tv auto"})
    lines = ["| setting | images | " + " | ".join(f"{m}: worst / mean vs ADMM-TV" for m in autos)
             + " | " + " | ".join(f"{m}: worst / mean vs without selection" for m in autos)
             + " | " + " | ".join(f"{m}: time vs without" for m in autos) + " |",
             "|---|---|" + "---|" * (3 * len(autos))]
    for s in settings:
        admm = psnr.get((s, "admm-tv"), {})
        cells_admm, cells_fast, cells_time = [], [], []
        for m in autos:
            got = psnr.get((s, m), {})
            fast = psnr.get((s, m[: -len(" auto")]), {})
            d = [got[k] - admm[k] for k in got if k in admm]
            f = [got[k] - fast[k] for k in got if k in fast]
            cells_admm.append(f"{min(d):+.2f} / {sum(d) / len(d):+.2f}" if d else "-")
            cells_fast.append(f"{min(f):+.2f} / {sum(f) / len(f):+.2f}" if f else "-")
            t_auto, t_fast = secs.get((s, m), {}), secs.get((s, m[: -len(" auto")]), {})
            r = [t_auto[k] / t_fast[k] for k in t_auto if k in t_fast]
            cells_time.append(f"{sum(r) / len(r):.1f}x" if r else "-")
        n = len(admm)
        lines.append(f"| {s} | {n} | " + " | ".join(cells_admm) + " | " + " | ".join(cells_fast) + " | "
                     + " | ".join(cells_time) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
