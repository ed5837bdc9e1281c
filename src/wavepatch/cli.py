"""The ``wavepatch`` command. It parses arguments and calls the library; nothing else lives here.

    wavepatch reconstruct INPUT --task TASK [task options] --method METHOD [--size N] [--seed S] --out DIR
    wavepatch train DATA... --prior whole|patch|wavelet --out RUN   (train/sample/eval-samples: cli_prior)
    wavepatch sample --prior CKPT --n K --sampler S --out DIR
    wavepatch eval-samples SAMPLES --real DATA...
    wavepatch bench --suite ct|restoration|mri --out DIR [--quick]
    wavepatch methods [NAME] [--markdown]      every method and its parameters (from wavepatch.methods)

Bad input prints one line ``wavepatch: error: ...`` and exits with status 2 (``--debug`` shows the
traceback instead).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

from wavepatch.cli_measured import cmd_measured, save_measurement
from wavepatch.cli_prior import add_eval_parser, add_sample_parser, add_train_parser, cmd_eval, cmd_sample, cmd_train
from wavepatch.cli_shape import add_eval_shapes_parser, cmd_eval_shapes
from wavepatch.cli_volume import cmd_volume
from wavepatch.io import (
    ImageReadError,
    denormalize,
    normalize_volume,
    read_image,
    resize_square,
    save_npy,
    save_png,
)
from wavepatch.io.publish import check_replaceable, staged_output
from wavepatch.io.writers import save_dicom_series
from wavepatch.methods import get_method, method_help, methods_doc, names
from wavepatch.metrics.hu import hu_metrics
from wavepatch.prior.model import PRECISIONS
from wavepatch.report import compare_figure, save_json, uncertainty_figure
from wavepatch.selection import auto_by_default, auto_line, check_auto, run_reconstruction_auto
from wavepatch.tasks import TASKS, TaskOptions, task_options
from wavepatch.volume import COUPLINGS
from wavepatch.volume_tasks import VOLUME_TASKS


class UsageError(Exception):
    """A bad command line or input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(message)


def _param(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param expects key=value, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wavepatch", description="Diffusion image priors for medical imaging.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("reconstruct", help="reconstruct a measured sinogram (--measurement), or simulate a "
                       "measurement from a clean image and reconstruct it",
                       epilog=_methods_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("input", nargs="?", default=None,
                   help="clean image to simulate from: DICOM file or series folder, NIfTI, PNG or .npy")
    r.add_argument("--measurement", default=None, metavar="FILE",
                   help="a measured CT sinogram (.npy or NIfTI, views x detector bins) or MRI k-space (complex .npy, "
                   "BART .cfl, fastMRI .h5) instead of a clean image")
    r.add_argument("--save-measurement", action="store_true",
                   help="also write the simulated measurement as measurement.npy (CT: post-log line integrals; "
                   "MRI: complex k-space)")
    r.add_argument("--counts", action="store_true",
                   help="--measurement holds raw detector counts (needs --dose I0), not post-log line integrals")
    r.add_argument("--task", required=True, choices=TASKS + VOLUME_TASKS,
                   help="zsr and mri3d measure a whole volume (with --volume)")
    r.add_argument("--method", required=True, choices=names(), help="see the list below, or `wavepatch methods`")
    r.add_argument("--out", required=True, help="output folder (created; files replaced atomically)")
    r.add_argument("--size", type=int, default=256, help="reconstruct at N x N (default 256)")
    r.add_argument("--seed", type=int, default=0, help="seed for masks and measurement noise")
    r.add_argument("--slice", type=int, default=None, help="slice index in a volume (default: middle)")
    r.add_argument("--volume", action="store_true",
                   help="reconstruct the whole volume (DICOM series folder or NIfTI): every slice measured by the "
                   "task, recon.nii.gz and planes.png")
    r.add_argument("--slices", default=None, metavar="A:B", help="--volume: the slice range to use (default all)")
    r.add_argument("--as-measured", action="store_true",
                   help="--volume --task zsr: INPUT is itself the thick-slice acquisition; write --factor times as "
                   "many slices (no reference, so no PSNR)")
    r.add_argument("--series", default=None, metavar="UID",
                   help="--volume: the SeriesInstanceUID to read from a folder holding several DICOM series")
    r.add_argument("--coupling", choices=COUPLINGS, default=None,
                   help="--volume, learned methods: inter-slice coupling: none, tv-z (TV along z in the data step), "
                   "iscs (noise shared across slices; padis --fast, ddnm), tv-z+iscs, or planes (the prior also on "
                   "coronal and sagittal planes, in turn) (default tv-z; see README)")
    r.add_argument("--coupling-lam", type=float, default=None,
                   help="--volume: weight of the tv-z coupling on the unit scale (default 0.0025)")
    r.add_argument("--axis", type=int, default=2, help="NIfTI axis to slice along (default 2, axial)")
    r.add_argument("--window", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="intensity window mapped to [0, 1] (CT default: -1000 1000 HU)")
    g = r.add_argument_group("task options")
    g.add_argument("--views", type=int, default=None, help="CT views (default 60; ct-lowdose 180)")
    g.add_argument("--dose", type=float, default=None, help="ct-lowdose: incident photons per bin (I0, default 1e4)")
    g.add_argument("--electronic-noise", type=float, default=None, help="ct-lowdose: electronic noise std (default 0)")
    g.add_argument("--pixel-mm", type=float, default=None,
                   help="CT: pixel size in mm (default 1.4): attenuation scale of low-dose and measured sinograms")
    g.add_argument("--accel", type=float, default=None, help="mri: acceleration factor (default 4)")
    g.add_argument("--mask", default=None, help="mri: gaussian|uniform; inpaint: random|box")
    g.add_argument("--center-fraction", type=float, default=None, help="mri: fully sampled centre fraction")
    g.add_argument("--kernel", default=None,
                   help="deblur: gaussian (default)|uniform|motion|heavy|varying (PSF widening from 0.5 px at the "
                        "centre to 3 px at the corners)")
    g.add_argument("--factor", type=int, default=None, help="sr: downsampling factor (default 4)")
    g.add_argument("--keep", type=float, default=None, help="inpaint random: fraction of pixels observed (default 0.3)")
    g.add_argument("--oversampling", type=float, default=None,
                   help="phase-retrieval: Fourier grid / image side per axis, in [1, 8] (default 2)")
    g.add_argument("--noise", type=float, default=None, help="Gaussian measurement noise std")
    g.add_argument("--detectors", type=int, default=None, help="CT: detector bins (default: cover the diagonal)")
    g.add_argument("--arc", type=float, default=None, help="parallel-beam CT: angular range in degrees (default 180)")
    g.add_argument("--source-distance", type=float, default=None, help="ct-fan: source to centre, pixels (default 2N)")
    g.add_argument("--detector-distance", type=float, default=None,
                   help="ct-fan: centre to detector, pixels (default 2N)")
    g.add_argument("--det-spacing", type=float, default=None,
                   help="ct-fan: detector bin width in pixels (default: one pixel at the centre)")
    g.add_argument("--filter", dest="fbp_filter", default=None, choices=("ramp", "hann"),
                   help="CT FBP filter (default hann)")
    r.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                   help="method parameter, e.g. lam=0.002 or n_iter=200 (repeatable)")
    r.add_argument("--auto", action=argparse.BooleanOptionalAction, default=None,
                   help="choose the method's weight (lam; PnP: sigma; --fast: sigma_start) for this scan without "
                   "ground truth: hold out some CT views or MRI k-space lines, reconstruct from the rest with "
                   "each candidate, keep the one that predicts the held-out data best. Default: on for the learned "
                   "methods' --fast on CT and MRI (about 2.3x the time), off for the classical ones (about 6x); "
                   "--no-auto: the hand-set defaults. With --volume (opt-in): one choice for the volume, views held "
                   "out of every slice or mri3d k-space points")
    r.add_argument("--dicom", action="store_true", help="also write the reconstruction as a DICOM series (HU)")
    r.add_argument("--compare", nargs="+", default=[], choices=names("classical"), metavar="METHOD",
                   help="classical methods also run on the same measurement, shown in compare.png and metrics.json")
    d = r.add_argument_group(f"learned-prior methods ({', '.join(names('sampler'))})")
    d.add_argument("--prior", default=None,
                   help="prior checkpoint (default: the bundled prior for the task and image size, docs/models.md)")
    d.add_argument("--steps", type=int, default=None, help="noise levels (method default otherwise)")
    d.add_argument("--samples", type=int, default=1, help="posterior samples: mean is the reconstruction, "
                   "per-pixel std the uncertainty map")
    d.add_argument("--fast", action="store_true", help="warm start from ADMM-TV at sigma 0.1 (fewer NFE)")
    d.add_argument("--patch-mode", choices=("padis", "stitch", "average"), default="padis",
                   help="patch priors: random-shift patches (default) or the stitching / averaging baselines")
    d.add_argument("--device", default="cpu", help="cpu or cuda")
    d.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="network arithmetic: auto = bf16 where the device computes it natively (1.8-2.1x faster "
                   "on an AVX512-BF16 CPU, PSNR within 0.02 dB), else fp32")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_train_parser(sub)
    add_sample_parser(sub)
    add_eval_parser(sub)
    add_eval_shapes_parser(sub)
    b = sub.add_parser("bench", help="tasks x methods over test slices -> results.md, results.csv, grid.png")
    b.add_argument("--suite", choices=("ct", "restoration", "mri", "shift"), default="ct",
                   help="shift: priors on images unlike their training data (resolution, dose, modality), patch "
                   "vs whole image vs ADMM-TV, with and without --auto")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--data", default=None, help="test slices (default: bundled data/ct or data/mri)")
    b.add_argument("--size", type=int, default=256)
    b.add_argument("--limit", type=int, default=None, help="at most this many slices")
    b.add_argument("--methods", nargs="+", default=None, help="method labels to run (default: all)")
    b.add_argument("--settings", nargs="+", default=None, help="setting labels to run (default: all of the suite)")
    b.add_argument("--quick", action="store_true", help="one slice, 64 px, 4 methods, few steps (CI)")
    b.add_argument("--resume", action="store_true",
                   help="keep the rows already in OUT/results.csv and run only the missing ones")
    b.add_argument("--device", default="cpu")
    b.add_argument("--precision", choices=PRECISIONS, default="auto", help="network arithmetic (see reconstruct)")
    b.add_argument("--no-progress", action="store_true")
    m = sub.add_parser("methods", help="every reconstruction method and its parameters (types, defaults, ranges)")
    m.add_argument("name", nargs="?", default=None, help="one method (default: all)")
    m.add_argument("--markdown", action="store_true", help="the table of docs/methods.md")
    return parser


def _methods_epilog() -> str:
    lines = ["methods (parameters: --param KEY=VALUE; details: wavepatch methods NAME):"]
    for name in names():
        entry = get_method(name)
        params = ", ".join(p.name for p in entry.params) or "no parameters"
        lines.append(f"  {name:17s} {entry.kind:9s} {params}")
    return "\n".join(lines)


def cmd_methods(args) -> int:
    if args.markdown:
        print(methods_doc(), end="")
    else:
        print("\n\n".join(method_help(n) for n in ([args.name] if args.name else names())))
    return 0


def _load_slice(args) -> tuple[np.ndarray, dict, object]:
    volume = read_image(args.input, axis=args.axis)
    s = volume.data.shape[0] // 2 if args.slice is None else args.slice
    if not 0 <= s < volume.data.shape[0]:
        raise UsageError(f"--slice {s} is out of range: {args.input} has {volume.data.shape[0]} slices")
    unit, info = normalize_volume(volume, tuple(args.window) if args.window else None)
    return resize_square(unit[s], args.size), info, (volume, s)


def _task_options(args) -> TaskOptions:
    return task_options(args.task, views=args.views, dose=args.dose, electronic_noise=args.electronic_noise,
                        pixel_mm=args.pixel_mm, accel=args.accel, mask=args.mask,
                        center_fraction=args.center_fraction, kernel=args.kernel, factor=args.factor,
                        keep=args.keep, noise=args.noise, fbp_filter=args.fbp_filter, detectors=args.detectors,
                        oversampling=args.oversampling,
                        arc=args.arc, source_distance=args.source_distance,
                        detector_distance=args.detector_distance, det_spacing=args.det_spacing)


def _overrides(args) -> dict:
    overrides = dict(args.param)
    if args.steps is not None:
        if get_method(args.method).kind != "sampler":
            raise UsageError(f"--steps is for the learned-prior methods; {args.method} takes --param n_iter=K")
        overrides["steps"] = args.steps
    return overrides


def _resolve_auto(args) -> tuple[bool, bool]:
    """(run the --auto selection, it is optional): --auto asked for (checked now: ValueError before any work),
    --no-auto, or neither: on where :func:`auto_by_default` says so, and then optional (a selection that cannot
    run falls back to the defaults, never an error)."""
    if args.auto:
        check_auto(args.task, args.method, args.fast, _overrides(args), volume=args.volume)
        return True, False
    if args.auto is None:
        return auto_by_default(args.task, args.method, args.fast, _overrides(args), volume=args.volume), True
    return False, False


def cmd_reconstruct(args) -> int:
    if (args.input is None) == (args.measurement is None):
        raise UsageError("give either a clean image to simulate from (INPUT) or --measurement FILE")
    if not 16 <= args.size <= MAX_SIZE:
        raise UsageError(f"--size must be between 16 and {MAX_SIZE}, got {args.size}")
    opts = _task_options(args)
    auto, auto_optional = _resolve_auto(args)
    if args.volume:
        return cmd_volume(args, opts, _overrides(args), auto)
    if args.task in VOLUME_TASKS:
        raise UsageError(f"--task {args.task} measures a whole volume: add --volume (and give a DICOM series folder or "
                         "a NIfTI volume)")
    if args.slices is not None:
        raise UsageError("--slices is for --volume (one slice: --slice K)")
    if args.as_measured:
        raise UsageError("--as-measured is for --volume --task zsr (a thick-slice volume)")
    for flag, value in (("--series", args.series), ("--coupling", args.coupling),
                        ("--coupling-lam", args.coupling_lam)):
        if value is not None:
            raise UsageError(f"{flag} is for --volume")
    if args.measurement is not None:
        if args.window:
            opts.window = tuple(args.window)
        return cmd_measured(args, opts, _overrides(args), auto, auto_optional)
    if args.counts:
        raise UsageError("--counts describes a --measurement file")
    out = Path(args.out)
    check_replaceable(out, [args.input])  # refused before any work, and again when publishing
    img, norm_info, (volume, s) = _load_slice(args)
    if args.dicom and (volume.kind != "ct" or norm_info["method"] != "window"):
        raise UsageError("--dicom writes CT in HU; the input is not a CT image")
    if norm_info["method"] == "window":
        opts.window = (norm_info["lo"], norm_info["hi"])
    overrides = _overrides(args)
    res, auto = run_reconstruction_auto(img, args.task, opts, args.method, overrides, seed=args.seed,
                                        auto=auto, optional=auto_optional, prior=args.prior,
                                        samples=args.samples, fast=args.fast,
                                        patch_mode=args.patch_mode, device=args.device,
                                        progress=not args.no_progress, compare=tuple(args.compare),
                                        precision=args.precision)
    task, recon, baseline, std, nfe, params = res.task, res.recon, res.baseline, res.std, res.nfe, res.params
    seconds, m, mb = res.seconds, res.metrics, res.baseline_metrics
    r = recon[0, 0].numpy()
    protect = [args.input]
    metrics = {"psnr": m["psnr"], "ssim": m["ssim"], "seconds": seconds, "task": args.task,
               "method": args.method, "baseline": task.baseline_name, "baseline_psnr": mb["psnr"],
               "baseline_ssim": mb["ssim"], "input": str(args.input), "slice": s, "size": args.size,
               "seed": args.seed, "task_params": task.params, "method_params": params,
               "normalisation": norm_info, "metric_scale": "unit image clamped to [0, 1], data_range 1"}
    if nfe is not None:
        metrics["nfe"] = nfe
    if auto is not None:
        metrics["auto"] = auto
    if volume.kind == "ct" and norm_info["method"] == "window":  # CT numbers: ROI bias and noise, NPS
        metrics["hu"] = hu_metrics(denormalize(np.clip(r, 0, 1), norm_info), denormalize(img, norm_info))
    if res.compared:
        metrics["compared"] = {name: {"psnr": cm["psnr"], "ssim": cm["ssim"], "seconds": sec}
                               for name, (_, cm, sec) in res.compared.items()}
    with staged_output(out, protect, command="reconstruct") as stage:
        save_npy(stage / "recon.npy", r, protect=protect)
        save_png(stage / "recon.png", np.clip(r, 0, 1), protect=protect)
        compare_figure(stage / "compare.png", img, [
            (f"{task.baseline_name}: {_db(mb['psnr'])} / {mb['ssim']:.3f}", baseline[0, 0].numpy()),
            *[(f"{name}: {_db(cm['psnr'])} / {cm['ssim']:.3f}", rec[0, 0].numpy())
              for name, (rec, cm, _) in res.compared.items()],
            (f"{args.method}{' (fast)' if args.fast else ''}: {_db(m['psnr'])} / {m['ssim']:.3f}", r),
        ], r, suptitle=f"{args.task}: {task.description}", protect=protect)
        if std is not None:
            sd = std[0, 0].numpy()
            save_npy(stage / "std.npy", sd, protect=protect)
            uncertainty_figure(stage / "uncertainty.png", r, sd, np.abs(r - img), protect=protect)
            metrics["mean_std"] = float(sd.mean())
        if args.dicom:
            _write_dicom(args, stage / "recon_dicom", r, norm_info, volume, s)
            metrics["dicom"] = str(out / "recon_dicom")
        if args.save_measurement:
            metrics["measurement"] = save_measurement(stage, args.task, opts, res.y, protect)
        save_json(stage / "metrics.json", metrics, protect=protect)
    print(f"{args.task} / {args.method}: PSNR {_db(m['psnr'])}, SSIM {m['ssim']:.4f}, {seconds:.2f} s"
          f"{f', {nfe} NFE' if nfe else ''} "
          f"({task.baseline_name}: {_db(mb['psnr'])}"
          + "".join(f", {name}: {_db(cm['psnr'])}" for name, (_, cm, _) in res.compared.items())
          + f") -> {out}")
    if auto is not None:
        print(auto_line(auto))
    if "hu" in metrics and metrics["hu"]["roi_mean_abs_error_hu"] is not None:
        print(f"  CT numbers: ROI mean |bias| {metrics['hu']['roi_mean_abs_error_hu']:.1f} HU, ROI noise std "
              f"{metrics['hu']['roi_noise_std_hu']:.1f} HU (lung / fat / soft tissue / bone by HU thresholds)")
    return 0


def _db(psnr: float) -> str:
    """PSNR for people: 'inf dB (identical)' for a perfect match (metrics.json stores null there)."""
    return f"{psnr:.2f} dB" if np.isfinite(psnr) else "inf dB (identical to the reference)"


def _write_dicom(args, folder: Path, recon: np.ndarray, norm_info: dict, volume, s: int) -> Path:
    """The reconstruction as a derived DICOM series in HU, filed next to the input's study."""
    hu = np.asarray(denormalize(np.clip(recon, 0, 1), norm_info), dtype=np.float32)[None]
    ref = read_image(args.input, axis=args.axis, slices=[s]) if volume.dicom_headers else None
    spacing = None
    if volume.spacing:
        h, w = volume.data.shape[1:]
        spacing = tuple(float(sp) * max(h, w) / args.size for sp in volume.spacing)
    save_dicom_series(folder, hu, reference=ref, pixel_spacing=spacing, protect=[args.input])
    return folder


def cmd_bench(args) -> int:
    from wavepatch.bench import run_suite

    out = Path(args.out)
    rows = run_suite(args.suite, out, data=args.data, size=args.size, limit=args.limit, methods=args.methods,
                     settings=args.settings, quick=args.quick, device=args.device, progress=not args.no_progress,
                     resume=args.resume, precision=args.precision)
    if rows is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    print((out / "results.md").read_text())
    print(f"{len(rows)} reconstructions -> {out}/results.md, results.csv, grid.png")
    return 0


COMMANDS = {"reconstruct": cmd_reconstruct, "train": cmd_train, "sample": cmd_sample, "eval-samples": cmd_eval,
            "eval-shapes": cmd_eval_shapes, "bench": cmd_bench, "methods": cmd_methods}


MAX_SIZE = 4096  # --size above this is refused: a 4096^2 float32 image is 64 MB, CT matrices grow as N^3


def error_line(exc: BaseException) -> str:
    """One line for any exception: its message (file names included), else its type."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "alloc" in str(exc).lower()):
        return f"out of memory ({str(exc).splitlines()[0][:160] if str(exc) else 'MemoryError'}); " \
               "try a smaller --size or --batch"
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, (UsageError, ImageReadError, ValueError, OSError)) and first:
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command; any failure is one line ``wavepatch: error: ...`` and exit 2 (traceback with --debug),
    Ctrl-C exit 130."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    if not debug:
        # pydicom warns about each oddity of a file it then fails on; the one error line says what matters.
        warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("wavepatch: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except BaseException as exc:  # the CLI boundary: every failure is one line
        if debug:
            raise
        print(f"wavepatch: error: {error_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
