"""PSNR versus NFE of the learned-prior methods on one slice (20-view parallel-beam CT by default).

    python benchmarks/psnr_vs_nfe.py --input ../shared/data/ct/train/A0001_B_025.dcm --out benchmarks/results/nfe_train
    python benchmarks/psnr_vs_nfe.py --input data/ct/A0002_B40f_015.dcm --out benchmarks/results/nfe_test \\
        --padis 20x5 50x4 100x10

Curves (all with the bundled patch prior ct_patch256): PaDIS fast mode (warm start from ADMM-TV, one
random-shift denoiser call + CG data consistency per level; NFE = levels), PnP-ADMM with the PaDIS denoiser
(NFE = iterations), and the talk's PaDIS from noise (``LxK`` = L noise levels x K Langevin iterations per
level, NFE = L K, a network backward per NFE; ~1.5 s per NFE on a 2-core CPU, so 100x10 takes ~25 min).
Seconds are wall time on this machine (include the ADMM-TV warm start). Prints a markdown table, saves
psnr_vs_nfe.png and psnr_vs_nfe.json. Use a training slice to choose defaults, the test slice only to report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from wavepatch.io import normalize_volume, read_image, resize_square  # noqa: E402
from wavepatch.resources import prior_path  # noqa: E402
from wavepatch.run import run_reconstruction  # noqa: E402
from wavepatch.tasks import TaskOptions  # noqa: E402

PATCH = prior_path("ct_patch256")


def _level_inner(text: str) -> tuple[int, int]:
    levels, inner = text.lower().split("x")
    return int(levels), int(inner)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", default="benchmarks/results/nfe")
    ap.add_argument("--views", type=int, default=20)
    ap.add_argument("--fast", type=int, nargs="*", default=[5, 10, 20, 50, 100], help="fast PaDIS levels")
    ap.add_argument("--pnp", type=int, nargs="*", default=[10, 20, 50, 100], help="PnP-ADMM iterations")
    ap.add_argument("--padis", type=_level_inner, nargs="*", default=[], help="talk's PaDIS budgets, e.g. 100x10")
    ap.add_argument("--zeta", type=float, default=None, help="PaDIS zeta (default: the method default)")
    args = ap.parse_args()
    unit, _ = normalize_volume(read_image(args.input), None)
    img = resize_square(unit[unit.shape[0] // 2], 256)
    opts = TaskOptions(views=args.views)
    admm = run_reconstruction(img, "ct-parallel", opts, "admm-tv")
    curves: dict[str, list] = {"padis fast": [], "pnp-admm (learned)": [], "padis (talk, from noise)": []}
    for n in args.fast:
        r = run_reconstruction(img, "ct-parallel", opts, "padis", {"steps": n}, prior=PATCH, fast=True)
        curves["padis fast"].append((r.nfe, r.metrics["psnr"], r.metrics["ssim"], r.seconds))
    for n in args.pnp:
        r = run_reconstruction(img, "ct-parallel", opts, "pnp-admm", {"denoiser": "learned", "n_iter": n},
                               prior=PATCH)
        curves["pnp-admm (learned)"].append((n, r.metrics["psnr"], r.metrics["ssim"], r.seconds))
    for levels, inner in args.padis:
        ov = {"steps": levels, "n_inner": inner, "guidance": "gradient", "eps": 0.5,  # the talk's step, not pinv
              **({"zeta": args.zeta} if args.zeta is not None else {})}
        r = run_reconstruction(img, "ct-parallel", opts, "padis", ov, prior=PATCH, progress=True)
        curves["padis (talk, from noise)"].append((r.nfe, r.metrics["psnr"], r.metrics["ssim"], r.seconds))
        print(f"padis {levels}x{inner}: {r.metrics['psnr']:.2f} dB", flush=True)
    curves = {k: v for k, v in curves.items() if v}
    print(f"{Path(args.input).name}, {args.views} views; ADMM-TV {admm.metrics['psnr']:.2f} dB "
          f"/ {admm.metrics['ssim']:.3f}\n")
    print("| method | NFE | PSNR dB | SSIM | seconds |\n|---|---|---|---|---|")
    for name, pts in curves.items():
        for nfe, p, s, sec in pts:
            print(f"| {name} | {nfe} | {p:.2f} | {s:.3f} | {sec:.1f} |")
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
                                                      "columns": ["nfe", "psnr", "ssim", "seconds"],
                                                      "curves": curves}, indent=1))


if __name__ == "__main__":
    main()
