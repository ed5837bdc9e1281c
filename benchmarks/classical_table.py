"""Every task x classical method on real test slices, run through the ``wavepatch reconstruct`` command.

    python benchmarks/classical_table.py --out benchmarks/results/classical

For each setting below the script calls the CLI exactly as a user would (``wavepatch.cli.main`` with the
same arguments), collects each run's ``metrics.json`` and prints a Markdown table of PSNR / SSIM / seconds.
CT runs use ``../shared/data/ct/test/A0002_B40f_015.dcm`` (the test patient; the same file is bundled as
``data/ct/A0002_B40f_015.dcm``), MRI runs the middle plane of the bundled MNI template. It also compares
wavepatch's FBP with scikit-image's ``iradon`` on the same slice and geometry.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from wavepatch.cli import main as cli_main
from wavepatch.io import normalize_volume, read_image, resize_square
from wavepatch.metrics import image_metrics
from wavepatch.physics.ct import ParallelBeamCT

REPO = Path(__file__).resolve().parents[1]
SHARED_CT = REPO.parent / "shared" / "data" / "ct" / "test" / "A0002_B40f_015.dcm"
CT_SLICE = SHARED_CT if SHARED_CT.exists() else REPO / "data" / "ct" / "A0002_B40f_015.dcm"
MRI = REPO / "data" / "mri" / "mni_icbm152_t1_axial5.nii.gz"

SETTINGS = [
    ("ct-parallel 20 views", CT_SLICE, ["--task", "ct-parallel", "--views", "20"]),
    ("ct-parallel 60 views", CT_SLICE, ["--task", "ct-parallel", "--views", "60"]),
    ("ct-fan 60 views", CT_SLICE, ["--task", "ct-fan", "--views", "60"]),
    ("ct-lowdose I0=1e4, 180 views", CT_SLICE, ["--task", "ct-lowdose", "--dose", "1e4"]),
    ("mri x4 gaussian", MRI, ["--task", "mri", "--accel", "4", "--mask", "gaussian"]),
    ("mri x8 uniform", MRI, ["--task", "mri", "--accel", "8", "--mask", "uniform"]),
    ("deblur gaussian", CT_SLICE, ["--task", "deblur", "--kernel", "gaussian"]),
    ("deblur heavy", CT_SLICE, ["--task", "deblur", "--kernel", "heavy"]),
    ("sr x4", CT_SLICE, ["--task", "sr", "--factor", "4"]),
    ("inpaint random 30%", CT_SLICE, ["--task", "inpaint", "--mask", "random"]),
    ("inpaint box", CT_SLICE, ["--task", "inpaint", "--mask", "box"]),
]
METHODS = ["fbp", "cgls", "fista-tv", "admm-tv", "l1-wavelet", "pnp-admm", "red"]


def run_grid(out: Path, size: int, settings, methods) -> list[dict]:
    rows = []
    for label, path, task_args in settings:
        for method in methods:
            run_dir = out / label.replace(" ", "_").replace("=", "") / method
            argv = ["reconstruct", str(path), *task_args, "--method", method, "--size", str(size),
                    "--out", str(run_dir), "--no-progress"]
            if cli_main(argv) != 0:
                raise SystemExit(f"failed: wavepatch {' '.join(argv)}")
            m = json.loads((run_dir / "metrics.json").read_text())
            rows.append({"setting": label, "method": method, "psnr": m["psnr"], "ssim": m["ssim"],
                         "seconds": m["seconds"], "baseline": m["baseline"], "params": m["method_params"]})
    return rows


def fbp_vs_iradon(size: int, views: int) -> list[dict]:
    """wavepatch FBP (A then fbp) vs skimage (radon then iradon), same slice, angles and detector grid."""
    from skimage.transform import iradon, radon

    x = resize_square(normalize_volume(read_image(CT_SLICE), None)[0][0], size).astype(np.float32)
    xt = torch.from_numpy(x)[None, None]
    op = ParallelBeamCT(size, views)
    theta = np.rad2deg(op.angles.double().numpy())
    sino = op.A(xt)
    rows = []
    for filt in ("ramp", "hann"):
        t0 = time.perf_counter()
        ours = op.fbp(sino, filt)
        t_ours = time.perf_counter() - t0
        sk_sino = radon(x.astype(np.float64), theta=theta, circle=False)
        t0 = time.perf_counter()
        sk = iradon(sk_sino, theta=theta, filter_name=filt, circle=False, output_size=size)
        t_sk = time.perf_counter() - t0
        m_ours = image_metrics(ours, xt)
        m_sk = image_metrics(torch.from_numpy(sk).float()[None, None], xt)
        rows.append({"filter": filt, "views": views, "ours_psnr": m_ours["psnr"], "ours_ssim": m_ours["ssim"],
                     "skimage_psnr": m_sk["psnr"], "skimage_ssim": m_sk["ssim"],
                     "max_abs_diff": float(np.abs(ours[0, 0].numpy() - sk).max()),
                     "ours_seconds": t_ours, "skimage_seconds": t_sk})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", default="benchmarks/results/classical")
    ap.add_argument("--methods", nargs="*", default=METHODS)
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()
    fbp = [r for v in (20, 60) for r in fbp_vs_iradon(args.size, v)]
    rows = run_grid(out, args.size, SETTINGS, args.methods)
    (out / "results.json").write_text(json.dumps({"grid": rows, "fbp_vs_iradon": fbp}, indent=1))

    print(f"CT slice: {CT_SLICE.name} (test patient), MRI: {MRI.name} middle plane; {args.size}x{args.size}; "
          f"PSNR dB / SSIM on the windowed [0, 1] image; seconds = reconstruction wall time, "
          f"{torch.get_num_threads()} threads\n")
    print("| setting | " + " | ".join(args.methods) + " |")
    print("|---|" + "---|" * len(args.methods))
    for label, _, _ in SETTINGS:
        cells = []
        for method in args.methods:
            r = next(r for r in rows if r["setting"] == label and r["method"] == method)
            cells.append(f"{r['psnr']:.2f} / {r['ssim']:.3f} ({r['seconds']:.1f} s)")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\n(fbp column = the task's baseline: FBP-Hann for CT, zero-filled for MRI, the blurred / bicubic / "
          "masked image otherwise)\n")
    print("| views | filter | wavepatch FBP PSNR / SSIM | skimage iradon PSNR / SSIM | difference dB | "
          "max abs pixel diff |\n|---|---|---|---|---|---|")
    for r in fbp:
        print(f"| {r['views']} | {r['filter']} | {r['ours_psnr']:.2f} / {r['ours_ssim']:.3f} | "
              f"{r['skimage_psnr']:.2f} / {r['skimage_ssim']:.3f} | {r['ours_psnr'] - r['skimage_psnr']:+.3f} | "
              f"{r['max_abs_diff']:.2e} |")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
