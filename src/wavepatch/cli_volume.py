"""``wavepatch reconstruct INPUT --volume [--slices A:B]``: a whole DICOM series or NIfTI volume.

Reads the volume, normalises and resizes it in-plane to ``--size`` (z as acquired), measures every slice with
the 2-D task and reconstructs the stack (:mod:`wavepatch.volume`). Writes, published as one folder:
recon.nii.gz (HU for CT; voxel spacing = in-plane spacing after resizing x slice spacing), with ``--dicom`` a
derived DICOM series, planes.png (axial / coronal / sagittal mid-planes: truth | baseline | recon | error) and
metrics.json (volume PSNR/SSIM, mean plane PSNR per orientation, the baseline's, seconds, NFE, peak memory).
``--as-measured`` (zsr): the input is the thick-slice acquisition itself, upsampled along z by ``--factor``
(:func:`upsample_thick_slices`; no reference, so no PSNR).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wavepatch.io import denormalize, normalize_volume, read_image, resize_square
from wavepatch.io.publish import check_replaceable, staged_output
from wavepatch.io.writers import dicom_slice_step, save_dicom_series, save_nifti
from wavepatch.methods import get_method
from wavepatch.report import planes_figure, save_json
from wavepatch.selection import auto_line
from wavepatch.tasks import TaskOptions
from wavepatch.volume import DEFAULT_COUPLING_LAM, measure_volume, solve_volume, volume_measurement, volume_metrics
from wavepatch.volume_selection import select_and_solve_volume
from wavepatch.volume_tasks import make_volume_task


def parse_slices(text: str | None) -> slice | None:
    """'A:B' (either side may be empty) -> slice(A, B); None -> None. ValueError for anything else."""
    if text is None:
        return None
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        a, b = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise ValueError(f"--slices takes A:B (slice indices, either may be empty), got {text!r}") from None
    return slice(a, b)


def slice_spacing_mm(volume, path, axis: int) -> float:
    """Distance between slices in mm: DICOM ImagePositionPatient steps (else SpacingBetweenSlices /
    SliceThickness), NIfTI voxel size along ``axis``; 1.0 when the file does not say."""
    headers = volume.dicom_headers
    if headers:
        positions = [h.get("ImagePositionPatient") for h in headers]
        if len(headers) > 1 and all(p is not None for p in positions):
            z = np.array([[float(v) for v in p] for p in positions])
            steps = np.linalg.norm(np.diff(z, axis=0), axis=1)
            if steps.size and float(np.median(steps)) > 0:
                return float(np.median(steps))
        return dicom_slice_step(headers)
    if str(path).lower().endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return float(nib.load(str(path)).header.get_zooms()[axis])
    return 1.0


def cmd_volume(args, opts: TaskOptions, overrides: dict, auto: bool) -> int:
    for flag, bad in (("--measurement", args.measurement is not None), ("--save-measurement", args.save_measurement),
                      ("--compare", bool(args.compare)), ("--samples", args.samples != 1),
                      ("--slice", args.slice is not None)):
        if bad:
            raise ValueError(f"{flag} does not apply with --volume" + (" (use --slices A:B)" if flag == "--slice"
                                                                       else ""))
    out = Path(args.out)
    check_replaceable(out, [args.input])
    volume = read_image(args.input, axis=args.axis, slices=parse_slices(args.slices), series=args.series)
    if volume.data.shape[0] < 2:
        raise ValueError(f"{args.input} holds {volume.data.shape[0]} slice(s); --volume needs a volume of at "
                         "least 2 (a DICOM series folder or a NIfTI volume)")
    if args.dicom and volume.kind != "ct":
        raise ValueError("--dicom writes CT in HU; the input is not a CT volume")
    unit, norm = normalize_volume(volume, tuple(args.window) if args.window else None)
    if norm["method"] == "window":
        opts.window = (norm["lo"], norm["hi"])
    h, w = unit.shape[1:]
    unit = resize_square(unit, args.size)
    scale = max(h, w) / args.size
    row_mm, col_mm = ((volume.spacing[0] * scale, volume.spacing[1] * scale) if volume.spacing else (scale, scale))
    dz = slice_spacing_mm(volume, args.input, args.axis)
    z_weight = float(np.sqrt(row_mm * col_mm) / dz)
    coupling = args.coupling  # None: the default for the prior (tv-z for 2-D priors, none for 3-D ones)
    lam = DEFAULT_COUPLING_LAM if args.coupling_lam is None else args.coupling_lam
    if lam < 0 or not np.isfinite(lam):
        raise ValueError(f"--coupling-lam must be a finite number >= 0, got {lam}")
    if get_method(args.method).kind != "sampler":
        for flag, value in (("--coupling", args.coupling), ("--coupling-lam", args.coupling_lam)):
            if value is not None:
                raise ValueError(f"{flag} couples the slices of a learned sampler; it does not apply to "
                                 f"--method {args.method}")
    kwargs = dict(prior=args.prior, fast=args.fast, z_weight=z_weight, device=args.device,
                  progress=not args.no_progress, precision=args.precision, coupling=coupling, coupling_lam=lam,
                  modality="ct" if norm["method"] == "window" else "mri")
    if args.as_measured:
        return upsample_thick_slices(args, opts, overrides, auto, unit, norm, (dz, row_mm, col_mm), kwargs)
    meas = measure_volume(unit, args.task, opts, seed=args.seed)
    if auto:
        res, report = select_and_solve_volume(meas, args.method, overrides, seed=args.seed, **kwargs)
    else:
        res, report = solve_volume(meas, args.method, overrides, seed=args.seed, **kwargs), None
    if res is None:  # another rank of a torchrun job: rank 0 writes
        return 0
    m, mb = volume_metrics(res.recon, unit), volume_metrics(res.baseline, unit)
    protect = [args.input]
    metrics = {**m, "baseline": res.task.baseline_name, **{f"baseline_{k}": v for k, v in mb.items()},
               "seconds": res.seconds, "nfe": res.nfe, "peak_memory_mb": res.peak_memory_mb,
               "task": args.task, "method": args.method, "input": str(args.input), "slices": int(unit.shape[0]),
               "size": args.size, "voxel_mm": [dz, row_mm, col_mm], "seed": args.seed,
               "task_params": res.task.params, "method_params": res.params, "normalisation": norm,
               "metric_scale": "unit volume, reconstruction clamped to [0, 1], data_range 1"}
    if report is not None:
        metrics["auto"] = report
    if res.training is not None:
        metrics["training"] = res.training
    values = np.clip(res.recon, 0, 1)
    stored = np.asarray(denormalize(values, norm), dtype=np.float32)
    with staged_output(out, protect, command="reconstruct --volume") as stage:
        save_nifti(stage / "recon.nii.gz", stored, spacing=(row_mm, col_mm), axis=args.axis, slice_thickness=dz,
                   protect=protect)
        planes_figure(stage / "planes.png", unit, res.baseline, res.recon, (dz, row_mm, col_mm),
                      titles=(res.task.baseline_name, args.method),
                      suptitle=f"{args.task}: {res.task.description}", protect=protect)
        if args.dicom:
            save_dicom_series(stage / "recon_dicom", stored, reference=volume, pixel_spacing=(row_mm, col_mm),
                              protect=protect)
            metrics["dicom"] = str(out / "recon_dicom")
        save_json(stage / "metrics.json", metrics, protect=protect)
    print(f"{args.task} / {args.method} on {unit.shape[0]} slices: PSNR {m['psnr']:.2f} dB (axial "
          f"{m['psnr_axial']:.2f}, coronal {m['psnr_coronal']:.2f}, sagittal {m['psnr_sagittal']:.2f}), SSIM "
          f"{m['ssim']:.4f}, {res.seconds:.1f} s{f', {res.nfe} NFE' if res.nfe else ''}, peak "
          f"{res.peak_memory_mb:.0f} MB ({res.task.baseline_name}: {mb['psnr']:.2f} dB) -> {out}")
    if report is not None:
        print(auto_line(report))
    if res.training is not None:
        print(training_line(args.method, res.training))
    return 0


def training_line(method: str, report: dict) -> str:
    """One line on how a method trained on the measurement itself went (its report in metrics.json)."""
    if "best_step" in report:  # zs-ssl: the held-out k-space points Γ decide which weights are kept
        line = (f"{method}: held-out k-space error {report['start_error']:.4g} at the start, "
                f"{report['best_error']:.4g} best (step {report['best_step']} of {report['steps']})")
        if report["best_step"] == 0:
            line += "; the training never beat the start, so the result is the start reconstruction"
        return line
    line = f"{method}: training L1 {report['l1_first']:.4g} -> {report['l1_last']:.4g} over {report['steps']} steps"
    if report["l1_last"] > 0.97 * report["l1_first"]:  # within 3 %: §14.3's dead-ReLU run had 0.0281 -> 0.0282
        line += "; the network learned little, so the result is close to the baseline"
    return line


def upsample_thick_slices(args, opts: TaskOptions, overrides: dict, auto: bool, thick: np.ndarray, norm: dict,
                          voxel_mm: tuple[float, float, float], kwargs: dict) -> int:
    """``--as-measured``: ``thick`` (S', H, W), unit scale, is the acquisition itself, each slice taken as the mean
    of ``--factor`` thin ones (the zsr model). Reconstructs S' F thin slices at spacing dz / F and writes
    recon.nii.gz, planes.png (the thick slices repeated | cubic-z | recon) and metrics.json (no reference: no
    PSNR; the data misfit instead)."""
    if args.task != "zsr":
        raise ValueError("--as-measured reads the input as thick slices: it is for --task zsr")
    for flag, bad in (("--auto", auto), ("--dicom", args.dicom)):
        if bad:
            raise ValueError(f"{flag} does not apply with --as-measured")
    factor, (dz, row_mm, col_mm) = opts.factor, voxel_mm
    s, h, w = thick.shape
    task = make_volume_task("zsr", (s * factor, h, w), opts)
    y = torch.from_numpy(np.ascontiguousarray(thick, dtype=np.float32))[None, None]
    meas = volume_measurement(task, y, (s * factor, h, w))
    res = solve_volume(meas, args.method, overrides, seed=args.seed,
                       **{**kwargs, "z_weight": kwargs["z_weight"] * factor})  # the thin slices' spacing
    if res is None:
        return 0
    thin_mm = dz / factor
    recon = torch.from_numpy(res.recon)[None, None]  # the method's own output, before the display clip
    misfit = float((task.op.A(recon) - y).norm() / y.norm().clamp_min(1e-12))
    repeated = task.op.A_dagger(y)[0, 0].numpy()
    metrics = {"as_measured": True, "task": args.task, "method": args.method, "input": str(args.input),
               "factor": factor, "slices_in": s, "slices": s * factor, "size": args.size,
               "voxel_mm": [thin_mm, row_mm, col_mm], "input_voxel_mm": [dz, row_mm, col_mm],
               "relative_data_misfit": misfit, "baseline": res.task.baseline_name, "seconds": res.seconds,
               "nfe": res.nfe, "peak_memory_mb": res.peak_memory_mb, "seed": args.seed,
               "task_params": res.task.params, "method_params": res.params, "normalisation": norm,
               "note": "no reference volume: the input is the acquisition, so there is no PSNR"}
    if res.training is not None:
        metrics["training"] = res.training
    stored = np.asarray(denormalize(np.clip(res.recon, 0, 1), norm), dtype=np.float32)
    protect = [args.input]
    with staged_output(Path(args.out), protect, command="reconstruct --volume --as-measured") as stage:
        save_nifti(stage / "recon.nii.gz", stored, spacing=(row_mm, col_mm), axis=args.axis, slice_thickness=thin_mm,
                   protect=protect)
        planes_figure(stage / "planes.png", repeated, res.baseline, res.recon, (thin_mm, row_mm, col_mm),
                      titles=(res.task.baseline_name, args.method), reference="thick slices",
                      suptitle=f"{s} thick slices ({dz:g} mm) -> {s * factor} ({thin_mm:g} mm), {args.method}",
                      protect=protect)
        save_json(stage / "metrics.json", metrics, protect=protect)
    print(f"zsr / {args.method}: {s} thick slices ({dz:g} mm) -> {s * factor} slices ({thin_mm:g} mm), relative data "
          f"misfit {misfit:.2e}, {res.seconds:.1f} s, peak {res.peak_memory_mb:.0f} MB -> {args.out}")
    if res.training is not None:
        print(training_line(args.method, res.training))
    return 0
