"""Tasks whose operator couples the slices of a volume: ``zsr`` (thick-slice acquisition, z super-resolution)
and ``mri3d`` (3-D Cartesian MRI). ``wavepatch reconstruct VOLUME --volume --task zsr|mri3d``.

- zsr: each measured slice is the mean of ``--factor`` (default 4) consecutive thin slices (a box slice
  profile: thick, contiguous slices), noiseless unless ``--noise``; baseline cubic interpolation along z
  (:func:`~wavepatch.physics.volume_ops.cubic_z`). The slice count must be a multiple of the factor
  (``--slices`` picks a range).
- mri3d: the real volume's centred 3-D DFT, the two phase-encode axes (z, y) undersampled by a variable-density
  mask of acceleration ``--accel`` with a fully sampled centre block, readout (x) fully sampled
  (:func:`~wavepatch.physics.volume_ops.gaussian_2d_mask`), noiseless unless ``--noise``; baseline
  zero-filled (the real-image pseudo-inverse, as the 2-D ``mri`` task).

The operators act on volumes (1, 1, S, H, W); the 2-D priors see the volume as a batch of S slices
(S, 1, H, W), the same memory. :class:`StackFidelity` is the bridge: it takes slice stacks, hands the
volume to the volume's fidelity (so every conjugate-gradient step treats the volume as one vector) and returns
slice stacks. Method parameters default to those of the nearest 2-D task (:data:`PARAMETER_TASK`).
:class:`VolumeFidelity` is the reverse bridge, for 3-D priors whose sampler state is the volume: it hands the
per-slice fidelity of the axial tasks (ct-parallel, ...) slice stacks.
"""

from __future__ import annotations

import torch

from wavepatch.fidelity import DataFidelity, GaussianNoise
from wavepatch.physics.base import LinearOperator
from wavepatch.physics.noise import gaussian_noise
from wavepatch.physics.volume_ops import Cartesian3DMRI, ThickSliceZ, cubic_z, gaussian_2d_mask
from wavepatch.tasks import Task, TaskOptions

Tensor = torch.Tensor

VOLUME_TASKS = ("zsr", "mri3d")
PARAMETER_TASK = {"zsr": "sr", "mri3d": "mri"}  # whose per-task method defaults a volume task uses


class StackOperator(LinearOperator):
    """A volume operator seen from a slice stack: x (S, 1, H, W) <-> the volume (1, 1, S, H, W)."""

    def __init__(self, op: LinearOperator, slices: int) -> None:
        self.op, self.slices = op, int(slices)
        self.image_shape = (1, *op.image_shape[2:])
        self.closed_form_dagger = getattr(op, "closed_form_dagger", False)

    def _volume(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[0] != self.slices:
            raise ValueError(f"this volume operator takes a stack of {self.slices} slices (S, 1, H, W), got shape "
                             f"{tuple(x.shape)}")
        return x.reshape(1, 1, *x.shape[:1], *x.shape[2:])

    def _stack(self, v: Tensor) -> Tensor:
        return v.reshape(self.slices, 1, *v.shape[3:])

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return self.op.A(self._volume(x))

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return self._stack(self.op.A_adjoint(y))

    def A_dagger(self, y: Tensor, n_iter: int = 100, tol: float = 1e-6) -> Tensor:  # noqa: N802
        return self._stack(self.op.A_dagger(y, n_iter, tol))

    def norm(self, n_iter: int = 50, seed: int = 0) -> float:
        return self.op.norm(n_iter, seed)

    @property
    def device(self) -> torch.device:
        return self.op.device


class StackFidelity:
    """The fidelity of a volume measurement, taking and returning slice stacks (S, 1, H, W); ``op`` is the
    :class:`StackOperator`, ``y`` the volume measurement (batch 1). ``residual`` is the volume's, shape (1,)."""

    def __init__(self, base: DataFidelity, slices: int) -> None:
        self.base, self.op = base, StackOperator(base.op, slices)
        self.y, self.noiseless = base.y, base.noiseless

    def residual(self, x: Tensor) -> Tensor:
        return self.base.residual(self.op._volume(x))

    def grad(self, x: Tensor) -> Tensor:
        return self.op._stack(self.base.grad(self.op._volume(x)))

    def prox(self, x0: Tensor, weight: float, n_iter: int = 10) -> Tensor:
        return self.op._stack(self.base.prox(self.op._volume(x0), weight, n_iter))

    def project(self, x: Tensor, n_iter: int = 10) -> Tensor:
        return self.op._stack(self.base.project(self.op._volume(x), n_iter))

    def pinv(self, r: Tensor, n_iter: int = 10) -> Tensor:
        return self.op._stack(self.base.pinv(r, n_iter))

    def annealed_grad(self, x: Tensor, sigma: float) -> Tensor:
        return self.op._stack(self.base.annealed_grad(self.op._volume(x), sigma))

    def quadratic(self) -> tuple[LinearOperator, Tensor]:
        op, y = self.base.quadratic()
        return StackOperator(op, self.op.slices), y

    @property
    def scale(self) -> float:
        return self.base.scale

    def expand(self, k: int) -> StackFidelity:
        if k != self.op.slices:
            raise ValueError(f"a volume measurement has one estimate of {self.op.slices} slices; got a batch of {k}")
        return self


class VolumeOperator(LinearOperator):
    """A per-slice operator seen from a volume (3-D priors): x (1, 1, S, H, W) <-> the stack (S, 1, H, W)."""

    def __init__(self, op: LinearOperator, slices: int) -> None:
        self.op, self.slices = op, int(slices)
        self.image_shape = (1, self.slices, *op.image_shape[1:])
        self.closed_form_dagger = getattr(op, "closed_form_dagger", False)

    def _stack(self, x: Tensor) -> Tensor:
        if x.ndim != 5 or x.shape[:3] != (1, 1, self.slices):
            raise ValueError(f"this operator takes one volume (1, 1, {self.slices}, H, W), got shape {tuple(x.shape)}")
        return x.reshape(self.slices, 1, *x.shape[3:])

    def _volume(self, x: Tensor) -> Tensor:
        return x.reshape(1, 1, self.slices, *x.shape[2:])

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return self.op.A(self._stack(x))

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return self._volume(self.op.A_adjoint(y))

    def A_dagger(self, y: Tensor, n_iter: int = 100, tol: float = 1e-6) -> Tensor:  # noqa: N802
        return self._volume(self.op.A_dagger(y, n_iter, tol))

    def norm(self, n_iter: int = 50, seed: int = 0) -> float:
        return self.op.norm(n_iter, seed)

    @property
    def device(self) -> torch.device:
        return self.op.device


class VolumeFidelity:
    """A per-slice fidelity (slice stacks, batch = slices) seen from one volume (1, 1, S, H, W), for 3-D priors:
    every data step runs per slice (the slices' measurements are independent); ``residual`` sums them, (1,)."""

    def __init__(self, base: DataFidelity, slices: int) -> None:
        self.base, self.op = base, VolumeOperator(base.op, slices)
        self.y, self.noiseless = base.y, base.noiseless

    def residual(self, x: Tensor) -> Tensor:
        return self.base.residual(self.op._stack(x)).sum().reshape(1)

    def grad(self, x: Tensor) -> Tensor:
        return self.op._volume(self.base.grad(self.op._stack(x)))

    def prox(self, x0: Tensor, weight: float, n_iter: int = 10) -> Tensor:
        return self.op._volume(self.base.prox(self.op._stack(x0), weight, n_iter))

    def project(self, x: Tensor, n_iter: int = 10) -> Tensor:
        return self.op._volume(self.base.project(self.op._stack(x), n_iter))

    def pinv(self, r: Tensor, n_iter: int = 10) -> Tensor:
        return self.op._volume(self.base.pinv(r, n_iter))

    def annealed_grad(self, x: Tensor, sigma: float) -> Tensor:
        return self.op._volume(self.base.annealed_grad(self.op._stack(x), sigma))

    def quadratic(self) -> tuple[LinearOperator, Tensor]:
        op, y = self.base.quadratic()
        return VolumeOperator(op, self.op.slices), y

    @property
    def scale(self) -> float:
        return self.base.scale

    def expand(self, k: int) -> VolumeFidelity:
        if k != 1:
            raise ValueError(f"a volume prior reconstructs one volume; got a batch of {k}")
        return self


def make_volume_task(name: str, shape: tuple[int, int, int], opts: TaskOptions | None = None,
                     generator: torch.Generator | None = None) -> Task:
    """Task ``name`` (one of :data:`VOLUME_TASKS`) on volumes (1, 1, S, H, W) of ``shape`` (S, H, W): ``op``,
    ``simulate`` and ``baseline`` act on volumes; wrap ``task.fidelity(y)`` in :class:`StackFidelity` for the
    slice-stack solvers. ``generator`` draws the MRI mask."""
    opts = opts or TaskOptions()
    s, h, w = (int(v) for v in shape)
    std = opts.noise or 0.0
    if std < 0:
        raise ValueError(f"--noise must be >= 0, got {std}")
    if name == "zsr":
        if s % opts.factor:
            raise ValueError(f"z super-resolution x{opts.factor} needs a slice count divisible by {opts.factor}; "
                             f"the volume has {s} slices (pick a range with --slices 0:{s - s % opts.factor})")
        op = ThickSliceZ(opts.factor, (1, s, h, w))
        return Task(name, op, lambda x, g: gaussian_noise(op.A(x), std, g), lambda y: cubic_z(y, opts.factor),
                    "cubic-z", f"z super-resolution x{opts.factor}: thick slices, each the mean of {opts.factor} "
                    f"thin slices, noise std {std:g}", GaussianNoise(std), {"factor": opts.factor, "noise": std,
                                                                            "slice_profile": "box"})
    if name == "mri3d":
        mask = gaussian_2d_mask((s, h), opts.accel, opts.center_fraction,
                                generator or torch.Generator().manual_seed(0))
        op = Cartesian3DMRI(mask, (1, s, h, w))
        return Task(name, op, lambda x, g: gaussian_noise(op.A(x), std, g), op.A_dagger, "zero-filled",
                    f"3-D Cartesian MRI, x{opts.accel:g} over the (z, y) phase-encode plane "
                    f"({int(mask.sum())}/{s * h} lines), readout x fully sampled, noise std {std:g}",
                    GaussianNoise(std), {"accel": opts.accel, "lines": int(mask.sum()), "noise": std,
                                         "readout_axis": "x (W)"})
    raise ValueError(f"unknown volume task {name!r}; choose from {', '.join(VOLUME_TASKS)}")
