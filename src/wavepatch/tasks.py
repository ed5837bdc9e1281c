"""Imaging tasks: a forward operator, its measurement noise and a baseline inverse, built from CLI-level options.

A task is built from an image shape (H, W): it turns a clean image x (B, 1, H, W) on the unit scale into a
measurement y (``simulate``), y into the baseline reconstruction (``baseline``: FBP, zero-filled inverse FFT,
...) and into its data fidelity (``task.fidelity(y)``: operator + noise model, :mod:`wavepatch.fidelity`), which
is all every reconstruction method receives. CT needs square images.

Defaults (documented in the README):
- ct-parallel / ct-fan: 60 views, noiseless sinogram unless ``noise`` > 0 (PaDIS' protocol); FBP with
  the Hann filter as the baseline.
- ct-lowdose: parallel beam, 180 views, Poisson counts with I0 = 1e4 photons per bin (``dose``), no
  electronic noise, the bias-corrected log log(I0 / (N + 1/2)) (:mod:`wavepatch.physics.noise`); attenuation
  from the HU window (air = 0) and ``pixel_mm`` (default 1.4 mm, a 36 cm field of view at 256 px).
- mri: single coil, 1D Cartesian mask along columns, x4 Gaussian density, fastMRI centre fractions;
  k-space simulated by FFT of a magnitude image; noiseless unless ``noise`` > 0.
- deblur: kernel presets of :mod:`wavepatch.physics.blur`, or ``varying``: a spatially varying Gaussian PSF (std
  0.5 px at the centre to 3 px at the corners, :mod:`wavepatch.physics.blur_varying`); Gaussian noise std 0.01
  (PaDIS' setting).
- sr: x4 with a Gaussian anti-aliasing kernel (sigma = F/2), noise std 0.01.
- inpaint: 30 % of pixels kept at random, or a centred box hiding a quarter of the image; noiseless.
- phase-retrieval: |F(pad(x))|, oversampling 2 per axis (:mod:`wavepatch.physics.phase_retrieval`), Gaussian
  noise std 0.01 on the magnitudes; baseline Fienup's HIO. Nonlinear: only HIO
  and DPS apply; estimates are aligned with the truth over the measurement's trivial ambiguities (translation,
  twin image) before they are scored (``Task.align``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from wavepatch.fidelity import DataFidelity, GaussianNoise, NoiseModel, PoissonNoise, make_fidelity
from wavepatch.physics.base import LinearOperator
from wavepatch.physics.blur import BLUR_KERNELS, Blur, make_blur_kernel
from wavepatch.physics.blur_varying import VARYING_DEFAULTS, VaryingBlur
from wavepatch.physics.ct import FanBeamCT, ParallelBeamCT, parallel_beam_angles
from wavepatch.physics.inpaint import Inpainting, box_mask, random_pixel_mask
from wavepatch.physics.mri import SingleCoilMRI, gaussian_1d_mask, uniform_1d_mask
from wavepatch.physics.noise import attenuation_per_unit, gaussian_noise, low_dose_sinogram
from wavepatch.physics.phase_retrieval import FourierMagnitude, hio, resolve_ambiguities
from wavepatch.physics.superres import SuperResolution

Tensor = torch.Tensor

TASKS = ("ct-parallel", "ct-fan", "ct-lowdose", "mri", "deblur", "sr", "inpaint", "phase-retrieval")


@dataclass
class TaskOptions:
    """Every task parameter the CLI exposes; each task reads the ones it needs."""

    views: int | None = None  # CT: number of views (default 60; 180 for ct-lowdose)
    dose: float = 1e4  # ct-lowdose: incident photons per detector bin and view (I0)
    electronic_noise: float = 0.0  # ct-lowdose: electronic noise std in photon counts
    pixel_mm: float = 1.4  # ct-lowdose: pixel side in millimetres
    accel: float = 4.0  # mri: acceleration R
    mask: str | None = None  # mri: gaussian|uniform; inpaint: random|box
    center_fraction: float | None = None  # mri: fully sampled centre (default 0.08 for x4, 0.04 for x8)
    kernel: str = "gaussian"  # deblur: gaussian|uniform|motion|heavy|varying
    factor: int = 4  # sr: downsampling factor
    keep: float = 0.3  # inpaint random: fraction of observed pixels
    oversampling: float | None = None  # phase-retrieval: padded grid / image side per axis (default 2)
    noise: float | None = None  # Gaussian measurement noise std (measurement units); None: task default
    fbp_filter: str = "hann"  # CT baseline filter: ramp|hann
    window: tuple[float, float] = (-1000.0, 1000.0)  # HU window of the unit image (for ct-lowdose physics)
    detectors: int | None = None  # CT: detector bins (default: enough to cover the image diagonal)
    arc: float | None = None  # parallel-beam CT: angular range in degrees (default 180)
    source_distance: float | None = None  # ct-fan: source to rotation centre, in pixels (default 2 N)
    detector_distance: float | None = None  # ct-fan: rotation centre to detector, in pixels (default 2 N)
    det_spacing: float | None = None  # ct-fan: detector bin width in pixels (default: one pixel at the centre)


@dataclass
class Task:
    """A task instance: ``op`` maps (B, 1, H, W) images to measurements, ``noise`` is the measurement's noise
    model; ``params`` the task's parameters as recorded in metrics.json. See the module docstring."""

    name: str
    op: LinearOperator
    simulate: Callable[[Tensor, torch.Generator], Tensor]
    baseline: Callable[[Tensor], Tensor]
    baseline_name: str
    description: str
    noise: NoiseModel = field(default_factory=GaussianNoise)
    params: dict = field(default_factory=dict)
    align: Callable[[Tensor, Tensor], Tensor] | None = None  # (estimate, truth) -> the estimate's equivalent

    @property
    def linear(self) -> bool:
        """Whether the forward model is linear (every method applies) or not (phase retrieval: hio, dps)."""
        return getattr(self.op, "linear", True)

    def fidelity(self, y: Tensor) -> DataFidelity:
        """The data fidelity of measurement y (B, ...) under this task's operator and noise model."""
        return make_fidelity(self.op, y, self.noise)


# The TaskOptions fields each task reads; any other option given for that task is refused, not ignored.
TASK_OPTIONS = {
    "ct-parallel": ("views", "noise", "fbp_filter", "pixel_mm", "detectors", "arc"),
    "ct-fan": ("views", "noise", "fbp_filter", "pixel_mm", "detectors", "source_distance", "detector_distance",
               "det_spacing"),
    "ct-lowdose": ("views", "dose", "electronic_noise", "pixel_mm", "fbp_filter", "detectors", "arc"),
    "mri": ("accel", "mask", "center_fraction", "noise"),
    "deblur": ("kernel", "noise"),
    "sr": ("factor", "noise"),
    "inpaint": ("mask", "keep", "noise"),
    "phase-retrieval": ("oversampling", "noise"),
    # volume-only tasks (wavepatch.volume_tasks): the operator couples the slices
    "zsr": ("factor", "noise"),
    "mri3d": ("accel", "center_fraction", "noise"),
}


def option_flag(name: str) -> str:
    """The CLI flag of a TaskOptions field."""
    return "--filter" if name == "fbp_filter" else "--" + name.replace("_", "-")


def task_options(task: str, **given) -> TaskOptions:
    """TaskOptions from the options a user gave (None = not given); ValueError for one that ``task`` does not use."""
    if task not in TASK_OPTIONS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    for name, value in given.items():
        if value is not None and name not in TASK_OPTIONS[task]:
            users = [t for t, names in TASK_OPTIONS.items() if name in names]
            raise ValueError(f"{option_flag(name)} does not apply to {task} (it is an option of {', '.join(users)})")
    return TaskOptions(**{k: v for k, v in given.items() if v is not None})


def _gaussian_simulate(op: LinearOperator, std: float) -> Callable[[Tensor, torch.Generator], Tensor]:
    return lambda x, g: gaussian_noise(op.A(x), std, g)


def _check_options(opts: TaskOptions) -> None:
    """Reject option values no task can use, with the CLI flag in the message."""
    for name in ("dose", "electronic_noise", "pixel_mm", "accel", "center_fraction", "keep", "noise", "arc",
                 "source_distance", "detector_distance", "det_spacing", "oversampling"):
        value = getattr(opts, name)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{option_flag(name)} must be a finite number, got {value}")
    checks = [
        (opts.views is None or opts.views <= 100_000, f"--views must be at most 100000, got {opts.views}"),
        (opts.factor <= 64, f"--factor must be at most 64, got {opts.factor}"),
        (opts.detectors is None or 1 <= opts.detectors <= 100_000, f"--detectors must be in [1, 100000], got "
         f"{opts.detectors}"),
        (opts.arc is None or 0 < opts.arc <= 360, f"--arc must be in (0, 360] degrees, got {opts.arc}"),
        (opts.det_spacing is None or opts.det_spacing > 0, f"--det-spacing must be positive, got {opts.det_spacing}"),
        (opts.detector_distance is None or opts.detector_distance >= 0,
         f"--detector-distance must be >= 0, got {opts.detector_distance}"),
        (opts.views is None or opts.views >= 1, f"--views must be at least 1, got {opts.views}"),
        (opts.dose > 0, f"--dose (I0) must be positive, got {opts.dose:g}"),
        (opts.electronic_noise >= 0, f"--electronic-noise must be >= 0, got {opts.electronic_noise:g}"),
        (opts.pixel_mm > 0, f"--pixel-mm must be positive, got {opts.pixel_mm:g}"),
        (opts.accel >= 1, f"--accel must be at least 1, got {opts.accel:g}"),
        (opts.center_fraction is None or 0 < opts.center_fraction <= 1,
         f"--center-fraction must be in (0, 1], got {opts.center_fraction}"),
        (opts.factor >= 1, f"--factor must be at least 1, got {opts.factor}"),
        (0 < opts.keep <= 1, f"--keep must be in (0, 1], got {opts.keep:g}"),
        (opts.noise is None or opts.noise >= 0, f"--noise must be >= 0, got {opts.noise}"),
        (opts.oversampling is None or 1 <= opts.oversampling <= 8,
         f"--oversampling must be in [1, 8], got {opts.oversampling}"),
        (opts.fbp_filter in ("ramp", "hann"), f"--filter must be ramp or hann, got {opts.fbp_filter!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def _ct_operator(name: str, n: int, views: int, opts: TaskOptions) -> ParallelBeamCT | FanBeamCT:
    """The CT operator of ``name`` with the geometry options of ``opts`` (defaults: see TaskOptions)."""
    if name == "ct-fan":
        return FanBeamCT(n, views, opts.source_distance, opts.detector_distance, opts.det_spacing, opts.detectors)
    arc = 180.0 if opts.arc is None else opts.arc
    return ParallelBeamCT(n, angles=parallel_beam_angles(views, arc), n_detectors=opts.detectors)


def _image_shape(image_shape: int | tuple[int, ...]) -> tuple[int, int]:
    shape = (int(image_shape),) * 2 if isinstance(image_shape, int) else tuple(int(s) for s in image_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"tasks reconstruct 2-D images of shape (H, W); got image shape {shape}")
    return shape


def make_task(name: str, image_shape: int | tuple[int, int], opts: TaskOptions | None = None,
              generator: torch.Generator | None = None) -> Task:
    """Build task ``name`` (one of :data:`TASKS`) for single-channel images of ``image_shape`` (H, W), or N
    for N x N.

    ``generator`` draws the random parts of the operator itself (MRI and inpainting masks)."""
    opts = opts or TaskOptions()
    _check_options(opts)
    h, w = _image_shape(image_shape)
    n = h
    g = generator or torch.Generator().manual_seed(0)
    if name in ("ct-parallel", "ct-fan", "ct-lowdose") and h != w:
        raise ValueError(f"{name} reconstructs square images; got {h} x {w}")
    if name in ("ct-parallel", "ct-fan"):
        views = 60 if opts.views is None else opts.views
        op = _ct_operator(name, n, views, opts)
        std = opts.noise or 0.0
        geometry = (f"parallel beam over {180.0 if opts.arc is None else opts.arc:g} deg" if name == "ct-parallel"
                    else "fan beam over 360 deg")
        return Task(name, op, _gaussian_simulate(op, std), lambda y: op.fbp(y, opts.fbp_filter),
                    f"fbp-{opts.fbp_filter}", f"{views}-view {geometry}, noise std {std:g}", GaussianNoise(std),
                    {"views": views, "noise": std})
    if name == "ct-lowdose":
        views = 180 if opts.views is None else opts.views
        op = _ct_operator(name, n, views, opts)
        mu = attenuation_per_unit(opts.pixel_mm, opts.window)

        def simulate(x: Tensor, gen: torch.Generator) -> Tensor:
            post_log, _ = low_dose_sinogram(mu * op.A(x), opts.dose, opts.electronic_noise, gen)
            return post_log / mu  # back to the operator's units (image value x pixel)

        return Task(name, op, simulate, lambda y: op.fbp(y, opts.fbp_filter), f"fbp-{opts.fbp_filter}",
                    f"low-dose parallel-beam CT, {views} views, I0 = {opts.dose:g} photons/bin, "
                    f"pixel {opts.pixel_mm:g} mm", PoissonNoise(opts.dose, mu), {"views": views, "dose": opts.dose,
                                                    "electronic_noise": opts.electronic_noise,
                                                    "pixel_mm": opts.pixel_mm, "mu_per_unit": mu})
    if name == "mri":
        kind = opts.mask or "gaussian"
        if kind not in ("gaussian", "uniform"):
            raise ValueError(f"--mask for mri must be gaussian or uniform, got {kind!r}")
        make_mask = gaussian_1d_mask if kind == "gaussian" else uniform_1d_mask
        mask = make_mask(w, opts.accel, opts.center_fraction, generator=g)
        op = SingleCoilMRI(mask, (1, h, w))
        std = opts.noise or 0.0
        return Task(name, op, _gaussian_simulate(op, std), op.A_dagger, "zero-filled",
                    f"single-coil Cartesian MRI, x{opts.accel:g} {kind} 1D mask "
                    f"({int(mask.sum())}/{w} lines), k-space by FFT of a magnitude image, noise std {std:g}",
                    GaussianNoise(std), {"accel": opts.accel, "mask": kind, "lines": int(mask.sum()), "noise": std})
    if name == "deblur":
        if opts.kernel not in (*BLUR_KERNELS, "varying"):
            raise ValueError(f"--kernel must be one of {sorted(BLUR_KERNELS) + ['varying']}, got {opts.kernel!r}")
        op = (VaryingBlur((1, h, w), **VARYING_DEFAULTS) if opts.kernel == "varying"
              else Blur(make_blur_kernel(opts.kernel), (1, h, w)))
        std = 0.01 if opts.noise is None else opts.noise
        return Task(name, op, _gaussian_simulate(op, std), lambda y: y.clone(), "blurred",
                    f"deblurring, {opts.kernel} kernel, noise std {std:g}", GaussianNoise(std),
                    {"kernel": opts.kernel, "noise": std})
    if name == "phase-retrieval":
        op = FourierMagnitude((1, h, w), 2.0 if opts.oversampling is None else opts.oversampling)
        std = 0.01 if opts.noise is None else opts.noise
        return Task(name, op, _gaussian_simulate(op, std), lambda y: hio(op, y), "hio",
                    f"Fourier phase retrieval, |F(pad(x))| oversampled x{op.oversampling:g} per axis "
                    f"({op.padded[0]} x {op.padded[1]}), noise std {std:g} on the magnitudes", GaussianNoise(std),
                    {"oversampling": op.oversampling, "noise": std},
                    align=lambda est, ref: resolve_ambiguities(est, ref, op))
    if name == "sr":
        if h % opts.factor or w % opts.factor:
            raise ValueError(f"--size {h} x {w} must be divisible by --factor {opts.factor}")
        op = SuperResolution(opts.factor, (1, h, w))
        std = 0.01 if opts.noise is None else opts.noise
        return Task(name, op, _gaussian_simulate(op, std),
                    lambda y: F.interpolate(y, scale_factor=opts.factor, mode="bicubic", align_corners=False),
                    "bicubic", f"x{opts.factor} super-resolution, Gaussian anti-aliasing, noise std {std:g}",
                    GaussianNoise(std), {"factor": opts.factor, "noise": std})
    if name == "inpaint":
        kind = opts.mask or "random"
        if kind == "random":
            mask = random_pixel_mask((h, w), opts.keep, g)
        elif kind == "box":
            mask = box_mask((h, w))
        else:
            raise ValueError(f"--mask for inpaint must be random or box, got {kind!r}")
        op = Inpainting(mask, (1, h, w))
        std = opts.noise or 0.0
        return Task(name, op, _gaussian_simulate(op, std), op.A_dagger, "masked",
                    f"inpainting, {kind} mask ({float(mask.float().mean()):.0%} observed), noise std {std:g}",
                    GaussianNoise(std), {"mask": kind, "observed": float(mask.float().mean()), "noise": std})
    raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")

