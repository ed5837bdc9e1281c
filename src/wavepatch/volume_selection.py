"""Per-volume parameter selection (``reconstruct VOLUME --volume --auto``): the hold-out cross-validation of
:mod:`wavepatch.selection` on a whole volume's measurement, one choice for the volume.

What is held out:

- axial CT tasks (ct-parallel, ct-fan, ct-lowdose): the same views of every slice
  (:func:`~wavepatch.selection.split_task` on the per-slice task: the measurement (S, 1, V, D) splits along V),
  scored in the ramp-weighted norm as in 2-D;
- slice-by-slice 2-D MRI (``mri``): the same k-space columns of every slice, each with its mirror column, as in
  2-D (the measurement (S, 1, H, W) splits along W), plain norm;
- ``mri3d``: phase-encode points (z, y) outside the fully sampled centre block, each with its mirror point
  (-z, -y). The volume is real, so its k-space is Hermitian: a point whose mirror stays in the training part
  would be predicted exactly by every candidate, and scores nothing (:func:`split_mri3d`). Scored in the plain
  k-space norm (unitary DFT: Parseval).
- ``zsr`` is refused: a thick slice held out leaves a gap of two thick slices, a different problem from the
  task's.

The candidates, their length and the fraction held out are the 2-D ones (``FAST_AUTO``, ``FAST_AUTO_STEPS``,
``FAST_AUTO_FRACTION`` for the learned fast mode, ``AUTO_PARAMS`` and ``HOLDOUT_FRACTION`` for ``admm-tv``); the
learned candidates share one 3-D ADMM-TV warm start per split. Cost: the split's warm start, the candidates
(``sigma_start`` 0 is free) and the final run: about 2x the plain fast mode. One process only (not under
torchrun).
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch
from torch import Tensor

from wavepatch.methods import get_method
from wavepatch.physics.ct import FanBeamCT, ParallelBeamCT
from wavepatch.physics.mri import mirror_index
from wavepatch.physics.volume_ops import Cartesian3DMRI
from wavepatch.run import gaussian_std
from wavepatch.selection import (
    Split,
    auto_candidates,
    candidate_steps,
    centre_block,
    check_volume_auto,
    choose_by_holdout,
    default_fraction,
    group_mirrors,
    holdout_parts,
    pick_groups,
    split_task,
)
from wavepatch.volume import VolumeMeasurement, VolumeResult, admm_tv_3d, solve_volume, volume_measurement


def mirror_groups(mask: Tensor) -> list[list[int]]:
    """The sampled points of a phase-encode mask (S, H) that can be held out, grouped with their mirror point
    (frequency (-z, -y)) when it is sampled too: flat indices, one list per group, in order of the group's
    first index. Groups touching the centre block (:func:`centre_block`) are left out."""
    s, h = mask.shape
    mirror = (mirror_index(s)[:, None] * h + mirror_index(h)[None, :]).flatten()
    return group_mirrors(mask.flatten(), centre_block(mask).flatten(), mirror)


def split_mri3d(task, y: Tensor, fraction: float, generator: torch.Generator) -> Split:
    """Hold out ``fraction`` of the mirror groups (:func:`mirror_groups`) of an mri3d measurement y (1, 1, S, H, W),
    spread evenly over the (z, y) plane: a training task of its own (operator on the kept points, zero-filled
    baseline) and the held-out operator and data, as :class:`~wavepatch.selection.Split` (plain norm)."""
    op = task.op
    mask2d = op.mask[:, :, 0]
    held_points = pick_groups(mirror_groups(mask2d), fraction, generator)
    held = torch.zeros(mask2d.numel(), dtype=torch.bool)
    held[held_points] = True
    held = held.reshape(mask2d.shape)
    train_mask = mask2d & ~held
    train_op, held_op = Cartesian3DMRI(train_mask, op.image_shape), Cartesian3DMRI(held, op.image_shape)
    train = replace(task, op=train_op, baseline=train_op.A_dagger,
                    params={**task.params, "lines": int(train_mask.sum())})
    return Split(train, y * train_op.mask.to(y.real.dtype), held_op, y * held_op.mask.to(y.real.dtype),
                 held_points)


def volume_holdout_parts(meas: VolumeMeasurement) -> int:
    """How many independent parts of the volume's measurement can be held out: views per slice other than the
    first and last (CT), mirror groups outside the centre (mri3d); 0 otherwise."""
    if isinstance(meas.task.op, Cartesian3DMRI):
        return len(mirror_groups(meas.task.op.mask[:, :, 0]))
    return holdout_parts(meas.task)


def split_volume(meas: VolumeMeasurement, fraction: float, seed: int = 0) -> tuple[VolumeMeasurement, Split]:
    """(the training part as a measured volume, the split) of ``meas``: see the module docstring."""
    check_volume_auto(meas.task.name)
    if not 0.0 < fraction < 0.5:
        raise ValueError(f"hold-out fraction must be in (0, 0.5), got {fraction}")
    if isinstance(meas.task.op, Cartesian3DMRI):
        split = split_mri3d(meas.task, meas.y, fraction, torch.Generator().manual_seed(seed))
    else:
        split = split_task(meas.task, meas.y, fraction, seed)
    return volume_measurement(split.task, split.y, meas.shape), split


def _as_measured(x_stack: Tensor, meas: VolumeMeasurement) -> Tensor:
    """A slice stack (S, 1, H, W) in the layout of the task's operator: a volume (1, 1, S, H, W) for the volume
    tasks, the stack itself for the per-slice tasks."""
    s, h, w = meas.shape
    return x_stack.reshape(1, 1, s, h, w) if isinstance(meas.task.op, Cartesian3DMRI) else x_stack


def select_and_solve_volume(meas: VolumeMeasurement, method: str, overrides: dict | None = None, *, seed: int = 0,
                            fast: bool = False, z_weight: float = 1.0, fraction: float | None = None,
                            **solve_kwargs) -> tuple[VolumeResult, dict]:
    """Choose ``method``'s parameter for the whole volume by hold-out, then reconstruct ``meas`` with it
    (:func:`~wavepatch.volume.solve_volume`, which takes ``solve_kwargs``). Returns (the result, a JSON-safe
    report as the 2-D ``select_and_solve``'s: parameter, candidates, held-out scores, chosen value, fraction, held
    parts, score norm, candidate noise levels, seconds)."""
    overrides = dict(overrides or {})
    noise_std = gaussian_std(meas.task)
    learned = get_method(method).kind == "sampler"
    check_volume_auto(meas.task.name, method)
    name, values = auto_candidates(meas.param_task, method, fast, overrides, noise_std)
    t0 = time.perf_counter()
    if fraction is None:
        fraction = default_fraction(learned, volume_holdout_parts(meas))
    part, split = split_volume(meas, fraction, seed)
    inner = {k: v for k, v in solve_kwargs.items() if k != "progress"}
    fixed, warm, steps = dict(overrides), None, None
    if learned:  # shorter candidate runs from one warm start, as in 2-D
        steps = fixed["steps"] = candidate_steps(method, meas.param_task, overrides, noise_std)
        warm = admm_tv_3d(part, z_weight)

    def fit(sp: Split, v: float) -> Tensor:  # one split: its training part is ``part``
        r = solve_volume(part, method, {**fixed, name: v}, seed=seed, fast=fast, z_weight=z_weight,
                         warm_start=warm, **inner)
        return torch.from_numpy(r.recon)[:, None]

    def score(sp: Split, x: Tensor) -> float:
        return sp.score(_as_measured(x, meas))

    best, scores = choose_by_holdout(values, [split], fit, score)
    select_seconds = time.perf_counter() - t0
    final = solve_volume(meas, method, {**overrides, name: values[best]}, seed=seed, fast=fast, z_weight=z_weight,
                         **solve_kwargs)
    points = isinstance(meas.task.op, Cartesian3DMRI)
    if points:
        kind = "k-space points with their mirrors"
    elif isinstance(meas.task.op, (ParallelBeamCT, FanBeamCT)):
        kind = "views of every slice"
    else:
        kind = "k-space columns of every slice, with their mirrors"
    report = {"param": name, "candidates": values, "heldout_scores": scores, "chosen": values[best],
              "fraction": fraction, "folds": 1, "held_out": len(split.held_rows) if points else [split.held_rows],
              "held_out_kind": kind,
              "score": "ramp-weighted" if split.ramp else "plain", "candidate_steps": steps,
              "selection_seconds": select_seconds}
    return final, report


__all__ = ["mirror_groups", "select_and_solve_volume", "split_mri3d", "split_volume",
           "volume_holdout_parts"]
