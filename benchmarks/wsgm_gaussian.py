"""The WSGM claim on stationary Gaussian fields, computed exactly: KL of SGM vs WSGM as a function of steps.

    OMP_NUM_THREADS=1 python benchmarks/wsgm_gaussian.py [--sizes 16 32 64 128 256] [--etas 1 2 3]
        [--threshold 1e-3] [--coarse 8] [--max-steps 16384] [--out benchmarks/results/wsgm_gaussian]

Setting (see :mod:`wavepatch.analysis.gaussian_fields`): field on an n x n periodic grid with spectrum
lambda(omega) = c / (xi^eta + |omega|^eta), xi = 2 pi / n (one cycle per image side), unit pixel variance; forward
OU process; Euler-Maruyama on the reverse SDE with N uniform steps on [0, T], started from N(0, I). SGM runs on
pixels. WSGM: orthonormal periodized Haar down to a coarse grid of `--coarse`^2 pixels (J = log2(n / coarse)),
every band normalised by one std (the mean conditional std given the lowpass, and as a variant the marginal std
that WSGM's code uses), N steps at every scale. Both have the same work per step: N n^2 coefficient updates.

Error: KL(p || generated) per pixel (nats / n^2), exact (no sampling). For each (method, n, N) the final time T
is the best of a grid (`--T`), the paper's "there exist T and delta". Steps-to-threshold: smallest N of the
geometric grid (ratio sqrt 2) with KL <= threshold, and the log-log interpolated crossing.
Writes table.md, results.json, steps_vs_size.png and kl_vs_steps.png to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from wavepatch.analysis.gaussian_fields import (  # noqa: E402
    condition_numbers,
    power_law_spectrum,
    sgm_directions,
    total_kl,
    wsgm_directions,
)

METHODS = {
    "SGM": lambda lam, levels: sgm_directions(lam),
    "WSGM": lambda lam, levels: wsgm_directions(lam, levels, "haar", "conditional"),
    "WSGM (marginal std)": lambda lam, levels: wsgm_directions(lam, levels, "haar", "marginal"),
}


def steps_grid(max_steps: int) -> list[int]:
    """Geometric grid of step counts, ratio sqrt(2): 2, 3, 4, 6, 8, 11, 16, ..."""
    out, k = [], 2.0
    while k <= max_steps * 1.0001:
        out.append(int(round(k)))
        k *= math.sqrt(2)
    return sorted(set(out))


def kl_curve(directions, grid: list[int], Ts: torch.Tensor, n_pixels: int, stop_below: float) -> list[dict]:
    """Per-pixel KL at the best T for each N of the grid; stops once KL < stop_below."""
    curve = []
    for N in grid:
        kl = total_kl(directions, N, Ts) / n_pixels
        i = int(torch.argmin(kl))
        curve.append(dict(steps=N, kl=float(kl[i]), T=float(Ts[i])))
        if curve[-1]["kl"] < stop_below:
            break
    return curve


def steps_to_threshold(curve: list[dict], threshold: float) -> tuple[int | None, float | None]:
    """(first grid N with KL <= threshold, log-log interpolated crossing), None if never reached."""
    for prev, cur in zip([None, *curve[:-1]], curve, strict=True):
        if cur["kl"] <= threshold:
            if prev is None or not math.isfinite(prev["kl"]):
                return cur["steps"], float(cur["steps"])
            a = math.log(prev["kl"] / threshold) / math.log(prev["kl"] / cur["kl"])
            return cur["steps"], math.exp(math.log(prev["steps"]) + a * math.log(cur["steps"] / prev["steps"]))
    return None, None


def run(args: argparse.Namespace) -> list[dict]:
    Ts = torch.tensor(args.T, dtype=torch.float64)
    grid = steps_grid(args.max_steps)
    rows = []
    for eta in args.etas:
        for n in args.sizes:
            lam = power_law_spectrum(n, eta)
            levels = int(round(math.log2(n // args.coarse)))
            for name, make in METHODS.items():
                t0 = time.perf_counter()
                dirs = make(lam, levels)
                curve = kl_curve(dirs, grid, Ts, n * n, args.threshold / 30)
                first, interp = steps_to_threshold(curve, args.threshold)
                kappa = condition_numbers(dirs)
                rows.append(dict(eta=eta, size=n, method=name, levels=levels if name != "SGM" else 0,
                                 kappa=kappa, kappa_max=max(kappa), steps_first=first, steps_interp=interp,
                                 curve=curve, seconds=time.perf_counter() - t0))
                print(f"eta={eta:g} n={n:4d} {name:20s} kappa_max={max(kappa):9.3g} steps to KL/pixel <= "
                      f"{args.threshold:g}: {first} (interp {interp if interp is None else round(interp, 1)})  "
                      f"[{rows[-1]['seconds']:.1f} s]", flush=True)
    return rows


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [f"Steps N (per scale for WSGM) to reach KL(p || generated) <= {args.threshold:g} nats per pixel, "
             "exact Gaussian computation, best final time T per N: log-log interpolated crossing, first grid "
             "point (ratio sqrt 2) in brackets. kappa = max/min eigenvalue of the covariance the sampler sees: SGM "
             "the pixel covariance; WSGM the normalised coarsest lowpass / the worst normalised 3x3 detail "
             "conditional over scales and frequencies.", ""]

    def cell(eta: float, n: int, m: str) -> dict:
        return next(r for r in rows if r["eta"] == eta and r["size"] == n and r["method"] == m)

    def steps(r: dict) -> str:
        return "not reached" if r["steps_first"] is None else f"{r['steps_interp']:.0f} ({r['steps_first']})"

    for eta in args.etas:
        lines += [f"**eta = {eta:g}** (spectrum ~ 1 / (xi^eta + |omega|^eta))", "",
                  "| size | SGM steps | SGM kappa | J | WSGM steps | WSGM (marginal std) steps | WSGM kappa "
                  "(coarse / details) |", "|---|---|---|---|---|---|---|"]
        for n in args.sizes:
            sgm, wsgm, marg = (cell(eta, n, m) for m in METHODS)
            k = wsgm["kappa"]
            lines.append(f"| {n}² | {steps(sgm)} | {sgm['kappa_max']:.3g} | {wsgm['levels']} | {steps(wsgm)} | "
                         f"{steps(marg)} | {k[0]:.3g} / {max(k[1:]):.3g} |")
        lines.append("")
    return "\n".join(lines)


def plots(rows: list[dict], args: argparse.Namespace, out: Path) -> None:
    styles = {"SGM": "-o", "WSGM": "--s", "WSGM (marginal std)": ":^"}
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for ci, eta in enumerate(args.etas):
        for m, st in styles.items():
            rs = [r for r in rows if r["eta"] == eta and r["method"] == m and r["steps_interp"] is not None]
            ax.loglog([r["size"] for r in rs], [r["steps_interp"] for r in rs], st, color=f"C{ci}",
                      label=f"{m}, eta={eta:g}", base=2)
    ax.set_xlabel("image side n (pixels)")
    ax.set_ylabel(f"steps to KL/pixel <= {args.threshold:g}")
    ax.set_title("Steps to a fixed error vs image size (exact Gaussian)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "steps_vs_size.png", dpi=130)
    plt.close(fig)

    eta = args.etas[len(args.etas) // 2]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, m in zip(axes, ["SGM", "WSGM"], strict=True):
        for ci, n in enumerate(args.sizes):
            r = next(r for r in rows if r["eta"] == eta and r["size"] == n and r["method"] == m)
            ax.loglog([c["steps"] for c in r["curve"]], [c["kl"] for c in r["curve"]], "-", color=f"C{ci}",
                      label=f"{n}²")
        ax.axhline(args.threshold, color="k", lw=0.8, ls="--")
        ax.set_title(f"{m}, eta={eta:g}")
        ax.set_xlabel("steps N" + (" per scale" if m != "SGM" else ""))
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("KL(p || generated) per pixel (nats)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "kl_vs_steps.png", dpi=130)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--etas", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    ap.add_argument("--threshold", type=float, default=1e-3, help="KL per pixel, nats")
    ap.add_argument("--coarse", type=int, default=8, help="side of WSGM's coarsest lowpass")
    ap.add_argument("--max-steps", type=int, default=16384)
    ap.add_argument("--T", type=float, nargs="+", default=[0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8],
                    help="final times tried; the best is kept for every N")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/wsgm_gaussian"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(args)
    text = markdown(rows, args)
    print(text)
    (args.out / "table.md").write_text(text + "\n")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    (args.out / "results.json").write_text(json.dumps(dict(settings=settings, rows=rows), indent=1) + "\n")
    plots(rows, args, args.out)


if __name__ == "__main__":
    main()
