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
:func:`volume_fidelity` is the reverse bridge, for 3-D priors whose sampler state is the volume: it hands the
per-slice fidelity of the axial tasks (ct-parallel, ...) slice stacks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from wavepatch.fidelity import DataFidelity, GaussianNoise
from wavepatch.physics.base import LinearOperator
from wavepatch.physics.noise import gaussian_noise
from wavepatch.physics.volume_ops import Cartesian3DMRI, ThickSliceZ, cubic_z, gaussian_2d_mask
from wavepatch.tasks import Task, TaskOptions

Tensor = torch.Tensor

VOLUME_TASKS = ("zsr", "mri3d")
PARAMETER_TASK = {"zsr": "sr", "mri3d": "mri"}  # whose per-task method defaults a volume task uses


class ReshapedOperator(LinearOperator):
    """``op`` seen through a reshape of its images: the caller's x (``image_shape`` per item) becomes the
    operator's by ``to_base``, and images come back by ``from_base`` (same memory, only the batch / slice axes
    are regrouped)."""

    def __init__(self, op: LinearOperator, image_shape: tuple[int, ...], to_base: Callable[[Tensor], Tensor],
                 from_base: Callable[[Tensor], Tensor]) -> None:
        self.op, self.image_shape, self.to_base, self.from_base = op, tuple(image_shape), to_base, from_base
        self.closed_form_dagger = getattr(op, "closed_form_dagger", False)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return self.op.A(self.to_base(x))

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return self.from_base(self.op.A_adjoint(y))

    def A_dagger(self, y: Tensor, n_iter: int = 100, tol: float = 1e-6) -> Tensor:  # noqa: N802
        return self.from_base(self.op.A_dagger(y, n_iter, tol))

    def norm(self, n_iter: int = 50, seed: int = 0) -> float:
        return self.op.norm(n_iter, seed)

    @property
    def device(self) -> torch.device:
        return self.op.device


class ReshapedFidelity:
    """A data fidelity ``base`` seen through the reshape of ``op`` (a :class:`ReshapedOperator` around
    ``base.op``): images in and out in the caller's layout, every solve (CG) in the base's. ``residual`` is the
    base's summed, (1,): the caller holds one estimate (``expand`` takes only its batch, ``batch``)."""

    def __init__(self, base: DataFidelity, op: ReshapedOperator, batch: int) -> None:
        self.base, self.op, self.batch = base, op, int(batch)
        self.y, self.noiseless = base.y, base.noiseless

    def _solve(self, method: str, x: Tensor, *args) -> Tensor:
        return self.op.from_base(getattr(self.base, method)(self.op.to_base(x), *args))

    def residual(self, x: Tensor) -> Tensor:
        return self.base.residual(self.op.to_base(x)).sum().reshape(1)

    def grad(self, x: Tensor) -> Tensor:
        return self._solve("grad", x)

    def prox(self, x0: Tensor, weight: float, n_iter: int = 10) -> Tensor:
        return self._solve("prox", x0, weight, n_iter)

    def project(self, x: Tensor, n_iter: int = 10) -> Tensor:
        return self._solve("project", x, n_iter)

    def pinv(self, r: Tensor, n_iter: int = 10) -> Tensor:
        return self.op.from_base(self.base.pinv(r, n_iter))

    def annealed_grad(self, x: Tensor, sigma: float) -> Tensor:
        return self._solve("annealed_grad", x, sigma)

    def quadratic(self) -> tuple[LinearOperator, Tensor]:
        op, y = self.base.quadratic()
        return ReshapedOperator(op, self.op.image_shape, self.op.to_base, self.op.from_base), y

    @property
    def scale(self) -> float:
        return self.base.scale

    def expand(self, k: int) -> ReshapedFidelity:
        if k != self.batch:
            raise ValueError(f"this measurement has one estimate of batch {self.batch}; got a batch of {k}")
        return self


def _checked(x: Tensor, shape: tuple[int, ...], what: str) -> Tensor:
    if tuple(x.shape) != shape:
        raise ValueError(f"{what} takes shape {shape}, got {tuple(x.shape)}")
    return x


def stack_fidelity(volume_fidelity: DataFidelity, slices: int) -> ReshapedFidelity:
    """The fidelity of a volume measurement (images (1, 1, S, H, W)) for solvers holding slice stacks
    (S, 1, H, W): the 2-D priors' view of the volume tasks; every CG sees the volume as one vector."""
    s, (_, _, h, w) = int(slices), volume_fidelity.op.image_shape

    def to_volume(x: Tensor) -> Tensor:
        return _checked(x, (s, 1, h, w), "a slice stack of this volume").reshape(1, 1, s, h, w)

    def to_stack(v: Tensor) -> Tensor:
        return v.reshape(s, 1, h, w)

    op = ReshapedOperator(volume_fidelity.op, (1, h, w), to_volume, to_stack)
    return ReshapedFidelity(volume_fidelity, op, s)


def volume_fidelity(stack_fidelity_: DataFidelity, slices: int) -> ReshapedFidelity:
    """A per-slice fidelity (slice stacks (S, 1, H, W), the axial 2-D tasks) for solvers holding the volume
    (1, 1, S, H, W), i.e. 3-D priors: every data step still runs per slice."""
    s, (_, h, w) = int(slices), stack_fidelity_.op.image_shape

    def to_stack(v: Tensor) -> Tensor:
        return _checked(v, (1, 1, s, h, w), "one volume").reshape(s, 1, h, w)

    def to_volume(x: Tensor) -> Tensor:
        return x.reshape(1, 1, s, h, w)

    op = ReshapedOperator(stack_fidelity_.op, (1, s, h, w), to_stack, to_volume)
    return ReshapedFidelity(stack_fidelity_, op, 1)


def make_volume_task(name: str, shape: tuple[int, int, int], opts: TaskOptions | None = None,
                     generator: torch.Generator | None = None) -> Task:
    """Task ``name`` (one of :data:`VOLUME_TASKS`) on volumes (1, 1, S, H, W) of ``shape`` (S, H, W): ``op``,
    ``simulate`` and ``baseline`` act on volumes; wrap ``task.fidelity(y)`` with :func:`stack_fidelity` for the
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
