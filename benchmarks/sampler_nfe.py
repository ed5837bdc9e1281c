"""PSNR versus NFE of every posterior sampler started from noise, at its registry defaults, on one slice.

    python benchmarks/sampler_nfe.py --input ../shared/data/ct/train/A0001_B_025.dcm \
        --out benchmarks/results/sampler_nfe_train
    python benchmarks/sampler_nfe.py --input data/ct/A0002_B40f_015.dcm --out benchmarks/results/sampler_nfe_test

20-view parallel-beam CT at 256^2 (noiseless, as the CLI). Budgets (``--nfe``, default 20 50 100 200) are turned
into each sampler's own count: levels for DPS, PiGDM, MCG and DDNM (mcg-gradient: MCG with the paper's gradient
step; dps-normalized: DPS with the paper's normalised step, its default before docs/results.md section 6.7);
levels x 5 Langevin iterations for the PaDIS loop (patch prior ct_patch256); levels x 3 + 1 for annealed Langevin;
2 x levels - 1 for predictor-corrector (the NFE column is what the sampler reports). Whole-image samplers use
ct_whole256. ADMM-TV at its defaults is the reference line. Choose defaults on a training slice; the test slice
only reports. Prints a markdown table, writes sampler_nfe.json and sampler_nfe.png; rows already in the JSON are
skipped (a stopped run continues).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from wavepatch.io import normalize_volume, read_image, resize_square  # noqa: E402
from wavepatch.io.atomic import atomic_write_bytes  # noqa: E402
from wavepatch.resources import prior_path  # noqa: E402
from wavepatch.run import run_reconstruction  # noqa: E402
from wavepatch.tasks import TaskOptions  # noqa: E402

WHOLE, PATCH = prior_path("ct_whole256"), prior_path("ct_patch256")


# the benchmark's variants of a registry method: (method, its overrides)
VARIANTS = {"mcg-gradient": ("mcg", {"guidance": "gradient"}), "dps-normalized": ("dps", {"step": "normalized"})}


def overrides(sampler: str, nfe: int) -> dict:
    """The sampler's own step parameters for a budget of ``nfe`` network evaluations (a variant's included)."""
    if sampler == "padis":
        return {"steps": max(1, nfe // 5)}
    if sampler == "langevin":
        return {"steps": max(1, (nfe - 1) // 3)}
    if sampler == "pc":
        return {"steps": max(2, (nfe + 1) // 2)}
    return {"steps": nfe, **VARIANTS.get(sampler, (sampler, {}))[1]}


SAMPLERS = ["dps", "dps-normalized", "pigdm", "mcg", "mcg-gradient", "ddnm", "langevin", "pc", "padis"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", default="benchmarks/results/sampler_nfe")
    ap.add_argument("--views", type=int, default=20)
    ap.add_argument("--nfe", type=int, nargs="+", default=[20, 50, 100, 200])
    ap.add_argument("--samplers", nargs="+", default=SAMPLERS, choices=SAMPLERS)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "sampler_nfe.json"
    data = json.loads(store.read_text()) if store.exists() else {"input": args.input, "rows": []}
    unit, _ = normalize_volume(read_image(args.input), None)
    img = resize_square(unit[unit.shape[0] // 2], 256)
    opts = TaskOptions(views=args.views)

    def save() -> None:
        atomic_write_bytes(store, json.dumps(data, indent=1).encode())

    if "admm_tv" not in data:
        data["admm_tv"] = run_reconstruction(img, "ct-parallel", opts, "admm-tv").metrics
        save()
    done = {(r["sampler"], r["budget"]) for r in data["rows"]}
    for sampler in args.samplers:
        for budget in args.nfe:
            if (sampler, budget) in done:
                continue
            ov = overrides(sampler, budget)
            method = VARIANTS.get(sampler, (sampler, {}))[0]
            r = run_reconstruction(img, "ct-parallel", opts, method, ov, prior=PATCH if sampler == "padis" else WHOLE)
            data["rows"].append({"sampler": sampler, "budget": budget, "nfe": r.nfe, "overrides": ov,
                                 "psnr": r.metrics["psnr"], "ssim": r.metrics["ssim"], "seconds": r.seconds})
            save()
            print(f"{sampler} {r.nfe} NFE: {r.metrics['psnr']:.2f} dB, {r.seconds:.0f} s", flush=True)
    admm = data["admm_tv"]["psnr"]
    print(f"\n{Path(args.input).name}, {args.views}-view CT, 256^2; ADMM-TV {admm:.2f} dB\n")
    budgets = sorted({r["budget"] for r in data["rows"]})  # every row measured so far, not only this run's
    print("| sampler | " + " | ".join(f"~{b} NFE" for b in budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=110)
    for sampler in [m for m in SAMPLERS if any(r["sampler"] == m for r in data["rows"])]:
        rows = sorted((r for r in data["rows"] if r["sampler"] == sampler), key=lambda r: r["nfe"])
        cells = {r["budget"]: f"{r['psnr']:.2f}" for r in rows}
        print(f"| {sampler} | " + " | ".join(cells.get(b, "–") for b in budgets) + " |")
        ax.plot([r["nfe"] for r in rows], [r["psnr"] for r in rows], "o-", label=sampler)
    ax.axhline(admm, color="gray", ls="--", label="ADMM-TV")
    ax.set_xscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{Path(args.input).name}, {args.views}-view CT, from noise", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "sampler_nfe.png")


if __name__ == "__main__":
    main()
