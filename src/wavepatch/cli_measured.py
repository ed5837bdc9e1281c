"""``wavepatch reconstruct --measurement FILE``: reconstruct a measured CT sinogram (no ground truth).

The sinogram is read by :mod:`wavepatch.io.measurements` (post-log line integrals p, or raw counts with
``--counts`` and I0 from ``--dose``) and converted to the CT operator's units (unit image x pixel) with the
attenuation of the HU window and ``--pixel-mm``: y = p / mu. Views and detector bins come from the file's shape;
the rest of the geometry from the command line. metrics.json reports the data residual, time and NFE.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wavepatch.fidelity import GaussianNoise
from wavepatch.io import denormalize, save_npy, save_png
from wavepatch.io.kspace import read_kspace, sampling_mask
from wavepatch.io.measurements import counts_to_line_integrals, read_sinogram, save_sinogram
from wavepatch.io.publish import check_replaceable, staged_output
from wavepatch.io.writers import save_dicom_series
from wavepatch.physics.coil_maps import espirit_maps, phase_normalized
from wavepatch.physics.mri import MultiCoilMRI
from wavepatch.physics.noise import attenuation_per_unit
from wavepatch.report import compare_figure, save_json
from wavepatch.run import solve
from wavepatch.tasks import Task, TaskOptions, make_task

CT_TASKS = ("ct-parallel", "ct-fan", "ct-lowdose")


def ct_line_integral_scale(opts: TaskOptions) -> float:
    """mu: post-log line integral of a unit image value over one pixel (HU window and --pixel-mm)."""
    return attenuation_per_unit(opts.pixel_mm, opts.window)


def save_measurement(folder: Path, task_name: str, opts: TaskOptions, y: torch.Tensor, protect=()) -> str:
    """Write the simulated measurement as a user's file would hold it: CT as post-log line integrals (V, D);
    returns the file name."""
    if task_name not in CT_TASKS:
        raise ValueError(f"--save-measurement writes CT sinograms; {task_name} is not a CT task")
    save_sinogram(folder / "measurement.npy", y[0, 0].numpy() * ct_line_integral_scale(opts), protect)
    return "measurement.npy"


def mri_measured_task(path, slice_index: int | None, noise: float | None) -> tuple[Task, torch.Tensor, dict]:
    """(task, y (1, C, H, W), info) for measured Cartesian k-space (centred layout) of C coils.

    Mask: the file's own (fastMRI ``mask``) or the zero pattern. Coil maps: ESPIRiT (sigpy) for C > 1, a unit map
    for one coil, both rotated by the low-resolution image phase so the image they explain is real (the priors
    are magnitude images). y is scaled so the zero-filled coil-combined image's 99th percentile is 1."""
    ks = read_kspace(path, slice=slice_index)
    mask = torch.from_numpy(ks.mask if ks.mask is not None else sampling_mask(ks))
    k = torch.from_numpy(ks.data)
    maps = espirit_maps(k) if ks.n_coils > 1 else torch.ones_like(k)
    maps = phase_normalized(maps, k)
    op = MultiCoilMRI(mask, maps)
    y = (k * mask)[None]
    scale = float(torch.quantile(op.A_adjoint(y).abs().flatten(), 0.99).clamp_min(1e-30))
    y = y / scale
    std = (noise or 0.0)
    task = Task("mri", op, lambda x, g: op.A(x), op.A_adjoint, "zero-filled",
                f"measured {ks.n_coils}-coil Cartesian k-space ({float(mask.float().mean()):.0%} sampled)",
                GaussianNoise(std), {"coils": ks.n_coils, "sampled_fraction": float(mask.float().mean()),
                                     "scale": scale, "source": ks.source})
    return task, y, {"coils": ks.n_coils, "shape": list(ks.data.shape[-2:])}


def cmd_measured(args, opts: TaskOptions, overrides: dict) -> int:
    """Reconstruct ``args.measurement`` for ``args.task`` into ``args.out`` (staged, published as a whole)."""
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
        task, y, shape_info = mri_measured_task(args.measurement, args.slice, opts.noise)
        return _reconstruct_and_publish(args, task, y, overrides, out, shape_info, opts)
    sino = read_sinogram(args.measurement)
    if args.counts:
        if args.dose is None:
            raise ValueError("--counts needs the incident photon count --dose I0 (with --task ct-lowdose)")
        sino = counts_to_line_integrals(sino, opts.dose)
    views, detectors = sino.shape
    for flag, given, found in (("--views", opts.views, views), ("--detectors", opts.detectors, detectors)):
        if given is not None and given != found:
            raise ValueError(f"{flag} {given} does not match the sinogram {args.measurement}: {views} views x "
                             f"{detectors} detector bins")
    opts.views, opts.detectors = views, detectors
    task = make_task(args.task, args.size, opts)
    y = torch.from_numpy(sino / ct_line_integral_scale(opts))[None, None].float()
    return _reconstruct_and_publish(args, task, y, overrides, out, {"views": views, "detectors": detectors}, opts)


def _reconstruct_and_publish(args, task: Task, y: torch.Tensor, overrides: dict, out: Path, shape_info: dict,
                             opts: TaskOptions) -> int:
    res = solve(task, y, args.method, overrides, seed=args.seed, prior=args.prior, samples=args.samples,
                fast=args.fast, patch_mode=args.patch_mode, device=args.device, progress=not args.no_progress,
                compare=tuple(args.compare))
    r = res.recon[0, 0].numpy()
    protect = [args.measurement]
    norm = {"method": "window", "lo": opts.window[0], "hi": opts.window[1]}
    metrics = {"task": args.task, "method": args.method, "measurement": str(args.measurement), **shape_info,
               "size": list(r.shape), "seconds": res.seconds,
               "data_consistency": res.metrics, "baseline": task.baseline_name,
               "baseline_data_consistency": res.baseline_metrics, "task_params": task.params,
               "method_params": res.params, "normalisation": norm, "seed": args.seed,
               "note": "measured data: no ground truth, so no PSNR/SSIM; relative_residual = ||A x - y|| / ||y||"}
    if res.nfe is not None:
        metrics["nfe"] = res.nfe
    if res.compared:
        metrics["compared"] = {n: {"data_consistency": cm, "seconds": sec} for n, (_, cm, sec) in res.compared.items()}
    with staged_output(out, protect, command="reconstruct --measurement") as stage:
        save_npy(stage / "recon.npy", r, protect=protect)
        save_png(stage / "recon.png", np.clip(r, 0, 1), protect=protect)
        panels = [(f"{task.baseline_name}", res.baseline[0, 0].numpy()),
                  *[(name, rec[0, 0].numpy()) for name, (rec, _, _) in res.compared.items()]]
        compare_figure(stage / "compare.png", r, panels, res.baseline[0, 0].numpy(),
                       suptitle=f"{args.task} (measured): {task.description}", protect=protect,
                       truth_title=args.method)
        if res.std is not None:
            save_npy(stage / "std.npy", res.std[0, 0].numpy(), protect=protect)
        if args.dicom:
            hu = np.asarray(denormalize(np.clip(r, 0, 1), norm), dtype=np.float32)[None]
            spacing = (opts.pixel_mm, opts.pixel_mm)
            save_dicom_series(stage / "recon_dicom", hu, pixel_spacing=spacing, protect=protect)
            metrics["dicom"] = str(out / "recon_dicom")
        save_json(stage / "metrics.json", metrics, protect=protect)
    rel = res.metrics["relative_residual"]
    print(f"{args.task} / {args.method} on {task.description}: relative data residual "
          f"{rel:.4f} ({task.baseline_name}: {res.baseline_metrics['relative_residual']:.4f}), {res.seconds:.2f} s"
          f"{f', {res.nfe} NFE' if res.nfe else ''} -> {out}")
    return 0
