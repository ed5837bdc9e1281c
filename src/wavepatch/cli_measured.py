"""``wavepatch reconstruct --measurement FILE``: reconstruct a measured CT sinogram (no ground truth).

The sinogram is read by :mod:`wavepatch.io.measurements` (post-log line integrals p, or raw counts with
``--counts`` and I0 from ``--dose``, taken through the bias-corrected log of :mod:`wavepatch.physics.noise`)
and converted to the CT operator's units (unit image x pixel) with the attenuation of the HU window and
``--pixel-mm``: y = p / mu. Views and detector bins come from the file's shape;
the rest of the geometry from the command line. metrics.json reports the data residual, time and NFE.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wavepatch.fidelity import GaussianNoise
from wavepatch.io import denormalize, save_npy, save_png
from wavepatch.io.kspace import read_kspace, sampling_mask, save_kspace_npy
from wavepatch.io.measurements import read_sinogram, save_sinogram
from wavepatch.io.publish import check_replaceable, staged_output
from wavepatch.io.writers import save_dicom_series
from wavepatch.physics.coil_maps import calibration_width, espirit_maps, phase_normalized
from wavepatch.physics.mri import MultiCoilMRI, gaussian_1d_mask, kspace_noise_std, uniform_1d_mask
from wavepatch.physics.noise import attenuation_per_unit, counts_to_line_integrals
from wavepatch.report import compare_figure, save_json
from wavepatch.run import data_metrics
from wavepatch.selection import auto_line, solve_auto
from wavepatch.tasks import Task, TaskOptions, make_task

CT_TASKS = ("ct-parallel", "ct-fan", "ct-lowdose")


def ct_line_integral_scale(opts: TaskOptions) -> float:
    """mu: post-log line integral of a unit image value over one pixel (HU window and --pixel-mm)."""
    return attenuation_per_unit(opts.pixel_mm, opts.window)


def save_measurement(folder: Path, task_name: str, opts: TaskOptions, y: torch.Tensor, protect=()) -> str:
    """Write the simulated measurement as a user's file would hold it: CT as post-log line integrals (V, D),
    MRI as complex64 centred k-space (1, H, W) with unsampled entries 0; returns the file name."""
    if task_name == "mri":
        save_kspace_npy(folder / "measurement.npy", y[0], protect)
        return "measurement.npy"
    if task_name not in CT_TASKS:
        raise ValueError(f"--save-measurement writes CT sinograms and MRI k-space; {task_name} is neither")
    save_sinogram(folder / "measurement.npy", y[0, 0].numpy() * ct_line_integral_scale(opts), protect)
    return "measurement.npy"


def retrospective_mask(shape: tuple[int, int], opts: TaskOptions, seed: int) -> torch.Tensor:
    """Bool (H, W) phase-encode mask (whole columns) for undersampling fully sampled k-space retrospectively:
    the mri task's x``--accel`` ``--mask`` gaussian|uniform 1D pattern, drawn with ``seed``."""
    kind = opts.mask or "gaussian"
    if kind not in ("gaussian", "uniform"):
        raise ValueError(f"--mask for mri must be gaussian or uniform, got {kind!r}")
    make = gaussian_1d_mask if kind == "gaussian" else uniform_1d_mask
    cols = make(shape[1], opts.accel, opts.center_fraction, generator=torch.Generator().manual_seed(seed))
    return cols.bool()[None, :].expand(shape[0], -1).clone()


def mri_measured_task(path, slice_index: int | None, opts: TaskOptions, retrospective: bool = False,
                      seed: int = 0) -> tuple[Task, torch.Tensor, dict, torch.Tensor | None]:
    """(task, y (1, C, H, W), info, reference) for measured Cartesian k-space (centred layout) of C coils.

    Mask: the file's own (fastMRI ``mask``) or the zero pattern. With ``retrospective`` the file must be fully
    sampled; it is undersampled with :func:`retrospective_mask` and ``reference`` (1, 1, H, W) is the fully
    sampled least-squares (SENSE) image with the same maps, in the same units (else ``None``).
    Coil maps: ESPIRiT (sigpy) on the measured (undersampled) data's fully sampled centre for C > 1, a unit
    map for one coil, both rotated by the low-resolution image phase so the image they explain is real (the
    priors are magnitude images). y is scaled so the zero-filled coil-combined image's 99th percentile is 1.
    The noise model is Gaussian with the std estimated from the outer k-space (:func:`kspace_noise_std`),
    unless ``opts.noise`` (``--noise``) gives it."""
    ks = read_kspace(path, slice=slice_index)
    file_mask = torch.from_numpy(ks.mask if ks.mask is not None else sampling_mask(ks))
    k = torch.from_numpy(ks.data)
    mask = file_mask
    if retrospective:
        if float(file_mask.float().mean()) < 0.99:
            raise ValueError(f"--accel undersamples fully sampled k-space retrospectively; {path} is already "
                             f"undersampled ({float(file_mask.float().mean()):.0%} sampled): leave --accel out")
        mask = retrospective_mask(ks.shape, opts, seed)
    calib = calibration_width(mask.numpy())
    if ks.n_coils > 1 and calib < 8:
        hint = " (use a larger --center-fraction)" if retrospective else ""
        raise ValueError(f"{path}: the k-space centre has only a {calib}x{calib} fully sampled square; coil maps "
                         f"need at least 8x8{hint}")
    kept = k * mask
    maps = espirit_maps(kept, calib_width=calib) if ks.n_coils > 1 else torch.ones_like(k)
    maps = phase_normalized(maps, kept, calib_width=max(calib, 2))
    op = MultiCoilMRI(mask, maps)
    y = kept[None]
    scale = float(torch.quantile(op.A_adjoint(y).abs().flatten(), 0.99).clamp_min(1e-30))
    y = y / scale
    reference = None
    if retrospective:
        reference = MultiCoilMRI(file_mask, maps).A_dagger(k[None] / scale).float()
    noise_estimate = kspace_noise_std(kept, mask) / scale
    std = noise_estimate if opts.noise is None else opts.noise
    fraction = float(mask.float().mean())
    how = f"x{opts.accel:g} {opts.mask or 'gaussian'} retrospective mask of " if retrospective else ""
    params = {"coils": ks.n_coils, "sampled_fraction": fraction, "scale": scale, "source": ks.source,
              "calibration_width": calib, "noise_std_estimate": noise_estimate, "noise": std}
    if retrospective:
        params.update(accel=opts.accel, mask=opts.mask or "gaussian", lines=int(mask[0].sum()))
    task = Task("mri", op, lambda x, g: op.A(x), op.A_adjoint, "zero-filled",
                f"{how}measured {ks.n_coils}-coil Cartesian k-space ({fraction:.0%} sampled)",
                GaussianNoise(std), params)
    return task, y, {"coils": ks.n_coils, "shape": list(ks.data.shape[-2:])}, reference


def cmd_measured(args, opts: TaskOptions, overrides: dict, auto: bool, auto_optional: bool) -> int:
    """Reconstruct ``args.measurement`` for ``args.task`` into ``args.out`` (staged, published as a whole).
    ``auto``: run the hold-out selection; ``auto_optional``: a selection that cannot run is not an error."""
    if args.task not in CT_TASKS + ("mri",):
        raise ValueError(f"--measurement reads CT sinograms and MRI k-space; {args.task} takes a clean image "
                         "to simulate from")
    if args.save_measurement:
        raise ValueError("--save-measurement is for simulated runs; the measurement is already a file")
    out = Path(args.out)
    check_replaceable(out, [args.measurement])
    if args.task == "mri":
        if args.counts or args.dicom:
            raise ValueError("--counts and --dicom are for CT measurements")
        if args.accel is None and (args.mask is not None or args.center_fraction is not None):
            raise ValueError("--mask and --center-fraction describe retrospective undersampling of measured "
                             "k-space: give --accel R too")
        task, y, shape_info, reference = mri_measured_task(args.measurement, args.slice, opts,
                                                           retrospective=args.accel is not None, seed=args.seed)
        return _reconstruct_and_publish(args, task, y, overrides, out, shape_info, opts, auto,
                                        auto_optional, reference)
    sino = read_sinogram(args.measurement)
    if args.counts:
        if args.dose is None:
            raise ValueError("--counts needs the incident photon count --dose I0 (with --task ct-lowdose)")
        if (sino < 0).any():
            raise ValueError(f"{args.measurement}: raw counts must be non-negative")
        sino = counts_to_line_integrals(torch.from_numpy(sino), opts.dose).numpy()
    views, detectors = sino.shape
    for flag, given, found in (("--views", opts.views, views), ("--detectors", opts.detectors, detectors)):
        if given is not None and given != found:
            raise ValueError(f"{flag} {given} does not match the sinogram {args.measurement}: {views} views x "
                             f"{detectors} detector bins")
    opts.views, opts.detectors = views, detectors
    task = make_task(args.task, args.size, opts)
    y = torch.from_numpy(sino / ct_line_integral_scale(opts))[None, None].float()
    return _reconstruct_and_publish(args, task, y, overrides, out, {"views": views, "detectors": detectors}, opts,
                                    auto, auto_optional)


def _reconstruct_and_publish(args, task: Task, y: torch.Tensor, overrides: dict, out: Path, shape_info: dict,
                             opts: TaskOptions, auto: bool, auto_optional: bool,
                             reference: torch.Tensor | None = None) -> int:
    """Solve, then write recon.npy/png, compare.png, metrics.json (and std.npy, DICOM) as one published folder.
    ``auto`` / ``auto_optional``: as :func:`cmd_measured` takes them.
    With ``reference`` (retrospective undersampling) PSNR/SSIM against it are reported next to the data
    consistency figures."""
    res, report = solve_auto(task, y, args.method, overrides, auto, seed=args.seed,
                             optional=auto_optional, prior=args.prior,
                             samples=args.samples, fast=args.fast, patch_mode=args.patch_mode, device=args.device,
                             progress=not args.no_progress, compare=tuple(args.compare), truth=reference,
                             precision=args.precision)
    fidelity = task.fidelity(y)
    vs_ref = None
    if reference is not None:  # solve scored against the reference; the data figures are added here
        vs_ref = {"method": res.metrics, "baseline": res.baseline_metrics,
                  **{n: cm for n, (_, cm, _) in res.compared.items()}}
        res.metrics = data_metrics(fidelity, res.recon)
        res.baseline_metrics = data_metrics(fidelity, res.baseline)
        res.compared = {n: (rec, data_metrics(fidelity, rec), sec) for n, (rec, _, sec) in res.compared.items()}
    r = res.recon[0, 0].numpy()
    protect = [args.measurement]
    norm = {"method": "window", "lo": opts.window[0], "hi": opts.window[1]}
    metrics = {"task": args.task, "method": args.method, "measurement": str(args.measurement), **shape_info,
               "size": list(r.shape), "seconds": res.seconds,
               "data_consistency": res.metrics, "baseline": task.baseline_name,
               "baseline_data_consistency": res.baseline_metrics, "task_params": task.params,
               "method_params": res.params, "normalisation": norm, "seed": args.seed,
               "note": "measured data: no ground truth, so no PSNR/SSIM; relative_residual = ||A x - y|| / ||y||"}
    if vs_ref is not None:
        metrics.update(psnr=vs_ref["method"]["psnr"], ssim=vs_ref["method"]["ssim"],
                       baseline_psnr=vs_ref["baseline"]["psnr"], baseline_ssim=vs_ref["baseline"]["ssim"],
                       reference="fully sampled k-space of the same file, least-squares (SENSE) image with the "
                                 "same coil maps; metrics on the unit scale clamped to [0, 1]",
                       note="retrospectively undersampled measured k-space: PSNR/SSIM against the fully "
                            "sampled reference; relative_residual = ||A x - y|| / ||y||")
    if res.nfe is not None:
        metrics["nfe"] = res.nfe
    if report is not None:
        metrics["auto"] = report
        print(auto_line(report))
    if res.compared:
        metrics["compared"] = {n: {"data_consistency": cm, "seconds": sec} for n, (_, cm, sec) in res.compared.items()}
        if vs_ref is not None:
            for n in metrics["compared"]:
                metrics["compared"][n].update(psnr=vs_ref[n]["psnr"], ssim=vs_ref[n]["ssim"])
    with staged_output(out, protect, command="reconstruct --measurement") as stage:
        save_npy(stage / "recon.npy", r, protect=protect)
        save_png(stage / "recon.png", np.clip(r, 0, 1), protect=protect)
        panels = [(f"{task.baseline_name}", res.baseline[0, 0].numpy()),
                  *[(name, rec[0, 0].numpy()) for name, (rec, _, _) in res.compared.items()]]
        if reference is None:
            compare_figure(stage / "compare.png", r, panels, res.baseline[0, 0].numpy(),
                           suptitle=f"{args.task} (measured): {task.description}", protect=protect,
                           truth_title=args.method)
        else:
            ref = reference[0, 0].numpy()
            titled = [(f"{task.baseline_name}: {vs_ref['baseline']['psnr']:.2f} dB", panels[0][1]),
                      *[(f"{n}: {vs_ref[n]['psnr']:.2f} dB", img) for n, img in panels[1:]],
                      (f"{args.method}: {vs_ref['method']['psnr']:.2f} dB", r)]
            compare_figure(stage / "compare.png", ref, titled, r, protect=protect,
                           suptitle=f"{args.task} (measured): {task.description}",
                           truth_title="fully sampled reference", error_title=f"|{args.method} - reference|")
        if res.std is not None:
            save_npy(stage / "std.npy", res.std[0, 0].numpy(), protect=protect)
        if args.dicom:
            hu = np.asarray(denormalize(np.clip(r, 0, 1), norm), dtype=np.float32)[None]
            spacing = (opts.pixel_mm, opts.pixel_mm)
            save_dicom_series(stage / "recon_dicom", hu, pixel_spacing=spacing, protect=protect)
            metrics["dicom"] = str(out / "recon_dicom")
        save_json(stage / "metrics.json", metrics, protect=protect)
    rel = res.metrics["relative_residual"]
    if vs_ref is not None:
        print(f"{args.task} / {args.method}: PSNR {vs_ref['method']['psnr']:.2f} dB, SSIM "
              f"{vs_ref['method']['ssim']:.4f} against the fully sampled reference ({task.baseline_name}: "
              f"{vs_ref['baseline']['psnr']:.2f} dB"
              + "".join(f", {n}: {vs_ref[n]['psnr']:.2f} dB" for n in res.compared) + ")")
    print(f"{args.task} / {args.method} on {task.description}: relative data residual "
          f"{rel:.4f} ({task.baseline_name}: {res.baseline_metrics['relative_residual']:.4f}), {res.seconds:.2f} s"
          f"{f', {res.nfe} NFE' if res.nfe else ''} -> {out}")
    return 0
