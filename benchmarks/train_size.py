"""The talk's training-set-size study on real brain MRI: patch against whole-image priors trained on 144 / 288 /
576 / 1152 slices (equal steps per model), evaluated on other patients at x4 and x8 with the fast mode and PnP.

    python benchmarks/train_size.py                              # train what is missing, then evaluate
    python benchmarks/train_size.py --steps 1000 --slices 16 --runs runs/train_size

Subsets: nested (144 of 288 of 576 of 1152), drawn once with a fixed seed from the sorted file names of
``mri_brain/train`` (glioma patients), as symbolic links in RUNS/data_N. Every model is trained by ``wavepatch
train`` with the same number of steps (``--steps``), the same learning rate, warm-up and EMA, at ``--size``:

- patch: PaDIS patches of 16 and 32 pixels (probabilities 0.3 / 0.7), 32 patches of 32^2 per step (same pixels
  at 16^2), UNet 32 channels x (1, 2, 2);
- whole: the whole ``--size``^2 image, ``--whole-batch`` images per step, UNet 32 channels x (1, 2, 2, 2).

A stopped run resumes: a model whose prior.json has reached ``--steps`` is skipped, one with a training state
continues with ``--resume``, and evaluation rows already in OUT/rows.csv are not recomputed.

Evaluation is ``benchmarks/mri_brain.py``'s protocol at ``--size``: ``--slices`` slices of ``mri_brain/test``
(meningioma patients) evenly spaced over the sorted names, normalised as ``reconstruct`` does, single-coil
Cartesian k-space simulated from the magnitude image, 1-D Gaussian column mask, slice k with mask and noise seed
k. Methods: the fast mode (warm start from ADMM-TV, 50 levels from sigma 0.1 with CG data consistency; for the
whole-image prior the same algorithm, ``ddnm --fast`` with steps 50 and eta 1, which is what ``padis --fast``
runs) and PnP-ADMM with the prior's denoiser (its defaults), with ADMM-TV and zero-filled as references.
OUT/summary.md gets the table (mean PSNR / SSIM over slices, gain over ADMM-TV, training seconds).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from wavepatch.bench import load_slices
from wavepatch.io.atomic import atomic_write_bytes
from wavepatch.run import run_reconstruction
from wavepatch.tasks import task_options

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mri_brain import pick_slices  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mri_brain"
FIELDS = ("kind", "n_train", "method", "accel", "slice", "psnr", "ssim", "seconds", "nfe")
# column -> (registered method, fast, overrides) for each prior kind
LEARNED = {
    "fast": {"patch": ("padis", True, {}), "whole": ("ddnm", True, {"steps": "50", "eta": "1.0"})},
    "pnp": {"patch": ("pnp-admm", False, {"denoiser": "learned"}),
            "whole": ("pnp-admm", False, {"denoiser": "learned"})},
}
CLASSICAL = {"zero-filled": "adjoint", "admm-tv": "admm-tv"}


def make_subsets(train: Path, sizes: list[int], runs: Path, seed: int = 0) -> dict[int, Path]:
    """Nested subsets of ``train``'s images as folders of symbolic links RUNS/data_N (one permutation, its
    first N entries for every N)."""
    files = sorted(p for p in train.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".npy"))
    if max(sizes) > len(files):
        raise SystemExit(f"{train} has {len(files)} images, fewer than {max(sizes)}")
    perm = np.random.default_rng(seed).permutation(len(files))
    out = {}
    for n in sizes:
        folder = runs / f"data_{n}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in perm[:n]:
            link = folder / files[i].name
            if not link.exists():
                link.symlink_to(files[i].resolve())
        out[n] = folder
    return out


def train_command(kind: str, data: Path, run: Path, args) -> list[str]:
    """The ``wavepatch train`` command line of one model."""
    cmd = [sys.executable, "-m", "wavepatch.cli", "train", str(data), "--prior", kind, "--size", str(args.size),
           "--modality", "mri", "--channels", "32", "--steps", str(args.steps), "--lr", "3e-4",
           "--ema-halflife", str(args.ema_halflife), "--checkpoint-every", "250", "--log-every", "20",
           "--no-progress", "--out", str(run)]
    if kind == "patch":
        cmd += ["--patch-sizes", "16,32", "--patch-probs", "0.3,0.7", "--patch-size", "32", "--channel-mult", "1,2,2",
                "--batch", "32"]
    else:
        cmd += ["--channel-mult", "1,2,2,2", "--batch", str(args.whole_batch)]
    if (run / "train_state.safetensors").exists():
        cmd.append("--resume")
    return cmd


def trained_steps(run: Path) -> int:
    meta = run / "prior.json"
    return json.loads(meta.read_text())["info"]["step"] if meta.exists() else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path, default=DATA / "train")
    ap.add_argument("--test", type=Path, default=DATA / "test")
    ap.add_argument("--runs", type=Path, default=Path("runs/train_size"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/train_size"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[144, 288, 576, 1152])
    ap.add_argument("--kinds", nargs="+", default=["patch", "whole"], choices=["patch", "whole"])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--whole-batch", type=int, default=4)
    ap.add_argument("--ema-halflife", type=float, default=100)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--accels", type=float, nargs="+", default=[4.0, 8.0])
    ap.add_argument("--methods", nargs="+", default=["fast", "pnp"], choices=list(LEARNED))
    ap.add_argument("--train-only", action="store_true")
    args = ap.parse_args()

    folders = make_subsets(args.train, args.sizes, args.runs)
    for n in args.sizes:
        for kind in args.kinds:
            run = args.runs / f"{kind}_{n}"
            if trained_steps(run) >= args.steps:
                continue
            t0 = time.perf_counter()
            cmd = train_command(kind, folders[n], run, args)
            print(f"training {kind} on {n} slices: wavepatch {' '.join(cmd[3:])}", flush=True)
            subprocess.run(cmd, check=True)
            print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    if args.train_only:
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "rows.csv"
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    done = {(r["kind"], r["n_train"], r["method"], float(r["accel"]), r["slice"]) for r in rows}
    jobs = [("classical", "0", col, CLASSICAL[col], False, {}, None) for col in CLASSICAL]
    for n in args.sizes:
        for kind in args.kinds:
            for col in args.methods:
                method, fast, overrides = LEARNED[col][kind]
                prior = args.runs / f"{kind}_{n}" / "prior.safetensors"
                jobs.append((kind, str(n), col, method, fast, overrides, prior))
    files = pick_slices(args.test, args.slices)
    images = [load_slices(f, args.size)[0][1] for f in files]  # normalised and resized as `reconstruct` does
    for accel in args.accels:
        for k, (f, img) in enumerate(zip(files, images, strict=True)):
            for kind, n, col, method, fast, overrides, prior in jobs:
                if (kind, n, col, accel, f.name) in done:
                    continue
                res = run_reconstruction(img, "mri", task_options("mri", accel=accel, mask="gaussian"), method,
                                         dict(overrides), seed=k, prior=prior, fast=fast)
                rows.append({"kind": kind, "n_train": n, "method": col, "accel": accel, "slice": f.name,
                             "psnr": res.metrics["psnr"], "ssim": res.metrics["ssim"], "seconds": res.seconds,
                             "nfe": res.nfe or 0})
                print(f"x{accel:g} {f.name} {kind} {n} {col}: {res.metrics['psnr']:.2f} dB {res.seconds:.1f} s",
                      flush=True)
                buf = [",".join(FIELDS)] + [",".join(str(r[c]) for c in FIELDS) for r in rows]
                atomic_write_bytes(path, ("\n".join(buf) + "\n").encode())
    md = summarize(rows, args)
    atomic_write_bytes(args.out / "summary.md", md.encode())
    plot(rows, args, args.out / "train_size.png")
    print(md)
    return 0


def _mean(per: dict, key: str) -> float:
    return float(np.mean([float(v[key]) for v in per.values()]))


def summarize(rows: list[dict], args) -> str:
    """Markdown: one line per training-set size, PSNR (SSIM) of each prior kind and method at each acceleration,
    mean over slices, with the mean per-slice gain over ADMM-TV; then training cost per model."""
    table: dict = {}
    for r in rows:
        table.setdefault((r["kind"], r["n_train"], r["method"], float(r["accel"])), {})[r["slice"]] = r
    lines = []
    for accel in args.accels:
        ref = table.get(("classical", "0", "admm-tv", accel), {})
        zf = table.get(("classical", "0", "zero-filled", accel), {})
        lines += [f"\n**x{accel:g}** (ADMM-TV {_mean(ref, 'psnr'):.2f} dB / {_mean(ref, 'ssim'):.3f}, zero-filled "
                  f"{_mean(zf, 'psnr'):.2f} dB; {len(ref)} slices; cells: PSNR dB / SSIM (gain over ADMM-TV))\n"
                  if ref and zf else f"\n**x{accel:g}**\n"]
        cols = [(kind, m) for m in args.methods for kind in args.kinds]
        lines.append("| slices | " + " | ".join(f"{kind} {m}" for kind, m in cols) + " |")
        lines.append("|---" * (len(cols) + 1) + "|")
        for n in args.sizes:
            cells = []
            for kind, m in cols:
                per = table.get((kind, str(n), m, accel), {})
                common = [s for s in per if s in ref]
                if not per:
                    cells.append("")
                    continue
                gain = np.mean([float(per[s]["psnr"]) - float(ref[s]["psnr"]) for s in common]) if common else 0
                cells.append(f"{_mean(per, 'psnr'):.2f} / {_mean(per, 'ssim'):.3f} ({gain:+.2f})")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "Patch minus whole image, paired over slices (mean +- standard error, dB):", "",
              "| slices | " + " | ".join(f"{m} x{a:g}" for m in args.methods for a in args.accels) + " |",
              "|---" * (len(args.methods) * len(args.accels) + 1) + "|"]
    for n in args.sizes:
        cells = []
        for m in args.methods:
            for accel in args.accels:
                p, w = table.get(("patch", str(n), m, accel), {}), table.get(("whole", str(n), m, accel), {})
                d = np.array([float(p[s]["psnr"]) - float(w[s]["psnr"]) for s in p if s in w])
                cells.append(f"{d.mean():+.2f} +- {d.std(ddof=1) / np.sqrt(len(d)):.2f}" if len(d) > 1 else "")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "| model | steps | training seconds | final loss (mean of the last 50 logged) |", "|---|---|---|---|"]
    for n in args.sizes:
        for kind in args.kinds:
            meta = args.runs / f"{kind}_{n}" / "prior.json"
            if meta.exists():
                info = json.loads(meta.read_text())["info"]
                loss = info.get("final_loss_mean_last_50_logged", float("nan"))
                lines.append(f"| {kind} {n} | {info['step']} | {info.get('train_seconds', 0):.0f} | {loss:.4f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], args, path: Path) -> None:
    """PSNR (mean over slices) against the number of training slices: one panel per method and acceleration,
    patch and whole image, ADMM-TV as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(m, a) for m in args.methods for a in args.accels]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    for ax, (m, accel) in zip(axes[0], panels, strict=True):
        for kind, style in (("patch", "o-"), ("whole", "s--")):
            pts = [(n, [float(r["psnr"]) for r in rows if r["kind"] == kind and r["n_train"] == str(n)
                        and r["method"] == m and float(r["accel"]) == accel]) for n in args.sizes]
            pts = [(n, np.mean(v)) for n, v in pts if v]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=kind)
        ref = [float(r["psnr"]) for r in rows if r["method"] == "admm-tv" and float(r["accel"]) == accel]
        if ref:
            ax.axhline(np.mean(ref), color="grey", lw=1, label="ADMM-TV")
        ax.set_xscale("log", base=2)
        ax.set_xticks(args.sizes, [str(n) for n in args.sizes])
        ax.set_title(f"{m}, x{accel:g}")
        ax.set_xlabel("training slices")
        ax.set_ylabel("PSNR (dB)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


if __name__ == "__main__":
    raise SystemExit(main())
