"""The shape-generation table (seed 001's Table 1 protocol) on the adrenal shapes: COV / MMD / 1-NNA under CD and EMD.

Rows: the wavelet generator + detail predictor, the same without the detail predictor, voxel-space TSDF diffusion,
a PCA shape model (Gaussian coefficients, fitted here on the training TSDFs) and the training set itself (a random
subset of the training shapes of the test split's size: the data's own level). Every generated set has as many
shapes as the test split (``--n``, default: all 298); the references are the test split's marching-cubes surfaces.
Writes shape_table.md / .csv / .json and one figure of generated shapes per row to --out.

Run: ``python benchmarks/shape_table.py --wavelet RUN/prior.safetensors [--voxel RUN2/prior.safetensors]
[--voxel-n 100] [--points 1024] [--emd-points 128] [--out benchmarks/results/shapes]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from wavepatch.cli_shape import as_trimeshes, evaluate_shapes, reference_points
from wavepatch.geometry.shape_data import load_surfaces, load_tsdfs
from wavepatch.geometry.surface import render_meshes, tsdf_to_mesh
from wavepatch.metrics.shapes import reference_matrices
from wavepatch.prior.checkpoint import load_shape_prior, read_prior_metadata
from wavepatch.prior.shape_train import fit_pca_model, sample_pca_model
from wavepatch.sampling.shape_generation import sample_coarse, tsdf_from_coarse

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "shapes" / "adrenalmnist3d_64.npz"


def _meshes(tsdf: np.ndarray) -> tuple[list, int]:
    meshes = [tsdf_to_mesh(t) for t in tsdf]
    return [m for m in meshes if m is not None], sum(m is None for m in meshes)


def _generated(path: Path, n: int, steps: int, seed: int) -> list[tuple[str, np.ndarray, dict]]:
    """The prior's rows: one draw of n coarse codes, decoded with and (wavelet space) without the detail network."""
    model, cfg = load_shape_prior(path)
    info = read_prior_metadata(path)["info"]
    t0 = time.perf_counter()
    coarse, nfe = sample_coarse(model, cfg, n, steps=steps, batch=16, seed=seed, progress=True)
    sample_s = time.perf_counter() - t0
    gen_minutes = (info.get("generator_train_seconds") or 0) / 60
    base = {"params": info.get("params"), "file_mb": path.stat().st_size / 2**20,
            "generator_steps": info.get("generator_steps")}
    rows = []
    for detail in ((True, False) if cfg.code.space == "wavelet" else (True,)):
        t1 = time.perf_counter()
        tsdf = tsdf_from_coarse(model, cfg, coarse, detail)
        seconds = sample_s + time.perf_counter() - t1
        minutes = gen_minutes + ((info.get("detail_train_seconds") or 0) / 60 if detail else 0)
        name = ("wavelet generator + detail predictor" if detail else "wavelet generator, no detail predictor") \
            if cfg.code.space == "wavelet" else f"voxel-space TSDF diffusion ({steps} levels)"
        rows.append((name, tsdf.numpy(), {**base, "nfe": nfe + (1 if detail and cfg.code.space == "wavelet" else 0),
                                          "gen_seconds_per_shape_network": seconds / n, "train_minutes": minutes}))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--wavelet", required=True, help="shape-wavelet prior checkpoint")
    ap.add_argument("--voxel", default=None, help="shape-voxel prior checkpoint (the direct-TSDF ablation)")
    ap.add_argument("--n", type=int, default=None, help="generated shapes per row (default: the test split size)")
    ap.add_argument("--voxel-n", type=int, default=None,
                    help="fewer shapes for the (slow) voxel row; the wavelet model's first as many shapes are then "
                         "scored too, for a like-for-like row")
    ap.add_argument("--voxel-steps", type=int, default=None, help="sampler levels of the voxel row (default --steps)")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--emd-points", type=int, default=128)
    ap.add_argument("--pca-variance", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="processes for the EMD assignments")
    ap.add_argument("--out", default="benchmarks/results/shapes")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    real = as_trimeshes(load_surfaces(args.data, "test"))
    n = args.n or len(real)
    truncation = read_prior_metadata(args.wavelet)["config"]["code"]["truncation"]  # the priors' own TSDF
    train_tsdf = load_tsdfs(args.data, "train", truncation)
    grid = train_tsdf.shape[1]
    sets: list[tuple[str, np.ndarray, dict]] = []
    pick = np.random.default_rng(args.seed).choice(len(train_tsdf), size=min(n, len(train_tsdf)), replace=False)
    sets.append(("training set (subset)", train_tsdf[pick], {}))
    t0 = time.perf_counter()
    mean, basis, std = fit_pca_model(torch.from_numpy(train_tsdf), args.pca_variance)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pca = sample_pca_model(mean, basis, std, n, args.seed).reshape(n, grid, grid, grid).clamp(-truncation, truncation)
    sets.append((f"PCA shape model ({basis.shape[0]} components)", pca.numpy(),
                 {"train_minutes": fit_s / 60, "gen_seconds_per_shape_network": (time.perf_counter() - t0) / n,
                  "params": int(mean.numel() + basis.numel() + std.numel())}))
    sets.extend(_generated(Path(args.wavelet), n, args.steps, args.seed))
    if args.voxel:
        vn, vsteps = args.voxel_n or n, args.voxel_steps or args.steps
        sets.extend(_generated(Path(args.voxel), vn, vsteps, args.seed))
        if vn < n:
            name, tsdf, info = sets[2]
            sets.append((f"{name}, first {vn}", tsdf[:vn], info))
    t0 = time.perf_counter()
    emd = args.emd_points or None
    reference = reference_matrices(reference_points(real, grid, args.points, args.seed), emd_points=emd,
                                   progress=True, seed=args.seed, workers=args.workers)
    print(f"reference matrices: {time.perf_counter() - t0:.0f} s")
    rows = []
    for name, tsdf, info in sets:
        t0 = time.perf_counter()
        meshes, empty = _meshes(tsdf)
        mc_s = (time.perf_counter() - t0) / len(tsdf)
        t1 = time.perf_counter()
        result, _, _ = evaluate_shapes(meshes, real, grid, args.points, emd, args.seed, progress=True,
                                       reference=reference, workers=args.workers)
        print(f"{name}: scored in {time.perf_counter() - t1:.0f} s")
        row = {"method": name, "n": len(tsdf), "empty": empty, **result, **info, "mc_seconds_per_shape": mc_s}
        rows.append(row)
        print(json.dumps(row))
        render_meshes(meshes[:8], out / f"samples_{len(rows)}.png", titles=[name[:24]] + [""] * 7,
                      views=((20.0, 30.0),), grid=(grid,) * 3)
    _write(out, rows, args)
    return 0


def _fmt(v, scale=1.0, digits=2):
    return "" if v is None else f"{scale * v:.{digits}f}"


def _write(out: Path, rows: list[dict], args) -> None:
    head = ("| method | n | empty | COV-CD % | MMD-CD ×1e3 | 1-NNA-CD % | COV-EMD % | MMD-EMD ×1e2 | 1-NNA-EMD % | "
            "train min | gen s/shape | params |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        gen_s = (r.get("gen_seconds_per_shape_network") or 0) + r["mc_seconds_per_shape"]
        lines.append(f"| {r['method']} | {r['n']} | {r['empty']} | {_fmt(r['cov_cd'], 100, 1)} | "
                     f"{_fmt(r['mmd_cd'], 1e3)} | {_fmt(r['nna_cd'], 100, 1)} | {_fmt(r.get('cov_emd'), 100, 1)} | "
                     f"{_fmt(r.get('mmd_emd'), 1e2)} | {_fmt(r.get('nna_emd'), 100, 1)} | "
                     f"{_fmt(r.get('train_minutes'), 1, 1)} | {gen_s:.3f} | {r.get('params') or ''} |")
    text = "\n".join(lines) + "\n"
    (out / "shape_table.md").write_text(text)
    (out / "shape_table.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    with open(out / "shape_table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
        w.writeheader()
        w.writerows(rows)
    print(text)


if __name__ == "__main__":
    raise SystemExit(main())
