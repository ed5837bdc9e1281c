"""Parallel-beam CT operator: wavepatch vs scikit-image, side by side in one run.

    python benchmarks/physics.py [--size 256] [--views 20 60] [--batch 1 8] [--repeats 5] [--json PATH]

For each (views, batch): the median wall time per image of wavepatch's forward projection ``A``, adjoint
``A_adjoint`` and FBP, and of scikit-image's ``radon``, unfiltered ``iradon`` (its back-projection, the
adjoint up to a scale) and ``iradon`` with the ramp filter, on the same image, angles and detector grid
(skimage loops over the batch). Ratio = skimage / wavepatch: above 1 means wavepatch is faster. Also printed:
the one-off system-matrix build time and size, the adjoint mismatch, autograd = adjoint, and the agreement
with skimage's radon on a real CT slice.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from skimage.transform import iradon, radon
from timing import median_seconds

from wavepatch.io import normalize_volume, read_image, resize_square
from wavepatch.physics.base import adjoint_mismatch
from wavepatch.physics.ct import ParallelBeamCT, _parallel_fbp_matrix, _parallel_matrix

SLICE = Path(__file__).resolve().parents[1] / "data" / "ct" / "A0002_B40f_015.dcm"


def build_cost(size: int, views: int) -> dict:
    """Build the ray matrix without the disk cache, and the FBP back-projection matrix."""
    _parallel_matrix.cache_clear()
    _parallel_fbp_matrix.cache_clear()
    old = os.environ.get("WAVEPATCH_CACHE")
    os.environ["WAVEPATCH_CACHE"] = "off"
    try:
        t0 = time.perf_counter()
        op = ParallelBeamCT(size, views)
        t_ray = time.perf_counter() - t0
    finally:
        if old is None:
            del os.environ["WAVEPATCH_CACHE"]
        else:
            os.environ["WAVEPATCH_CACHE"] = old
    t0 = time.perf_counter()
    fbp_m = _parallel_fbp_matrix(size, tuple(op.angles.tolist()), op.n_detectors)
    t_fbp = time.perf_counter() - t0
    # CSR: int32 column index + float32 value per entry (+ transposes for the adjoint / autograd).
    return {"ray_build_s": t_ray, "ray_nnz": op.matrix.nnz, "ray_mb": op.matrix.nnz * 8 / 2**20,
            "fbp_build_s": t_fbp, "fbp_nnz": fbp_m.nnz, "fbp_mb": fbp_m.nnz * 8 / 2**20}


def time_both(op: ParallelBeamCT, x_real: np.ndarray, sino: np.ndarray, theta: np.ndarray, batch: int,
              repeats: int) -> tuple[dict, dict]:
    """Seconds per call (whole batch) of each operation: wavepatch batched, skimage looping over the batch."""
    n = op.n
    x = torch.from_numpy(np.repeat(x_real[None, None], batch, axis=0).copy())
    y = op.A(x)
    xs = [x_real.astype(np.float64)] * batch
    t = {
        "A": median_seconds(lambda: op.A(x), repeats),
        "A_adjoint": median_seconds(lambda: op.A_adjoint(y), repeats),
        "FBP (ramp)": median_seconds(lambda: op.fbp(y, "ramp"), repeats),
    }
    s = {
        "A": median_seconds(lambda: [radon(im, theta=theta, circle=False) for im in xs], repeats),
        "A_adjoint": median_seconds(lambda: [iradon(sino, theta=theta, filter_name=None, circle=False,
                                                 output_size=n) for _ in xs], repeats),
        "FBP (ramp)": median_seconds(lambda: [iradon(sino, theta=theta, filter_name="ramp", circle=False,
                                                  output_size=n) for _ in xs], repeats),
    }
    for d in (t, s):
        d["A + A_adjoint"] = d["A"] + d["A_adjoint"]
    return t, s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--views", type=int, nargs="+", default=[20, 60])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", default=None, help="also save the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.size
    x_real = resize_square(normalize_volume(read_image(SLICE), None)[0][0], n).astype(np.float32)

    rows, extras = [], {}
    for views in args.views:
        extras[views] = build_cost(n, views)
        op = ParallelBeamCT(n, views)
        theta = np.rad2deg(op.angles.numpy())
        ours = op.A(torch.from_numpy(x_real)[None, None])[0, 0].numpy()
        ref = radon(x_real.astype(np.float64), theta=theta, circle=False)
        extras[views]["radon_max_rel_diff"] = float(np.abs(ours - ref.T).max() / np.abs(ref).max())
        extras[views]["adjoint_mismatch_f64"] = adjoint_mismatch(op, dtype=torch.float64)
        xg = torch.rand(1, 1, n, n, dtype=torch.float64, requires_grad=True)
        v = torch.randn(1, 1, views, op.n_detectors, dtype=torch.float64)
        (grad,) = torch.autograd.grad((op.A(xg) * v).sum(), xg)
        extras[views]["autograd_vs_adjoint"] = float((grad - op.A_adjoint(v)).abs().max())
        for batch in args.batch:
            t, s = time_both(op, x_real, ref, theta, batch, args.repeats)
            for name in t:
                rows.append({"views": views, "batch": batch, "op": name, "wavepatch_ms": 1e3 * t[name] / batch,
                             "skimage_ms": 1e3 * s[name] / batch, "ratio": s[name] / t[name]})

    print(f"Parallel-beam CT, {n}x{n} image, float32 (skimage float64, its only precision), "
          f"{args.threads} threads, median of {args.repeats}; times per image\n")
    print("| views | batch | operation | wavepatch ms | scikit-image ms | ratio (skimage / wavepatch) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['views']} | {r['batch']} | {r['op']} | {r['wavepatch_ms']:.1f} | {r['skimage_ms']:.1f} | "
              f"{r['ratio']:.1f}x |")
    print("\n| views | ray matrix build (no cache) | nnz | MB | FBP matrix build | nnz | MB | max rel. diff vs radon "
          "| adjoint mismatch (f64) | max abs(autograd - adjoint) |\n|---|---|---|---|---|---|---|---|---|---|")
    for views, e in extras.items():
        print(f"| {views} | {e['ray_build_s']:.2f} s | {e['ray_nnz']:,} | {e['ray_mb']:.0f} | {e['fbp_build_s']:.2f} s "
              f"| {e['fbp_nnz']:,} | {e['fbp_mb']:.0f} | {e['radon_max_rel_diff']:.1e} | "
              f"{e['adjoint_mismatch_f64']:.1e} | {e['autograd_vs_adjoint']:.1e} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "extras": extras}, indent=1))


if __name__ == "__main__":
    main()
