"""Real-MRI reconstruction on slices of other patients: learned priors against the classical methods.

    python benchmarks/mri_brain.py --out benchmarks/results/mri_brain                  # bundled MRI prior
    python benchmarks/mri_brain.py --prior runs/mri_brain_patch256/prior.safetensors --label new --out ...

Data: ``../shared/data/mri_brain/test`` (708 T1-weighted contrast-enhanced slices of meningioma patients; the
priors train on the glioma patients of ``train/``). ``--slices N`` picks N slices evenly spaced over the sorted
file names (never chosen by result). Each slice is normalised by the data layer exactly as ``wavepatch
reconstruct`` does (0 -> 0, 99.5th percentile -> 1, clipped), resized to ``--size``, and measured by the
simulated single-coil Cartesian task (orthonormal FFT of a magnitude image, 1-D Gaussian column mask with its
fully sampled centre; this is not raw k-space) at each ``--accel``; slice k uses mask and noise seed k.

Columns (``--methods``): zero-filled, admm-tv, l1-wavelet (tuned defaults), padis-fast (PaDIS fast mode with
``--prior``), pnp-learned (PnP-ADMM with the prior's PaDIS denoiser), padis (the from-noise loop). Rows are
appended to OUT/rows.csv after every reconstruction and skipped when present, so a stopped run resumes. The
summary (OUT/summary.md, printed) gives mean +- std over slices of PSNR and SSIM, the mean gain over ADMM-TV
with its std, and on how many slices each method loses to ADMM-TV.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from wavepatch.bench import load_slices
from wavepatch.io.atomic import atomic_write_bytes
from wavepatch.learned import default_prior
from wavepatch.run import run_reconstruction
from wavepatch.tasks import task_options

TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mri_brain" / "test"
# column -> (registered method, fast, overrides)
COLUMNS = {
    "zero-filled": ("adjoint", False, {}),
    "admm-tv": ("admm-tv", False, {}),
    "l1-wavelet": ("l1-wavelet", False, {}),
    "padis-fast": ("padis", True, {}),
    "pnp-learned": ("pnp-admm", False, {"denoiser": "learned"}),
    "padis": ("padis", False, {}),
}
FIELDS = ("label", "method", "accel", "slice", "psnr", "ssim", "seconds", "nfe")


def pick_slices(folder: Path, n: int) -> list[Path]:
    """n files evenly spaced over the sorted names of ``folder`` (deterministic, independent of any result)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".npy"))
    if not files:
        raise SystemExit(f"no images in {folder}")
    idx = np.unique(np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int))
    return [files[i] for i in idx]


def summarize(rows: list[dict], reference: str = "admm-tv") -> str:
    """Markdown: per (label, method, accel) mean +- std PSNR / SSIM, gain over ``reference`` and losses."""
    by = {}
    for r in rows:
        by.setdefault((r["label"], r["method"], float(r["accel"])), {})[r["slice"]] = r
    lines = ["| prior | method | accel | slices | PSNR (dB) | SSIM | gain over ADMM-TV (dB) | loses on | s/slice |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (label, method, accel), per in sorted(by.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])):
        ref = next((v for (lab, m, a), v in by.items() if m == reference and a == accel), {})
        psnr = np.array([float(r["psnr"]) for r in per.values()])
        ssim = np.array([float(r["ssim"]) for r in per.values()])
        secs = np.mean([float(r["seconds"]) for r in per.values()])
        common = [s for s in per if s in ref]
        gain = np.array([float(per[s]["psnr"]) - float(ref[s]["psnr"]) for s in common])
        g = f"{gain.mean():+.2f} +- {gain.std():.2f}" if len(common) and method != reference else ""
        loses = f"{int((gain < 0).sum())} / {len(common)}" if len(common) and method != reference else ""
        lines.append(f"| {label} | {method} | x{accel:g} | {len(per)} | {psnr.mean():.2f} +- {psnr.std():.2f} | "
                     f"{ssim.mean():.4f} +- {ssim.std():.4f} | {g} | {loses} | {secs:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=TEST)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/mri_brain"))
    ap.add_argument("--prior", default=None, help="prior checkpoint (default: the bundled MRI prior)")
    ap.add_argument("--label", default=None, help="name of the prior in the table (default: the file's stem)")
    ap.add_argument("--slices", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--accels", type=float, nargs="+", default=[4.0, 8.0])
    ap.add_argument("--methods", nargs="+", default=["zero-filled", "admm-tv", "padis-fast", "pnp-learned"],
                    choices=list(COLUMNS))
    args = ap.parse_args()
    prior = Path(args.prior) if args.prior else default_prior("mri", "patch")
    label = args.label or prior.stem
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "rows.csv"
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    done = {(r["label"], r["method"], float(r["accel"]), r["slice"]) for r in rows}  # label "" for classical
    files = pick_slices(args.data, args.slices)
    for accel in args.accels:
        for k, f in enumerate(files):
            img = load_slices(f, args.size)[0][1]  # normalised and resized as `reconstruct` does
            for col in args.methods:
                method, fast, overrides = COLUMNS[col]
                learned = method in ("padis", "pnp-admm")
                if ((label if learned else ""), col, accel, f.name) in done:
                    continue
                res = run_reconstruction(img, "mri", task_options("mri", accel=accel, mask="gaussian"), method,
                                         dict(overrides), seed=k, prior=prior if learned else None, fast=fast)
                rows.append({"label": label if learned else "", "method": col, "accel": accel, "slice": f.name,
                             "psnr": res.metrics["psnr"], "ssim": res.metrics["ssim"], "seconds": res.seconds,
                             "nfe": res.nfe or 0})
                print(f"x{accel:g} {f.name} {col} {label if learned else ''}: {res.metrics['psnr']:.2f} dB "
                      f"{res.seconds:.1f} s", flush=True)
                buf = [",".join(FIELDS)] + [",".join(str(r[c]) for c in FIELDS) for r in rows]
                atomic_write_bytes(path, ("\n".join(buf) + "\n").encode())
    md = summarize(rows)
    atomic_write_bytes(args.out / "summary.md", md.encode())
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
