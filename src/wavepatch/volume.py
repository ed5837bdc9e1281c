"""Volume reconstruction: every slice of a volume measured by a 2-D task, reconstructed as one stack.

The volume (S, H, W) is normalised like a slice (HU window for CT, 0 to the 99.5th percentile otherwise),
resized in-plane to ``size`` (z kept as acquired) and handled as a batch of S slices: ``task.simulate``
measures each slice, the baseline is per slice, and the methods run on the whole stack:

- ``admm-tv``: 3-D isotropic TV over the stack, the z differences scaled by in-plane pixel / slice spacing
  (one CG over the whole volume per ADMM step), with the method's 2-D ``lam``/``rho``/``n_iter``;
- other classical methods: per slice, batched;
- learned samplers (PaDIS, DPS, ...): the 2-D prior on all slices as one batch; ``--fast`` warm-starts from
  the 3-D ADMM-TV stack. Inter-slice coupling ``coupling="tv-z"`` (after DiffusionMBIR: TV along z in the
  data step): every data-consistency step of the sampler is followed by 1-D TV denoising across slices of
  weight ``coupling_lam`` (:func:`~wavepatch.recon.tv.tv_z_prox`); ``"iscs"`` (after ISCS): the sampler's
  noise draws (warm start and re-noising) are shared across slices by spherical interpolation
  (:func:`~wavepatch.sampling.steps.slerp_slice_noise`), for samplers that re-noise (padis --fast, ddnm);
  ``"tv-z+iscs"`` both; ``"planes"`` (after TPDM's perpendicular priors, with one 2-D prior): the denoiser's calls
  take the axial, coronal and sagittal planes of the stack in turn (:func:`rotating_planes`), so the prior also
  shapes the volume along z; ``"none"`` leaves the slices independent.

Metrics (:func:`volume_metrics`): PSNR over all voxels, SSIM over the volume (3-D Gaussian SSIM, skimage, when
every side is >= 11, else the mean axial SSIM), and the mean PSNR of the axial, coronal and sagittal planes
(planes whose reference is constant are skipped). Images are on the unit scale, the reconstruction clipped to
[0, 1].
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from wavepatch.learned import cached_prior, default_prior, learned_denoiser, run_sampler
from wavepatch.methods import get_method, names
from wavepatch.metrics.image import psnr
from wavepatch.recon.admm import admm_tv
from wavepatch.recon.tv import tv_z_prox
from wavepatch.run import gaussian_std, run_classical
from wavepatch.sampling.steps import Counted, slerp_slice_noise
from wavepatch.shard import broadcast_from_root, gather_slabs, process_group, slab, world_size
from wavepatch.tasks import Task, TaskOptions, make_task
from wavepatch.types import Denoiser
from wavepatch.volume_tasks import PARAMETER_TASK, VOLUME_TASKS, make_volume_task, stack_fidelity, volume_fidelity

Tensor = torch.Tensor


@dataclass
class VolumeResult:
    """recon / baseline: (S, H, W) float32 on the unit scale; seconds: the method's wall time; nfe per slice
    (learned methods) or None; params: what the method ran with (plus coupling and z_weight); training: the
    report of a method trained on the measurement itself (``Method.geometry``), else None."""

    task: Task
    recon: np.ndarray
    baseline: np.ndarray
    seconds: float
    nfe: int | None
    params: dict = field(default_factory=dict)
    peak_memory_mb: float = 0.0
    training: dict | None = None


COUPLINGS = ("none", "tv-z", "iscs", "tv-z+iscs", "planes")
# the CLI's defaults, chosen on the training volume: benchmarks/tune_coupling.py (docs/results.md §14)
DEFAULT_COUPLING = "tv-z"
DEFAULT_COUPLING_LAM = 0.0025
SHARD_HALO = 4  # slices each process also computes on both sides of its own under torchrun, for tv-z coupling


class ZCoupled:
    """A data fidelity whose data-consistency steps (``project``, ``prox``) are followed by TV denoising
    along z (the batch = slice axis) of weight ``lam``; everything else is the wrapped fidelity's."""

    def __init__(self, base, lam: float) -> None:
        self.base, self.lam = base, float(lam)

    def __getattr__(self, name):
        return getattr(self.base, name)

    def expand(self, k: int) -> ZCoupled:
        return ZCoupled(self.base.expand(k), self.lam)

    def project(self, x: Tensor, n_iter: int = 10) -> Tensor:
        return tv_z_prox(self.base.project(x, n_iter), self.lam)

    def prox(self, x0: Tensor, weight: float, n_iter: int = 10) -> Tensor:
        return tv_z_prox(self.base.prox(x0, weight, n_iter), self.lam)


def rotating_planes(denoise: Denoiser) -> Denoiser:
    """A denoiser of slice stacks (S, 1, H, W) whose calls denoise, in turn, the axial planes (the stack as it is),
    the coronal planes (S x W, one per row) and the sagittal planes (S x H, one per column) with the same 2-D
    ``denoise``: one call is one pass over every voxel, whichever the orientation."""
    calls = [0]

    def denoise_planes(x: Tensor, sigma) -> Tensor:
        k, calls[0] = calls[0] % 3, calls[0] + 1
        if k == 0:
            return denoise(x, sigma)
        v = x[:, 0]
        order, back = ((1, 0, 2), (1, 0, 2)) if k == 1 else ((2, 0, 1), (1, 2, 0))
        out = denoise(v.permute(*order)[:, None].contiguous(), sigma)[:, 0]
        return out.permute(*back)[:, None].contiguous()
    return denoise_planes


def peak_memory_mb() -> float:
    """This process's peak resident memory so far (MB, Linux ru_maxrss)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class VolumeMeasurement:
    """A measured volume of ``shape`` (S, H, W): ``task`` (a volume task, or the 2-D task applied to every slice),
    ``y`` its measurement (volume tasks: (1, 1, ...), one for the volume; axial tasks: (S, ...), one per slice),
    ``fidelity`` for slice stacks (S, 1, H, W), ``baseline`` (S, 1, H, W), ``param_task``: the task whose method
    defaults apply (:data:`~wavepatch.volume_tasks.PARAMETER_TASK`)."""

    task: Task
    y: Tensor
    fidelity: object
    baseline: Tensor
    shape: tuple[int, int, int]

    @property
    def param_task(self) -> str:
        return PARAMETER_TASK.get(self.task.name, self.task.name)


def volume_measurement(task: Task, y: Tensor, shape: tuple[int, int, int]) -> VolumeMeasurement:
    """The :class:`VolumeMeasurement` of measurement ``y`` of ``task`` on a volume of ``shape`` (S, H, W): the
    slice-stack fidelity and the baseline (for a split measurement too: ``volume_selection``)."""
    s, h, w = (int(v) for v in shape)
    if task.name in VOLUME_TASKS:
        return VolumeMeasurement(task, y, stack_fidelity(task.fidelity(y), s), task.baseline(y).reshape(s, 1, h, w),
                                 (s, h, w))
    return VolumeMeasurement(task, y, task.fidelity(y), task.baseline(y), (s, h, w))


def measure_volume(unit: np.ndarray, task_name: str, opts: TaskOptions, seed: int = 0) -> VolumeMeasurement:
    """Simulate ``task_name`` on ``unit`` (S, H, W) in [0, 1]: a volume task on the whole volume, a 2-D task on
    every slice (same geometry). The task is drawn with ``seed``, the noise with ``seed + 1``."""
    if unit.ndim != 3 or unit.shape[0] < 2:
        raise ValueError(f"a volume needs at least 2 slices (S, H, W), got shape {unit.shape}")
    s, h, w = unit.shape
    x = torch.from_numpy(np.ascontiguousarray(unit, dtype=np.float32))[:, None]
    if task_name in VOLUME_TASKS:
        task = make_volume_task(task_name, (s, h, w), opts, torch.Generator().manual_seed(seed))
        y = task.simulate(x.reshape(1, 1, s, h, w), torch.Generator().manual_seed(seed + 1))
    else:
        task = make_task(task_name, (h, w), opts, torch.Generator().manual_seed(seed))
        y = task.simulate(x, torch.Generator().manual_seed(seed + 1))
    return volume_measurement(task, y, (s, h, w))


def admm_tv_3d(meas: VolumeMeasurement, z_weight: float = 1.0, overrides: dict | None = None,
               progress: bool = False) -> Tensor:
    """3-D ADMM-TV of the measured volume (S, 1, H, W) with the method's defaults for ``meas.param_task`` (and
    ``overrides``), from the baseline: the ``admm-tv`` volume method and the learned fast mode's warm start."""
    p = get_method("admm-tv").resolve(meas.param_task, overrides, noise_std=gaussian_std(meas.task))
    return admm_tv(meas.fidelity, lam=p["lam"], rho=p["rho"], n_iter=p["n_iter"], x0=meas.baseline,
                   progress=progress, z_weight=z_weight)


def reconstruct_volume(unit: np.ndarray, task_name: str, opts: TaskOptions, method: str,
                       overrides: dict | None = None, seed: int = 0, **solve_kwargs) -> VolumeResult | None:
    """Simulate ``task_name`` on every slice of ``unit`` (S, H, W) in [0, 1] (:func:`measure_volume`) and
    reconstruct the stack with ``method`` (:func:`solve_volume`, which takes ``solve_kwargs``). Seeds as
    ``run.run_reconstruction``: the task uses ``seed``, the noise ``seed + 1``, the sampler ``seed + 2``."""
    return solve_volume(measure_volume(unit, task_name, opts, seed), method, overrides, seed=seed, **solve_kwargs)


def solve_volume(meas: VolumeMeasurement, method: str, overrides: dict | None = None, seed: int = 0, prior=None,
                 fast: bool = False, z_weight: float = 1.0, device: str = "cpu", progress: bool = False,
                 precision: str = "auto", coupling: str | None = "none", coupling_lam: float = DEFAULT_COUPLING_LAM,
                 modality: str = "ct", warm_start: Tensor | None = None) -> VolumeResult | None:
    """Reconstruct the measured volume ``meas`` with ``method``. ``z_weight``: in-plane pixel size / slice
    spacing (3-D TV). The sampler draws with ``seed + 2``. ``warm_start`` (S, 1, H, W): the fast mode's 3-D
    ADMM-TV start of this very measurement, already computed (``--auto``'s candidates share it; one process
    only); None computes it. ``coupling`` (learned samplers):
    one of :data:`COUPLINGS` (tv-z weight ``coupling_lam`` on the unit scale, in-plane units: scaled by
    ``z_weight``); None: :data:`DEFAULT_COUPLING` for a 2-D prior, "none" for a 3-D one.

    A 3-D patch prior (``train --prior patch3d``) denoises the whole volume with random 3-D grid shifts (PaDIS in
    3-D; the shifting grid blends across slab borders, as DiffusionBlend's score blending does): the sampler's
    state is the volume (1, 1, S, H, W), its data steps run per slice
    (:func:`~wavepatch.volume_tasks.volume_fidelity`) or on the
    volume task's operator; no coupling applies and it runs in one process.
    ``modality`` ('ct' or 'mri') picks the default prior of the tasks that do not imply one (zsr).

    The volume tasks (:data:`~wavepatch.volume_tasks.VOLUME_TASKS`: zsr, mri3d) measure the whole volume at
    once; they take ``admm-tv``, the learned samplers (whose data steps see the volume as one vector) and the
    classical methods registered for that task alone (``smore`` for zsr, which also gets ``z_weight``, the
    seed and ``device``: ``Method.geometry``).

    Under torchrun (WORLD_SIZE > 1) a learned sampler's slices are split into slabs, one per process (widened by
    ``SHARD_HALO`` slices for tv-z coupling), rank 0 computes the warm start and gathers the slabs; every random
    draw is made for the whole volume and cut (``run_sampler(shard=...)``), so without tv-z the result equals
    one process's. Other ranks return None; classical methods run on rank 0."""
    if coupling is not None and coupling not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
    task, y, fidelity, baseline, param_task = meas.task, meas.y, meas.fidelity, meas.baseline, meas.param_task
    s, h, w = meas.shape
    task_name = task.name
    entry = get_method(method)
    own_task = entry.tasks is not None and task_name in entry.tasks  # a method made for this volume task
    if task_name in VOLUME_TASKS and entry.kind != "sampler" and method != "admm-tv" and not own_task:
        raise ValueError(f"--task {task_name} measures the whole volume; it takes admm-tv, a learned sampler"
                         f"{''.join(f' or {m}' for m in volume_task_methods(task_name))}, not {method}")
    noise_std = gaussian_std(task)
    params = entry.resolve(task_name if own_task else param_task, overrides, fast, noise_std=noise_std)

    def admm3d() -> Tensor:
        return admm_tv_3d(meas, z_weight, overrides if method == "admm-tv" else None, progress)

    rank, world, device = process_group(device) if world_size() > 1 else (0, 1, device)
    if world > 1 and task_name in VOLUME_TASKS:
        raise ValueError(f"--task {task_name} couples every slice: run it in one process, not under torchrun")
    if world > 1 and coupling == "planes":
        raise ValueError("--coupling planes denoises coronal and sagittal planes across all slices: run it in one "
                         "process, not under torchrun")
    if world > 1 and entry.kind != "sampler" and rank != 0:
        return None  # classical methods run on rank 0 alone
    nfe, training = None, None
    t0 = time.perf_counter()
    if entry.kind == "sampler":
        prior = prior or default_prior("mri" if param_task == "mri" or modality == "mri" else param_task,
                                        entry.prior, w)
    if entry.kind == "sampler" and cached_prior(prior, device)[1].dims == 3:
        recon, nfe, params = _sample_with_3d_prior(task, fidelity, s, entry, params, prior, admm3d, coupling, world,
                                                   seed, fast, device, progress, precision, warm_start)
    elif entry.kind == "sampler":
        coupling = coupling or DEFAULT_COUPLING
        x_fast = (warm_start if warm_start is not None else admm3d() if rank == 0 else None) if fast else None
        if fast and world > 1:
            x_fast = broadcast_from_root(x_fast, (s, 1, h, w))
        tv_z = coupling.startswith("tv-z")
        slabs = [slab(s, r, world, SHARD_HALO if tv_z else 0) for r in range(world)]
        mine = slabs[rank]
        part = fidelity if world == 1 else task.fidelity(y[mine.lo:mine.hi])
        coupled = ZCoupled(part, coupling_lam * z_weight) if tv_z else part
        recon, nfe = run_sampler(entry, coupled, prior, params, torch.Generator().manual_seed(seed + 2),
                                 samples=mine.hi - mine.lo, fast=fast,
                                 x_fast=x_fast[mine.lo:mine.hi] if fast else None, device=device,
                                 progress=progress and rank == 0, precision=precision,
                                 noise=slerp_slice_noise if "iscs" in coupling else None,
                                 shard=(s, mine.lo, mine.hi) if world > 1 else None,
                                 wrap=rotating_planes if coupling == "planes" else None)
        if world > 1:
            recon = gather_slabs(recon, slabs)
            if rank != 0:
                return None
        params = {**params, "prior": str(prior), "fast": fast, "coupling": coupling,
                  "coupling_lam": coupling_lam if tv_z else None, "processes": world,
                  "shard_halo": SHARD_HALO if tv_z and world > 1 else None,
                  "warm_start": "admm-tv (3-D TV)" if fast else None}
    elif method == "admm-tv":
        recon = admm3d()
        params = {**params, "tv": "3-D isotropic", "z_weight": z_weight}
    else:
        learned = None
        if entry.uses_learned_denoiser(params):
            prior = prior or default_prior(task.name, "patch", w)
            cached_prior(prior, device)
            learned = Counted(learned_denoiser(prior, torch.Generator().manual_seed(seed + 2), device=device,
                                               precision=precision))
        geometry = {"z_weight": z_weight, "seed": seed + 2, "device": device} if entry.geometry else {}
        recon = run_classical(entry, fidelity, baseline, {**params, **geometry}, progress, learned)
        if entry.geometry:
            recon, training = recon
            params = {**params, "z_weight": z_weight}
        if learned is not None:
            nfe, params = learned.nfe, {**params, "prior": str(prior), "coupling": "none"}
    seconds = time.perf_counter() - t0
    if not torch.isfinite(recon).all():
        raise ValueError(f"{method} produced non-finite values on the volume; try other --param values")
    return VolumeResult(task, recon[:, 0].float().numpy(), baseline[:, 0].float().numpy(), seconds, nfe,
                        params, peak_memory_mb(), training)


def volume_task_methods(task_name: str) -> list[str]:
    """The classical methods made for volume task ``task_name`` (besides admm-tv), e.g. smore for zsr."""
    return [m for m in names("classical") if (get_method(m).tasks or ()) == (task_name,)]


def _sample_with_3d_prior(task, fidelity, s, entry, params, prior, admm3d, coupling, world, seed, fast, device,
                          progress, precision, warm_start=None) -> tuple[Tensor, int, dict]:
    """The sampler with a 3-D prior on the whole volume of ``s`` slices (see :func:`reconstruct_volume`):
    (recon (S, 1, H, W), NFE, params)."""
    if coupling not in (None, "none"):
        raise ValueError(f"--coupling {coupling} couples the slices of a 2-D prior; a 3-D prior sees them together")
    if world > 1:
        raise ValueError("a 3-D prior denoises the whole volume at once: run it in one process, not under torchrun")
    vol_fidelity = fidelity.base if task.name in VOLUME_TASKS else volume_fidelity(fidelity, s)
    x_fast = (warm_start if warm_start is not None else admm3d()) if fast else None
    recon, nfe = run_sampler(entry, vol_fidelity, prior, params, torch.Generator().manual_seed(seed + 2), samples=1,
                             fast=fast, x_fast=x_fast.reshape(1, 1, s, *x_fast.shape[2:]) if fast else None,
                             device=device, progress=progress, precision=precision)
    params = {**params, "prior": str(prior), "prior_dims": 3, "fast": fast, "coupling": "none",
              "blending": "random 3-D grid shifts", "warm_start": "admm-tv (3-D TV)" if fast else None}
    return recon.reshape(s, 1, *recon.shape[3:]), nfe, params


def _plane_psnrs(x: Tensor, ref: Tensor, axis: int) -> float:
    """Mean PSNR of the planes orthogonal to ``axis`` of (S, H, W) volumes; constant reference planes skipped."""
    xs, rs = x.movedim(axis, 0), ref.movedim(axis, 0)
    keep = (rs.flatten(1).amax(1) - rs.flatten(1).amin(1)) > 0
    if not bool(keep.any()):
        return float("nan")
    values = psnr(xs[keep][:, None], rs[keep][:, None])
    return float(values[torch.isfinite(values)].mean()) if bool(torch.isfinite(values).any()) else float("inf")


def volume_ssim(x: np.ndarray, ref: np.ndarray) -> tuple[float, str]:
    """(SSIM, how): 3-D Gaussian SSIM (skimage, sigma 1.5) when every side >= 11, else the mean axial SSIM."""
    if min(x.shape) >= 11:
        from skimage.metrics import structural_similarity

        value = structural_similarity(x, ref, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
        return float(value), "3-D"
    from wavepatch.metrics.image import ssim

    value = ssim(torch.from_numpy(x)[:, None], torch.from_numpy(ref)[:, None]).mean()
    return float(value), "mean axial (a side < 11)"


def volume_metrics(recon: np.ndarray, truth: np.ndarray) -> dict:
    """PSNR / SSIM of a volume and the mean plane PSNR per orientation (see the module docstring)."""
    x = torch.from_numpy(np.clip(recon, 0, 1).astype(np.float64))
    ref = torch.from_numpy(truth.astype(np.float64))
    ssim_value, how = volume_ssim(x.numpy(), ref.numpy())
    mse = float((x - ref).pow(2).mean())
    return {"psnr": 10 * np.log10(1.0 / mse) if mse > 0 else float("inf"), "ssim": ssim_value, "ssim_kind": how,
            "psnr_axial": _plane_psnrs(x, ref, 0), "psnr_coronal": _plane_psnrs(x, ref, 1),
            "psnr_sagittal": _plane_psnrs(x, ref, 2)}
