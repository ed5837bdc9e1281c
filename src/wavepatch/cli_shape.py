"""The 3-D shape commands: ``train --prior shape-wavelet|shape-voxel``, ``sample`` with a shape prior, ``eval-shapes``.

``cli_prior`` hands a shape prior's train and sample over to this module; ``eval-shapes`` is its own sub-command.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from wavepatch.geometry.shape_data import load_surfaces
from wavepatch.geometry.surface import MESH_FORMATS, export_mesh, render_meshes, sample_surface, tsdf_to_mesh, unit_cube
from wavepatch.io.atomic import check_not_input
from wavepatch.io.publish import check_replaceable, staged_output
from wavepatch.io.shape_files import ShapeFileError
from wavepatch.metrics.shapes import chamfer_matrix, nearest_neighbours, set_metrics
from wavepatch.prior.checkpoint import load_shape_prior
from wavepatch.prior.shape_train import ShapeTrainConfig, train_shape_prior
from wavepatch.prior.train import resolve_device
from wavepatch.report import save_json
from wavepatch.resources import prior_path
from wavepatch.sampling.shape_generation import generate_tsdf

SHAPE_PRIORS = {"shape-wavelet": "wavelet", "shape-voxel": "voxel"}
SHAPE_DEFAULTS = ShapeTrainConfig()
BUNDLED_SHAPE_PRIOR = "shape_adrenal64"
# options of image priors a shape prior refuses when given (their argparse defaults are None / False)
IMAGE_ONLY = {"window": "--window", "modality": "--modality", "patch_size": "--patch-size", "pad": "--pad",
              "detail_crop": "--detail-crop", "noisy_data": "--noisy-data", "noise_level": "--noise-level",
              "wavelet_denoiser": "--wavelet-denoiser", "size": "--size"}
SHAPE_ONLY = {"truncation": "--truncation", "grid": "--grid", "detail_steps": "--detail-steps",
              "detail_batch": "--detail-batch", "detail_lr": "--detail-lr"}


def add_shape_train_args(t) -> None:
    """The train options only shape priors have (default None: the ShapeTrainConfig default)."""
    d = SHAPE_DEFAULTS
    t.add_argument("--truncation", type=float, default=None,
                   help="shape priors: TSDF truncation in voxels (default 0.1 of the grid side)")
    t.add_argument("--grid", type=int, default=None, help="shape priors from a mesh folder: voxels per side")
    t.add_argument("--detail-steps", type=int, default=None,
                   help=f"shape-wavelet: detail predictor steps (default {d.detail_steps})")
    t.add_argument("--detail-batch", type=int, default=None, help=f"shape-wavelet: (default {d.detail_batch})")
    t.add_argument("--detail-lr", type=float, default=None, help=f"shape-wavelet: (default {d.detail_lr})")


def refuse_shape_options(args) -> None:
    """ValueError if an image-prior training run was given a shape-only option."""
    given = [flag for name, flag in SHAPE_ONLY.items() if getattr(args, name, None) is not None]
    if given:
        raise ValueError(f"{given[0]} applies to shape priors (--prior shape-wavelet or shape-voxel) only")


def _pick(value, default):
    return default if value is None else value


def cmd_train_shape(args) -> int:
    given = [flag for name, flag in IMAGE_ONLY.items() if getattr(args, name, None) not in (None, False)]
    if given:
        raise ValueError(f"{given[0]} does not apply to a shape prior (--prior {args.prior})")
    if len(args.data) != 1:
        raise ValueError("a shape prior trains on one .npz/.npy mask file or one folder of meshes")
    d = SHAPE_DEFAULTS
    cfg = ShapeTrainConfig(
        data=str(args.data[0]), out=args.out, space=SHAPE_PRIORS[args.prior], truncation=args.truncation,
        wavelet=_pick(args.wavelet, d.wavelet), levels=_pick(args.levels, d.levels), grid=args.grid,
        base_channels=_pick(args.channels, d.base_channels), channel_mult=_pick(args.channel_mult, d.channel_mult),
        num_blocks=_pick(args.blocks, d.num_blocks), attention=not args.no_attention,
        batch=_pick(args.batch, d.batch), steps=_pick(args.steps, d.steps), lr=_pick(args.lr, d.lr),
        detail_batch=_pick(args.detail_batch, d.detail_batch), detail_steps=_pick(args.detail_steps, d.detail_steps),
        detail_lr=_pick(args.detail_lr, d.detail_lr), ema_halflife=_pick(args.ema_halflife, d.ema_halflife),
        checkpoint_every=_pick(args.checkpoint_every, d.checkpoint_every), minutes=args.minutes, seed=args.seed,
        device=args.device)
    check_not_input(args.out, args.data)
    t0 = time.time()
    path = train_shape_prior(cfg, resume=args.resume, progress=not args.no_progress)
    print(f"trained {args.prior} prior in {time.time() - t0:.0f} s -> {path}")
    return 0


def default_shape_prior() -> Path:
    return prior_path(BUNDLED_SHAPE_PRIOR)


def cmd_sample_shape(args, ckpt: Path) -> int:
    """``wavepatch sample`` with a shape prior: tsdf.npy, meshes/, grid.png, sample_info.json."""
    if args.size is not None or args.dicom or args.patch_size is not None:
        flag = "--size" if args.size is not None else "--dicom" if args.dicom else "--patch-size"
        raise ValueError(f"{flag} does not apply to a shape prior (it samples on its training grid)")
    out = Path(args.out)
    check_replaceable(out, [ckpt])
    device = resolve_device(args.device)
    model, cfg = load_shape_prior(ckpt, device=device)
    t0 = time.perf_counter()
    tsdf, nfe = generate_tsdf(model, cfg, args.n, steps=args.steps, sampler=args.sampler, batch=args.batch,
                              seed=args.seed, detail=not args.no_detail, device=device,
                              progress=not args.no_progress)
    network_seconds = time.perf_counter() - t0
    if not torch.isfinite(tsdf).all():
        raise ValueError("sampling produced NaN or infinite values; the prior may hold non-finite weights; nothing "
                         "was written")
    meshes = [tsdf_to_mesh(t) for t in tqdm(tsdf.numpy(), desc="marching cubes", disable=args.no_progress)]
    seconds = time.perf_counter() - t0
    empty = [i for i, m in enumerate(meshes) if m is None]
    fmt = args.mesh_format or "obj"
    info = {"prior": str(ckpt), "kind": "shape", "space": cfg.code.space, "detail": not args.no_detail,
            "n": args.n, "grid": cfg.code.grid, "truncation_voxels": cfg.code.truncation, "sampler": args.sampler,
            "steps": args.steps, "nfe_per_shape": nfe, "seconds": seconds, "seconds_per_shape": seconds / args.n,
            "network_seconds": network_seconds, "empty_shapes": empty, "mesh_format": fmt, "seed": args.seed,
            "device": str(device)}
    with staged_output(out, [ckpt], command="sample") as stage:
        np.save(stage / "tsdf.npy", tsdf.numpy().astype(np.float32))
        (stage / "meshes").mkdir()
        for i, mesh in enumerate(meshes):
            if mesh is not None:
                export_mesh(mesh, stage / "meshes" / f"shape_{i:04d}.{fmt}")
        shown = meshes[: min(len(meshes), 8)]
        render_meshes(shown, stage / "grid.png", titles=[f"#{i}" for i in range(len(shown))],
                      grid=(cfg.code.grid,) * 3)
        save_json(stage / "sample_info.json", info)
    print(f"{args.n} shapes {cfg.code.grid}^3 ({cfg.code.space} shape prior, {nfe} NFE, "
          f"{seconds / args.n:.2f} s per shape{f', {len(empty)} empty' if empty else ''}) -> {out}")
    return 0


def add_sample_shape_args(s) -> None:
    s.add_argument("--no-detail", action="store_true",
                   help="shape-wavelet priors: keep the detail bands at zero (the 'without detail predictor' "
                        "ablation)")
    s.add_argument("--mesh-format", choices=MESH_FORMATS[:3], default=None,
                   help="shape priors: mesh file format (default obj)")


def add_eval_shapes_parser(sub) -> None:
    e = sub.add_parser("eval-shapes", help="COV / MMD / 1-NNA (Chamfer and EMD) of generated shapes against real "
                       "ones, and novelty against the training shapes")
    e.add_argument("generated", help="a `wavepatch sample` folder of a shape prior (tsdf.npy), or a .npy of TSDFs")
    e.add_argument("--real", required=True, help="reference shapes: .npz/.npy masks or a folder of meshes")
    e.add_argument("--split", default="test", help="split of an .npz --real (default test)")
    e.add_argument("--train", default=None, help="training shapes (.npz train split, .npy or meshes): novelty")
    e.add_argument("--grid", type=int, default=None, help="grid of mesh folders (default: the generated grid)")
    e.add_argument("--points", type=int, default=1024,
                   help="surface points per shape for the Chamfer distance (default 1024; PointFlow uses 2048)")
    e.add_argument("--emd-points", type=int, default=128,
                   help="points per shape for the exact EMD, a random subset (default 128; 0: skip)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--workers", type=int, default=1, help="processes for the EMD assignments (default 1)")
    e.add_argument("--out", default=None, help="folder for metrics.json and novelty.png (default: print only)")
    e.add_argument("--no-progress", action="store_true")


def _generated_tsdf(path: Path) -> np.ndarray:
    file = path / "tsdf.npy" if path.is_dir() else path
    if not file.is_file():
        raise ShapeFileError(f"{file} does not exist (give a `wavepatch sample` folder of a shape prior or a .npy)")
    try:
        tsdf = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ShapeFileError(f"{file} is not a readable .npy array ({exc})") from None
    if tsdf.ndim != 4 or len(set(tsdf.shape[1:])) != 1 or not np.isfinite(tsdf).all():
        raise ShapeFileError(f"{file}: TSDFs must be finite (N, G, G, G), got shape {tsdf.shape}")
    return tsdf


def shape_points(meshes: list, count: int, grid: int, seed: int) -> torch.Tensor:
    """(N, count, 3) surface points of each mesh (voxel coordinates of a grid^3 grid) in the unit cube."""
    pts = [unit_cube(sample_surface(m, count, seed=seed + i), (grid,) * 3) for i, m in enumerate(meshes)]
    return torch.from_numpy(np.stack(pts))


def as_trimeshes(surfaces: list) -> list:
    import trimesh

    return [trimesh.Trimesh(v, f, process=False) for v, f in surfaces]


def reference_points(real: list, grid: int, points: int, seed: int) -> torch.Tensor:
    """Surface points of the reference meshes, as :func:`evaluate_shapes` draws them."""
    return shape_points(real, points, grid, seed + 10**6)


def evaluate_shapes(generated: list, real: list, grid: int, points: int = 1024, emd_points: int | None = 128,
                    seed: int = 0, train: list | None = None, progress: bool = True,
                    reference: dict | None = None, workers: int = 1) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The seed's Table 1 metrics of ``generated`` meshes against ``real`` ones (both trimesh, voxel coordinates
    of a grid^3 grid), plus novelty against ``train`` meshes; -> (metrics, nearest training index and its CD per
    generated shape (empty tensors without ``train``)). ``reference``: ``reference_matrices`` of
    :func:`reference_points` (same points, emd_points, seed), reused when several sets are scored."""
    gen_pts = shape_points(generated, points, grid, seed)
    ref_pts = reference["ref"] if reference is not None else reference_points(real, grid, points, seed)
    result = set_metrics(gen_pts, ref_pts, emd_points=emd_points, progress=progress, seed=seed, reference=reference,
                         workers=workers)
    nearest = best = torch.empty(0)
    if train is not None:
        d = chamfer_matrix(gen_pts, shape_points(train, points, grid, seed + 2 * 10**6), progress=progress)
        nearest, best = nearest_neighbours(d), d.min(1).values
        result.update(novelty_cd_mean=float(best.mean()), novelty_cd_median=float(best.median()), n_train=len(train))
    return result, nearest, best


def cmd_eval_shapes(args) -> int:
    if args.points < 16 or args.emd_points < 0 or not 1 <= args.workers <= 64:
        raise ValueError("--points must be at least 16, --emd-points at least 0 and --workers in [1, 64]")
    progress = not args.no_progress
    tsdf = _generated_tsdf(Path(args.generated))
    grid = tsdf.shape[1]
    meshes = [tsdf_to_mesh(t) for t in tqdm(tsdf, desc="marching cubes", disable=not progress)]
    empty = sum(m is None for m in meshes)
    meshes = [m for m in meshes if m is not None]
    if not meshes:
        raise ValueError(f"all {len(tsdf)} generated shapes are empty (no zero crossing)")
    real = as_trimeshes(load_surfaces(args.real, args.split, args.grid or grid, progress))
    train_meshes = None
    if args.train is not None:
        train_meshes = as_trimeshes(load_surfaces(args.train, "train", args.grid or grid, progress))
    result, nearest, best = evaluate_shapes(meshes, real, grid, args.points, args.emd_points or None, args.seed,
                                            train_meshes, progress, workers=args.workers)
    result.update(empty_generated=empty, grid=grid)
    _print_metrics(result)
    if args.out is not None:
        out = Path(args.out)
        check_not_input(out, [args.generated, args.real] + ([args.train] if args.train else []))
        check_replaceable(out, [Path(args.generated)])
        with staged_output(out, [Path(args.generated)], command="eval-shapes") as stage:
            save_json(stage / "metrics.json", result)
            if train_meshes is not None:
                k = min(6, len(meshes))
                render_meshes(meshes[:k] + [train_meshes[int(j)] for j in nearest[:k]], stage / "novelty.png",
                              titles=[f"generated {i}" for i in range(k)] +
                              [f"nearest train, CD {1e3 * float(best[i]):.2f}e-3" for i in range(k)],
                              views=((20.0, 30.0), (20.0, 120.0)), grid=(grid,) * 3, columns=k)
    return 0


def _print_metrics(r: dict) -> None:
    print(f"{r['n_generated']} generated (+{r['empty_generated']} empty) vs {r['n_reference']} reference shapes, "
          f"{r['points_cd']} points (CD), {r['points_emd']} points (EMD); unit-cube coordinates")
    print(f"  CD : COV {100 * r['cov_cd']:.1f} %  MMD {1e3 * r['mmd_cd']:.3f} (x1e-3)  1-NNA {100 * r['nna_cd']:.1f} %")
    if r.get("cov_emd") is not None:
        print(f"  EMD: COV {100 * r['cov_emd']:.1f} %  MMD {1e2 * r['mmd_emd']:.3f} (x1e-2)  "
              f"1-NNA {100 * r['nna_emd']:.1f} %")
    if "novelty_cd_mean" in r:
        print(f"  novelty: CD to the nearest of {r['n_train']} training shapes: mean "
              f"{1e3 * r['novelty_cd_mean']:.3f}e-3, median {1e3 * r['novelty_cd_median']:.3f}e-3")
