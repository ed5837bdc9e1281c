"""``wavepatch train``, ``sample`` and ``eval-samples``: argument parsing and calls into the library.

    wavepatch train DATA... --prior whole|patch|wavelet --size N --steps S --out RUN [--resume] [architecture options]
    wavepatch train CT_SLICES... --prior ldct-metric|ldct-gan|ldct-supervised --out RUN   (cli_ldct)
        [--noisy-data lowdose|lowdose-fbp|gaussian [--noise-level L] [--wavelet-denoiser]]   (noisy scans)
    wavepatch sample [--prior CKPT | --modality ct|mri] --n K --size N --sampler heun|euler|langevin|pc --steps T
        --out DIR   (without --prior: the bundled patch prior of the modality, default ct)
        (a wavelet prior samples coarse to fine with T steps at every scale; dlg / pyramidal / blur: cli_generate)
    wavepatch eval-samples SAMPLES --real DATA... [--window LO HI] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from wavepatch.cli_generate import (
    FAST_SAMPLERS,
    add_fast_sampler_args,
    check_fast_options,
    draw_fast,
    refuse_fast_options,
)
from wavepatch.cli_ldct import LDCT_PRIORS, add_ldct_train_args, cmd_train_ldct, refuse_ldct_options
from wavepatch.cli_shape import (
    SHAPE_DEFAULTS,
    SHAPE_PRIORS,
    add_sample_shape_args,
    add_shape_train_args,
    cmd_sample_shape,
    cmd_train_shape,
    default_shape_prior,
    refuse_shape_options,
)
from wavepatch.io import save_npy, save_png, unit_to_hu
from wavepatch.io.atomic import check_not_input
from wavepatch.io.publish import check_replaceable, staged_output
from wavepatch.io.writers import save_dicom_series, save_nifti
from wavepatch.prior.checkpoint import load_blur_prior, load_prior, load_wavelet_prior, prior_kind
from wavepatch.prior.model import PATCH_MODES, PRECISIONS, make_denoiser
from wavepatch.prior.noisy_data import NOISE_KINDS
from wavepatch.prior.train import resolve_device, train
from wavepatch.prior.train_config import TrainConfig
from wavepatch.report import save_json
from wavepatch.sampling.unconditional import SAMPLERS, sample
from wavepatch.sampling.wsgm import wsgm_sample

TRAIN_DEFAULTS = TrainConfig()


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_train_parser(sub) -> None:
    d = TRAIN_DEFAULTS
    t = sub.add_parser("train", help="train a score prior (denoising score matching) on a folder of images")
    t.add_argument("data", nargs="+", help="training images: folders (DICOM series, NIfTI, PNG, .npy) or files")
    t.add_argument("--out", required=True, help="run folder (checkpoints, log, loss curve)")
    t.add_argument("--prior", choices=("whole", "patch", "patch3d", "wavelet", "pyramidal", "blur", "noise-level",
                                       *SHAPE_PRIORS, *LDCT_PRIORS),
                   default=d.prior,
                   help="whole-image UNet, PaDIS patches, patch3d (3-D patches of adjacent slices with their 3-D "
                        "position, from whole volumes resized to --depth x --size x --size; used by "
                        "reconstruct --volume --prior), WSGM (one UNet per wavelet scale), or a 3-D shape prior "
                        "(shape-wavelet: Hui et al.'s coarse generator + detail predictor on TSDF wavelet "
                        "coefficients; shape-voxel: diffusion on the TSDF itself) from .npz/.npy masks or meshes; "
                        "pyramidal: a patch prior trained at several resolutions (sample --sampler pyramidal); "
                        "blur: blur diffusion (coarse-to-fine forward process in the DCT basis); noise-level: "
                        "the noise-level classifier of sample --sampler dlg; "
                        "ldct-metric / ldct-gan / ldct-supervised: the low-dose CT denoiser of --method "
                        "ldct-metric (Jung et al.'s patch-wise metric learning, its no-metric ablation, and a "
                        "supervised reference)")
    t.add_argument("--size", type=int, default=None, help=f"training images resized to N x N (default {d.size})")
    t.add_argument("--depth", type=int, default=None,
                   help="patch3d: slices per training volume after resizing along z (default: as acquired; all "
                        "volumes must then have the same count)")
    t.add_argument("--patch-depth", type=int, default=None,
                   help="patch3d: slices per patch (DiffusionBlend's slabs; in-plane sides from --patch-sizes; "
                        "default: cubic patches)")
    t.add_argument("--window", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="HU window mapped to [0, 1] (CT default -1000 1000; others: 0 to the 99.5th percentile)")
    t.add_argument("--axis", type=int, default=d.axis, help="NIfTI slicing axis")
    t.add_argument("--modality", choices=("ct", "mri", "other"), default=None,
                   help="stored in the prior (default: ct for DICOM data or an HU window, else other)")
    t.add_argument("--levels", type=int, default=None,
                   help=f"wavelet prior / wavelet denoiser: number of wavelet scales J (default {d.levels}); "
                        f"shape-wavelet: DWT levels (default {SHAPE_DEFAULTS.levels})")
    t.add_argument("--wavelet", default=None,
                   help=f"wavelet prior / wavelet denoiser: an orthogonal pywt wavelet (haar, db2, ...; default "
                        f"{d.wavelet}); shape-wavelet: any pywt wavelet (default {SHAPE_DEFAULTS.wavelet})")
    t.add_argument("--detail-crop", type=int, default=d.detail_crop,
                   help="wavelet prior: train the detail networks on random crops of this side of their bands "
                        "(the same cost per step at every image size; default: whole bands)")
    t.add_argument("--patch-sizes", type=_ints, default=d.patch_sizes, help="e.g. 16,32,64")
    t.add_argument("--patch-probs", type=_floats, default=d.patch_probs, help="e.g. 0.2,0.3,0.5")
    t.add_argument("--patch-size", type=int, default=None, help="default inference patch size stored in the prior")
    t.add_argument("--pad", type=int, default=None, help="zero border patches may hang over (default max patch)")
    t.add_argument("--pyramid", type=_ints, default=None,
                   help=f"pyramidal: downsampling factors trained on (default {','.join(map(str, d.pyramid))})")
    t.add_argument("--pyramid-probs", type=_floats, default=None,
                   help="pyramidal: probability of each factor per step (default: equal)")
    t.add_argument("--channels", type=int, default=None,
                   help=f"UNet base width (default {d.base_channels}; shape priors {SHAPE_DEFAULTS.base_channels})")
    t.add_argument("--channel-mult", type=_ints, default=None,
                   help=f"width multipliers per level (default {','.join(map(str, d.channel_mult))})")
    t.add_argument("--blocks", type=int, default=None, help=f"residual blocks per level (default {d.num_blocks})")
    t.add_argument("--no-attention", action="store_true", help="no self-attention in the bottleneck")
    t.add_argument("--dropout", type=float, default=d.dropout)
    t.add_argument("--batch", type=int, default=None,
                   help=f"images (whole), largest patches or shapes per step (default {d.batch})")
    t.add_argument("--steps", type=int, default=None,
                   help=f"default {d.steps}; shape priors: generator steps, default {SHAPE_DEFAULTS.steps}")
    t.add_argument("--lr", type=float, default=None, help=f"default {d.lr}")
    t.add_argument("--warmup", type=int, default=d.warmup)
    t.add_argument("--ema-halflife", type=float, default=None,
                   help=f"in steps (default {d.ema_halflife}; shape priors {SHAPE_DEFAULTS.ema_halflife})")
    t.add_argument("--grad-clip", type=float, default=d.grad_clip)
    t.add_argument("--no-flip", action="store_true", help="no left-right flip augmentation")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--checkpoint-every", type=int, default=None,
                   help=f"steps (default {d.checkpoint_every}; shape priors {SHAPE_DEFAULTS.checkpoint_every})")
    t.add_argument("--log-every", type=int, default=d.log_every)
    t.add_argument("--minutes", type=float, default=None, help="stop after this wall time (checkpointed)")
    t.add_argument("--noisy-data", choices=NOISE_KINDS, default=None,
                   help="train on simulated noisy scans of the slices: low-dose CT noise inserted into them, the "
                        "low-dose FBP image itself (noise + FBP blur), or white noise")
    t.add_argument("--noise-level", type=float, default=None,
                   help="lowdose*: I0 photons per detector bin (default 1e4); gaussian: std on the unit image "
                        "(default 0.05)")
    t.add_argument("--wavelet-denoiser", action="store_true",
                   help="with --noisy-data and --prior whole: train jointly with a wavelet denoising sub-network "
                        "(Wu et al.); --levels and --wavelet set its transform")
    t.add_argument("--feedback", type=float, default=d.feedback,
                   help="wavelet denoiser: weight of the score model's reconstructions in its loss")
    t.add_argument("--feedback-after", type=int, default=d.feedback_after,
                   help="wavelet denoiser: steps over which that weight ramps up from 0")
    t.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1 ...")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--init", default=None,
                   help="start from this prior checkpoint's weights (same architecture; fine-tuning)")
    t.add_argument("--no-progress", action="store_true")
    add_shape_train_args(t)
    add_ldct_train_args(t, _floats)


_IMAGE_DEFAULTS = {"size": "size", "levels": "levels", "wavelet": "wavelet", "channels": "base_channels",
                   "channel_mult": "channel_mult", "blocks": "num_blocks", "batch": "batch", "steps": "steps",
                   "lr": "lr", "ema_halflife": "ema_halflife", "checkpoint_every": "checkpoint_every"}


def cmd_train(args) -> int:
    if args.prior in LDCT_PRIORS:
        return cmd_train_ldct(args)
    refuse_ldct_options(args)
    if args.prior in SHAPE_PRIORS:
        return cmd_train_shape(args)
    refuse_shape_options(args)
    for name, field_name in _IMAGE_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, getattr(TRAIN_DEFAULTS, field_name))
    window = tuple(args.window) if args.window else None
    dims, size = 2, args.size
    if args.prior == "patch3d":
        dims, size = 3, (args.depth or _slice_count(args.data, args.axis), args.size, args.size)
    elif args.depth is not None or args.patch_depth is not None:
        raise ValueError(f"{'--depth' if args.depth is not None else '--patch-depth'} is for --prior patch3d")
    if args.prior != "pyramidal" and (args.pyramid is not None or args.pyramid_probs is not None):
        raise ValueError(f"{'--pyramid' if args.pyramid is not None else '--pyramid-probs'} is for --prior pyramidal")
    cfg = TrainConfig(
        data=[str(p) for p in args.data], out=args.out, prior="patch" if dims == 3 else args.prior, size=size,
        dims=dims, patch_depth=args.patch_depth,
        window=window if window is not None else TRAIN_DEFAULTS.window, axis=args.axis,
        patch_sizes=args.patch_sizes, patch_probs=args.patch_probs, patch_size=args.patch_size, pad=args.pad,
        pyramid=args.pyramid or TRAIN_DEFAULTS.pyramid, pyramid_probs=args.pyramid_probs,
        levels=args.levels, wavelet=args.wavelet, detail_crop=args.detail_crop,
        base_channels=args.channels, channel_mult=args.channel_mult, num_blocks=args.blocks,
        attention=not args.no_attention, dropout=args.dropout, batch=args.batch, steps=args.steps, lr=args.lr,
        warmup=args.warmup, ema_halflife=args.ema_halflife, grad_clip=args.grad_clip, flip=not args.no_flip,
        seed=args.seed, init=args.init, checkpoint_every=args.checkpoint_every, log_every=args.log_every,
        minutes=args.minutes,
        device=args.device, noisy_data=args.noisy_data, noise_level=args.noise_level,
        wavelet_denoiser=args.wavelet_denoiser, feedback=args.feedback, feedback_after=args.feedback_after,
    )
    ct_data = _looks_like_ct(args.data)
    if window is None and not ct_data:
        cfg.window = None
    if args.modality is not None:
        cfg.modality = args.modality
    elif cfg.window is not None and ct_data:
        cfg.modality = "ct"
    check_not_input(args.out, args.data)
    t0 = time.time()
    path = train(cfg, resume=args.resume, progress=not args.no_progress)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    info = json.loads(path.with_suffix(".json").read_text())["info"]
    print(f"trained {cfg.prior} prior to step {info['step']} in {time.time() - t0:.0f} s "
          f"(loss {info['final_loss_mean_last_50_logged']:.4f}) -> {path}")
    if "noisy_data" in info:
        nd = info["noisy_data"]
        print(f"  on {nd['kind']} noisy scans (level {nd['level']:g}): {nd['psnr_vs_clean']:.2f} dB against the "
              f"clean slices{'; wavelet denoiser thresholds in prior.json' if cfg.wavelet_denoiser else ''}")
    return 0


def _slice_count(paths, axis: int) -> int:
    """The slice count shared by every volume in ``paths`` (patch3d without --depth); ValueError if they differ."""
    from wavepatch.io.dataset import volume_slice_counts

    counts = set(volume_slice_counts(paths, axis))
    if len(counts) != 1:
        raise ValueError(f"the training volumes have {sorted(counts)} slices: give --depth to resize them to one count")
    return counts.pop()


def _looks_like_ct(paths) -> bool:
    """Default window: HU for DICOM data, the percentile normalisation for anything else (NIfTI MRI, PNG, JPEG)."""
    from wavepatch.io.image_stack import file_suffix as _suffix

    for p in map(Path, paths):
        files = [p] if p.is_file() else [f for f in p.iterdir() if f.is_file()]
        if any(_suffix(f) in (".dcm", "") for f in files):
            return True
    return False


SAMPLE_MAX_SIZE = 4096  # largest --size (pixels per side)
SAMPLE_MAX_COUNT = 10_000  # largest --n, --batch and --steps


def add_sample_parser(sub) -> None:
    s = sub.add_parser("sample", help="generate images from a trained prior")
    s.add_argument("--prior", default=None,
                   help="prior checkpoint (.safetensors; default: the bundled patch prior of --modality)")
    s.add_argument("--modality", choices=("ct", "mri", "shape"), default="ct",
                   help="without --prior: sample the bundled prior of this modality (default ct; shape: the "
                        "bundled adrenal-gland shape prior)")
    s.add_argument("--out", required=True, help="output folder (replaced as a whole when the run succeeds)")
    s.add_argument("--n", type=int, default=4, help=f"number of images (at most {SAMPLE_MAX_COUNT})")
    s.add_argument("--size", type=int, default=None,
                   help=f"image side, 8 to {SAMPLE_MAX_SIZE} (default: the prior's training size)")
    s.add_argument("--sampler", choices=(*SAMPLERS, *FAST_SAMPLERS), default=None,
                   help="heun (default), euler, langevin, pc; dlg (Denoising Langevin Gibbs, needs --classifier), "
                        "pyramidal (coarse to fine, a pyramidal prior); blur (a blur prior's own, its default)")
    s.add_argument("--steps", type=int, default=None,
                   help="noise levels (Heun: 2 NFE per level; default 32); for a wavelet prior, per scale; dlg: "
                        "finish levels per output (default 4); pyramidal: levels over all resolutions (default "
                        "24); blur: reverse steps = NFE (default 50)")
    s.add_argument("--sigma-min", type=float, default=0.002)
    s.add_argument("--sigma-max", type=float, default=80.0,
                   help="largest noise level (a wavelet prior's are in units of its unit-variance coefficients)")
    s.add_argument("--patch-mode", choices=PATCH_MODES, default="padis", help="patch priors: how patches combine")
    s.add_argument("--patch-size", type=int, default=None, help="patch priors: patch side (default: the prior's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch", type=int, default=4, help="images sampled at once")
    s.add_argument("--device", default="auto")
    s.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="network arithmetic: auto = bf16 where the device computes it natively, else fp32")
    s.add_argument("--dicom", action="store_true", help="also write a DICOM series in HU (CT priors)")
    s.add_argument("--no-progress", action="store_true")
    add_sample_shape_args(s)
    add_fast_sampler_args(s)


def _check_sample_args(args) -> None:
    """ValueError naming the first out-of-range numeric option of ``wavepatch sample``."""
    for name, value in (("--n", args.n), ("--steps", args.steps), ("--batch", args.batch)):
        if value is not None and not 1 <= value <= SAMPLE_MAX_COUNT:
            raise ValueError(f"{name} must be in [1, {SAMPLE_MAX_COUNT}], got {value}")
    if args.size is not None and not 8 <= args.size <= SAMPLE_MAX_SIZE:
        raise ValueError(f"--size must be in [8, {SAMPLE_MAX_SIZE}], got {args.size}")
    if args.patch_size is not None and not 1 <= args.patch_size <= SAMPLE_MAX_SIZE:
        raise ValueError(f"--patch-size must be in [1, {SAMPLE_MAX_SIZE}], got {args.patch_size}")
    if not (np.isfinite(args.sigma_min) and np.isfinite(args.sigma_max) and 0 < args.sigma_min < args.sigma_max):
        raise ValueError(f"need finite 0 < --sigma-min < --sigma-max, got {args.sigma_min} and {args.sigma_max}")
    if args.seed < 0:
        raise ValueError(f"--seed must be at least 0, got {args.seed}")


def _sample_prior(args) -> Path:
    """--prior, or the bundled patch prior of --modality (printed, so the user knows which was used)."""
    if args.prior is not None:
        return Path(args.prior)
    from wavepatch.learned import default_prior

    path = default_shape_prior() if args.modality == "shape" else default_prior(args.modality, "patch")
    print(f"no --prior given: using the bundled {args.modality} prior {path.stem} ({path})")
    return path


def _draw_samples(args, model, cfg, kind: str, sampler: str, size: int,
                  device) -> tuple[np.ndarray, float, dict | None]:
    """(images (n, size, size) in [0, 1], NFE per image, sampler info or None); ValueError if any is not finite."""
    gen = torch.Generator().manual_seed(args.seed)
    denoise = None
    if kind in ("whole", "patch"):
        denoise = make_denoiser(model, cfg, mode=args.patch_mode, patch_size=args.patch_size, generator=gen,
                                precision=args.precision)
    batches, calls, extra = [], 0.0, None  # calls: network evaluations summed over the images
    for start in tqdm(range(0, args.n, args.batch), disable=args.no_progress, desc="batches"):
        b = min(args.batch, args.n - start)
        if kind == "wavelet":
            x, extra = wsgm_sample(model, b, size, sampler, args.steps, args.sigma_min, args.sigma_max,
                                   generator=gen, device=device, progress=not args.no_progress)
            nfe = extra["nfe"]
        elif sampler in FAST_SAMPLERS:
            x, nfe, extra = draw_fast(args, sampler, model, cfg, denoise, b, size, gen, device)
        else:
            x, nfe = sample(denoise, (b, 1, size, size), sampler, args.steps, args.sigma_min, args.sigma_max,
                            generator=gen, device=device, progress=not args.no_progress)
        calls += nfe * b
        x = x.float().cpu()
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
            raise ValueError(f"sampling produced NaN or infinite values ({bad} of the {b} images of batch "
                             f"{start // args.batch + 1}); the prior may hold non-finite weights; nothing was "
                             "written")
        batches.append(x)
    return torch.cat(batches)[:, 0].clamp(0, 1).numpy(), calls / args.n, extra


_LOADERS = {"wavelet": load_wavelet_prior, "blur": load_blur_prior}


def cmd_sample(args) -> int:
    _check_sample_args(args)
    ckpt = _sample_prior(args)
    kind = prior_kind(ckpt)  # a missing or foreign file is refused first, from its header
    if kind == "shape":
        if args.sampler in FAST_SAMPLERS:
            raise ValueError(f"--sampler {args.sampler} does not apply to shape priors")
        refuse_fast_options(args, "shape priors")
        args.sampler, args.steps = args.sampler or "heun", args.steps or 32
        return cmd_sample_shape(args, ckpt)
    if args.no_detail or args.mesh_format is not None:
        raise ValueError(f"{'--no-detail' if args.no_detail else '--mesh-format'} applies to shape priors only")
    if kind == "noise-level":
        raise ValueError(f"{ckpt} is a noise-level classifier, not a generator: give it as --classifier with "
                         "--sampler dlg")
    out = Path(args.out)
    check_replaceable(out, [ckpt] + ([Path(args.classifier)] if args.classifier else []))
    device = resolve_device(args.device)
    model, cfg = _LOADERS.get(kind, load_prior)(ckpt, device=device)
    if kind not in _LOADERS:
        kind = cfg.kind
    sampler = check_fast_options(args, kind, cfg)
    if args.dicom and not cfg.is_ct:
        raise ValueError("--dicom writes CT in HU; this prior was not trained on CT")
    size = args.size or cfg.image_size
    t0 = time.perf_counter()
    imgs, nfe, extra = _draw_samples(args, model, cfg, kind, sampler, size, device)
    seconds = time.perf_counter() - t0
    info = {
        "prior": str(ckpt), "kind": kind, "n": args.n, "size": size, "sampler": sampler,
        "steps": args.steps, "nfe_per_image": nfe, "seconds": seconds, "seconds_per_image": seconds / args.n,
        "patch_mode": args.patch_mode if kind == "patch" else None, "seed": args.seed, "device": str(device),
    }
    if kind == "wavelet":
        info.update(levels=cfg.levels, steps_per_scale=args.steps, nfe_per_scale=extra["per_scale"],
                    nfe_pixel_weighted=extra["nfe_pixel_weighted"])
    elif extra is not None:
        info["sampler_info"] = extra
        if "nfe_pixel_weighted" in extra:
            info["nfe_pixel_weighted"] = extra["nfe_pixel_weighted"]
        if sampler == "dlg":
            info["classifier"] = str(args.classifier)
    with staged_output(out, [ckpt], command="sample") as stage:
        info["files"] = _write_samples(stage, imgs, cfg, args.dicom)
        save_json(stage / "sample_info.json", info)
    where = f" over {cfg.levels + 1} scales" if kind == "wavelet" else ""
    print(f"{args.n} samples {size}x{size} ({kind} prior, {sampler}, {nfe:g} NFE per image{where}) in "
          f"{seconds:.1f} s -> {out}")
    return 0


def _write_samples(out: Path, imgs: np.ndarray, cfg, dicom: bool) -> list[str]:
    """Into the (staged) folder ``out``: samples.npy (n, N, N) in [0, 1], grid.png and NIfTI (in HU for a CT
    prior, with a DICOM series if asked) -> names written."""
    save_npy(out / "samples.npy", imgs)
    save_png(out / "grid.png", _grid(imgs))
    written = ["samples.npy", "grid.png"]
    if cfg.is_ct and cfg.window is not None:
        hu = np.asarray(unit_to_hu(imgs, *cfg.window), dtype=np.float32)
        save_nifti(out / "samples_hu.nii.gz", hu)
        written.append("samples_hu.nii.gz")
        if dicom:
            save_dicom_series(out / "samples_dicom", hu, series_description="wavepatch samples")
            written.append("samples_dicom/")
    else:
        save_nifti(out / "samples.nii.gz", imgs)
        written.append("samples.nii.gz")
    return written


def _grid(imgs: np.ndarray, pad: int = 2) -> np.ndarray:
    """(K, N, N) in [0, 1] -> one image of ceil(sqrt(K)) columns with white gutters."""
    k, n, _ = imgs.shape
    cols = int(np.ceil(np.sqrt(k)))
    rows = int(np.ceil(k / cols))
    grid = np.ones((rows * (n + pad) - pad, cols * (n + pad) - pad), dtype=np.float32)
    for i, img in enumerate(imgs):
        r, c = divmod(i, cols)
        grid[r * (n + pad):r * (n + pad) + n, c * (n + pad):c * (n + pad) + n] = img
    return grid


def add_eval_parser(sub) -> None:
    e = sub.add_parser("eval-samples", help="offline quality figures of generated images against real ones")
    e.add_argument("samples", help="a `wavepatch sample` output folder or a samples .npy (K, N, N) in [0, 1]")
    e.add_argument("--real", required=True, nargs="+", help="real images (folder/files the data layer reads)")
    e.add_argument("--window", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="HU window of both sets (CT default -1000 1000; histogram distance then in HU)")
    e.add_argument("--train", nargs="+", default=None,
                   help="the model's training images: the baseline is fitted on them and they are scored too")
    e.add_argument("--axis", type=int, default=2, help="NIfTI slicing axis of --real / --train")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", default=None, help="also write the figures to this JSON file")


def _load_generated(path: Path) -> np.ndarray:
    if path.is_dir() and (path / "samples.npy").exists():
        path = path / "samples.npy"
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        if arr.ndim == 4 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
            raise ValueError(f"{path}: expected (K, N, N) samples, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{path}: samples contain NaN or infinite values")
        return arr.astype(np.float32)
    raise ValueError(f"{path}: give a `wavepatch sample` folder or a .npy of samples")


def cmd_eval(args) -> int:
    from wavepatch.io import SliceDataset
    from wavepatch.metrics.generation import generation_report

    window = tuple(args.window) if args.window else (TRAIN_DEFAULTS.window if _looks_like_ct(args.real) else None)
    gen = _load_generated(Path(args.samples))
    real = SliceDataset(args.real, size=gen.shape[-1], window=window, axis=args.axis).images[:, 0].numpy()
    train = None
    if args.train:
        train = SliceDataset(args.train, size=gen.shape[-1], window=window, axis=args.axis).images[:, 0].numpy()
    rep = generation_report(gen, real, window, seed=args.seed, train=train)
    unit = rep["histogram_unit"]
    print(f"{len(gen)} generated vs {len(real)} real images, {gen.shape[-1]}x{gen.shape[-1]} (baseline: Gaussian "
          f"noise with the mean and power spectrum of the {rep['baseline_fitted_on']})")
    print(f"| set | SWD x1e3 (mean) | SWD per level, fine -> coarse | histogram W1 ({unit}) | histogram TV "
          "| log10 spectrum error | 1-NNA, features (50 % = indistinguishable) |")
    print("|---|---|---|---|---|---|---|")
    for name in ("generated", "baseline", "training data"):
        if name not in rep:
            continue
        r = rep[name]
        levels = " / ".join(f"{v:.0f}" for v in r["swd_per_level"])
        nna = "" if r["nna_features"] is None else f"{100 * r['nna_features']:.1f} %"
        print(f"| {name} | {r['swd_mean']:.1f} | {levels} | {r['histogram_w1']:.3g} | {r['histogram_tv']:.3f} "
              f"| {r['spectrum_log10_error']:.3f} | {nna} |")
    if args.out:
        save_json(args.out, {"samples": str(args.samples), "real": [str(p) for p in args.real],
                             "train": [str(p) for p in args.train] if args.train else None, **rep})
    return 0
