"""PSNR versus NFE of the learned-prior methods on one slice (20-view parallel-beam CT by default).

    python benchmarks/psnr_vs_nfe.py --input ../shared/data/ct/train/A0001_B_025.dcm --out benchmarks/results/nfe

Runs PnP-ADMM with the learned patch denoiser (NFE = iterations) and DDNM with the patch prior, warm-started
from ADMM-TV (NFE = levels), over a range of budgets; prints a table and saves psnr_vs_nfe.png. Use a training
slice to choose defaults, the test slice only to report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from wavepatch.io import normalize_volume, read_image, resize_square  # noqa: E402
from wavepatch.recon.run import run_reconstruction  # noqa: E402
from wavepatch.tasks import TaskOptions  # noqa: E402

PATCH = Path(__file__).resolve().parents[1] / "models" / "ct_patch256.safetensors"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", default="benchmarks/results/nfe")
    ap.add_argument("--views", type=int, default=20)
    ap.add_argument("--budgets", type=int, nargs="+", default=[5, 10, 20, 40])
    args = ap.parse_args()
    unit, _ = normalize_volume(read_image(args.input), None)
    img = resize_square(unit[unit.shape[0] // 2], 256)
    opts = TaskOptions(views=args.views)
    admm = run_reconstruction(img, "ct-parallel", opts, "admm-tv")
    curves = {"pnp-admm (learned)": [], "ddnm (patch, warm start)": []}
    for n in args.budgets:
        pnp = run_reconstruction(img, "ct-parallel", opts, "pnp-admm", {"denoiser": "learned", "n_iter": n})
        curves["pnp-admm (learned)"].append((n, pnp.metrics["psnr"], pnp.seconds))
        dd = run_reconstruction(img, "ct-parallel", opts, "ddnm", {"steps": n}, prior=PATCH, fast=True)
        curves["ddnm (patch, warm start)"].append((dd.nfe, dd.metrics["psnr"], dd.seconds))
    print(f"{Path(args.input).name}, {args.views} views; ADMM-TV {admm.metrics['psnr']:.2f} dB\n")
    print("| method | NFE | PSNR dB | seconds |\n|---|---|---|---|")
    for name, pts in curves.items():
        for nfe, p, s in pts:
            print(f"| {name} | {nfe} | {p:.2f} | {s:.1f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=110)
    for name, pts in curves.items():
        ax.plot([q[0] for q in pts], [q[1] for q in pts], "o-", label=name)
    ax.axhline(admm.metrics["psnr"], color="gray", ls="--", label="ADMM-TV")
    ax.set_xscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{Path(args.input).name}, {args.views}-view CT", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "psnr_vs_nfe.png")
    (out / "psnr_vs_nfe.json").write_text(json.dumps({"input": args.input, "admm_tv": admm.metrics,
                                                      "curves": curves}, indent=1))


if __name__ == "__main__":
    main()
