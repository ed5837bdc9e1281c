"""Choose the shape sampler's number of noise levels on the VALIDATION split (not test): CD-based COV / MMD / 1-NNA
of as many generated shapes as val holds, at several ``--steps``, with seconds per shape.
Run: ``python benchmarks/shape_steps.py --prior RUN/prior.safetensors [--steps 8 16 32 64]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from wavepatch.cli_shape import as_trimeshes, evaluate_shapes, reference_points
from wavepatch.geometry.shape_data import load_surfaces
from wavepatch.geometry.surface import tsdf_to_mesh
from wavepatch.metrics.shapes import reference_matrices
from wavepatch.prior.checkpoint import load_shape_prior
from wavepatch.sampling.shape_generation import generate_tsdf

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "shapes" / "adrenalmnist3d_64.npz"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", required=True)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--steps", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    model, cfg = load_shape_prior(args.prior)
    grid = cfg.code.grid
    val = as_trimeshes(load_surfaces(args.data, "val"))
    reference = reference_matrices(reference_points(val, grid, args.points, args.seed), emd_points=None,
                                   seed=args.seed)
    print("| levels | NFE | s/shape | empty | COV-CD % | MMD-CD ×1e3 | 1-NNA-CD % |\n|---|---|---|---|---|---|---|")
    for steps in args.steps:
        t0 = time.perf_counter()
        tsdf, nfe = generate_tsdf(model, cfg, len(val), steps=steps, batch=16, seed=args.seed + 1, progress=False)
        meshes = [tsdf_to_mesh(t) for t in tsdf.numpy()]
        seconds = (time.perf_counter() - t0) / len(val)
        kept = [m for m in meshes if m is not None]
        r, _, _ = evaluate_shapes(kept, val, grid, args.points, None, args.seed, progress=False, reference=reference)
        print(f"| {steps} | {nfe} | {seconds:.3f} | {len(meshes) - len(kept)} | {100 * r['cov_cd']:.1f} | "
              f"{1e3 * r['mmd_cd']:.3f} | {100 * r['nna_cd']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
