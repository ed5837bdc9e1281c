"""Per-scan parameter selection without ground truth, by measurement splitting (hold-out cross-validation).

A measurement y of a CT or MRI task splits into two independent parts: some views (CT) or some sampled
k-space columns (MRI, outside the fully sampled centre; for a real image each with its mirror column, whose data
the Hermitian symmetry makes the same) are held out, y = (y_train, y_held), with operators
A_train and A_held whose rows together are exactly those of A (``split_task``). Each candidate value theta of
one parameter reconstructs from y_train alone; its score is the held-out prediction error ||A_held x_theta -
y_held||^2, in a norm that tracks the image-domain error (plain for MRI k-space, ramp-weighted for CT
projections: ``Split.score``; also for the learned fast mode's candidates, ``FAST_AUTO_RAMP``). The value with
the lowest score reconstructs the whole measurement. Held-out prediction error estimates the error on new
measurements of the same kind without bias (Ward, "Compressed sensing with cross validation", IEEE Trans. Inf.
Theory 2009), with no noise level and no ground truth needed.

What is selected (:data:`AUTO_PARAMS`): the regularisation weight of the classical methods and PnP's denoiser
level on a log grid around the default, and for the learned fast mode the noise level it starts from
(``sigma_start``; small values stay near the ADMM-TV warm start and 0 returns it, which is what protects a prior
from images unlike its training data). Weights are in image-intensity units of a data term normalised by
||A||^2, so a value chosen on 80 % of the rows applies to all of them.

Cost: (number of candidates + 1) reconstructions, each candidate on 1 - ``fraction`` of the data; the learned
fast mode's candidates share one warm start and run ``FAST_AUTO_STEPS`` of the final run's noise levels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from wavepatch.methods import get_method
from wavepatch.physics.ct import FanBeamCT, ParallelBeamCT, ramp_filter
from wavepatch.physics.mri import MultiCoilMRI, SingleCoilMRI, centre_block, mirror_index
from wavepatch.run import RunResult, fast_warm_start, gaussian_std, simulate_measurement, solve
from wavepatch.shard import world_size
from wavepatch.tasks import Task, TaskOptions

# method -> (parameter, candidate values as factors of the default, or absolute values with "abs")
AUTO_PARAMS: dict[str, tuple[str, tuple[float, ...], str]] = {
    "admm-tv": ("lam", (0.25, 0.5, 1.0, 2.0, 4.0), "factor"),
    "fista-tv": ("lam", (0.25, 0.5, 1.0, 2.0, 4.0), "factor"),
    "l1-wavelet": ("lam", (0.25, 0.5, 1.0, 2.0, 4.0), "factor"),
    "pnp-admm": ("sigma", (0.5, 0.75, 1.0, 1.5, 2.0), "factor"),
    "red": ("lam", (0.25, 0.5, 1.0, 2.0, 4.0), "factor"),
}
# the learned samplers' fast mode: the first noise level of the warm start; 0 = no prior step (the warm start
# itself), which protects a prior from images unlike its training data (docs/results.md section 17.3)
# No higher than the default 0.1, and CT scored in the ramp norm as the classical weights are. Chosen on 30
# training cases (benchmarks/results/auto_steps, docs/results.md section 17.3b): 20-view CT of four slices of the
# training patient as they are and reduced to 64 / 128 px and brought back (the shift suite's resolution shift),
# with the CT and the MRI prior; MRI x4 on three glioma slices with both priors. 0.1 or less was best on all 30;
# against the oracle, mean / worst: ramp, 0-0.1: -0.07 / -0.43 dB; plain, 0-0.1: -0.16 / -1.27; with 0.2 as well:
# -0.14 / -1.59 (ramp), -0.25 / -1.59 (plain). (Plain scoring had been chosen with a fifth held out, where the
# ramp norm over-penalised a prior's fill-in mid-gap, section 17.3a; with a tenth the two agree on the 14
# full-resolution cases and the ramp norm is better on the resampled ones.)
FAST_AUTO = ("sigma_start", (0.0, 0.02, 0.05, 0.1), "abs")
FAST_AUTO_RAMP = True
# a tenth of the views / lines held out for the learned candidates (a fifth where there are fewer than 10 parts to
# choose from): on the 14 full-resolution cases this moved the MRI prior on CT from 0.29-0.31 dB below the oracle
# to the oracle (benchmarks/results/auto_criteria_frac10*, docs/results.md section 17.3a).
FAST_AUTO_FRACTION = 0.1
HOLDOUT_FRACTION = 0.2
# The candidates run with 2/5 of the final run's noise levels (20 of the default 50), from one shared warm start:
# on the 14 full-resolution training cases this made the same choices as full-length candidates (among 0-0.2 it
# differed on one, -0.04 dB); a fifth (10 levels) lost 0.43 dB on one case (benchmarks/results/auto_steps;
# docs/results.md section 17.3b). With the four candidates it brings --auto from about 5x the plain fast mode to
# about 2.3x.
FAST_AUTO_STEPS = 0.4


@dataclass
class Split:
    """A measurement split: ``task`` / ``y`` the training part (a task of its own: operator, baseline and noise
    model on the kept rows); ``held_op`` / ``held_y`` the held-out rows; ``ramp``: score CT residuals in the
    ramp-filtered norm. ``score(x)`` is the held-out prediction error of an estimate x (1, 1, H, W)."""

    task: Task
    y: Tensor
    held_op: object
    held_y: Tensor
    held_rows: list[int]
    ramp: bool = False

    def score(self, x: Tensor) -> float:
        """Held-out prediction error of x, in a norm that tracks the image-domain squared error: MRI k-space
        by Parseval (unitary FFT); CT projections weighted by the ramp filter, since by the Fourier slice
        theorem ||f||^2 = (1/2) int int |w| |(R f)^(w, theta)|^2 dw dtheta, so unweighted projection residuals
        would under-count fine detail and favour over-smoothed images. Measurement noise on the held-out rows
        is independent of x and adds a constant (in expectation) to every candidate's score."""
        r = self.held_op.A(x) - self.held_y
        if self.ramp:
            return float((r * ramp_filter(r, "ramp")).sum())
        return float((r.abs() ** 2).sum())


def pick_evenly(candidates: list[int], fraction: float, generator: torch.Generator) -> list[int]:
    """Every k-th of the sorted ``candidates`` (k = round(1 / fraction)) from a random offset: a held-out set
    spread evenly over the angles or frequencies, so it represents the whole measurement."""
    step = max(2, round(1.0 / fraction))
    if len(candidates) < step:
        raise ValueError(f"too few independent measurement parts to hold out {fraction:.0%} "
                         f"({len(candidates)})")
    offset = int(torch.randint(0, step, (1,), generator=generator))
    return sorted(candidates)[offset::step]


def group_mirrors(sampled: Tensor, centre: Tensor, mirror: Tensor) -> list[list[int]]:
    """The sampled parts of a k-space measurement that a split may hold out, each grouped with its mirror part when
    that is sampled too. ``sampled`` / ``centre``: flat bool (N,); ``mirror``: flat long (N,), the index of each
    part's mirror frequency (the identity where there is no symmetry to respect). A real image's k-space is
    Hermitian, so a held-out part whose mirror stayed would be predicted exactly by every candidate. Groups touching
    the ``centre`` are left out. Returns flat indices, one ascending list per group, groups by their least index."""
    idx = torch.nonzero(sampled).flatten()
    partner = mirror[idx]
    keep = ~centre[idx] & ~centre[partner]
    groups: dict[int, list[int]] = {}
    for i, key in zip(idx[keep].tolist(), torch.minimum(idx, partner)[keep].tolist(), strict=True):
        groups.setdefault(key, []).append(i)
    return [groups[k] for k in sorted(groups)]


def pick_groups(groups: list[list[int]], fraction: float, generator: torch.Generator) -> list[int]:
    """Every k-th of ``groups`` (:func:`pick_evenly`), flattened: the ascending indices a split holds out."""
    return sorted(i for g in pick_evenly(list(range(len(groups))), fraction, generator) for i in groups[g])


def inner_views(n_views: int) -> list[int]:
    """The CT views that can be held out: all but the first and the last, which fix the angular range."""
    return list(range(1, n_views - 1))


def _split_ct(task: Task, y: Tensor, fraction: float, generator: torch.Generator) -> Split:
    op = task.op
    v = op.n_views
    held = pick_evenly(inner_views(v), fraction, generator)
    held_set = set(held)
    kept = [i for i in range(v) if i not in held_set]

    def sub(views: list[int]):
        angles = op.angles[views]
        if isinstance(op, FanBeamCT):
            return FanBeamCT(op.n, source_distance=op.r_src, detector_distance=op.r_det,
                             detector_spacing=op.spacing, n_detectors=op.n_detectors, channels=op.image_shape[0],
                             projector=op.projector, angles=angles)
        return ParallelBeamCT(op.n, angles=angles, n_detectors=op.n_detectors, channels=op.image_shape[0],
                              projector=op.projector)

    fbp_filter = (task.baseline_name.split("-", 1)[1] if task.baseline_name.startswith("fbp-") else "ramp")
    train_op = sub(kept)
    train = replace(task, op=train_op, baseline=lambda yy: train_op.fbp(yy, fbp_filter),
                    params={**task.params, "views": len(kept)})
    return Split(train, y[..., kept, :], sub(held), y[..., held, :], held, ramp=True)


def _outer_columns(op) -> list[list[int]]:
    """The sampled k-space columns of an MRI operator outside its fully sampled centre (those that can be held
    out), as groups: for a real image each column with its mirror column -c when that is sampled too, since a
    real image's k-space is Hermitian and a held-out column whose mirror stayed would be predicted exactly by
    every candidate (groups touching the centre are left out); for a complex image one column per group."""
    sampled = op.mask.bool().any(dim=0)  # (W,), columns = phase encodes
    w = sampled.numel()
    centre = centre_block(sampled[None])[0]
    return group_mirrors(sampled, centre, mirror_index(w) if op.real_image else torch.arange(w))


def holdout_parts(task: Task) -> int:
    """How many independent parts of ``task``'s measurement can be held out: CT views other than the first and
    last, or sampled MRI k-space columns outside the fully sampled centre (a column and its mirror count once for
    real images); 0 for other tasks."""
    if isinstance(task.op, (ParallelBeamCT, FanBeamCT)):
        return len(inner_views(task.op.n_views))
    if isinstance(task.op, (SingleCoilMRI, MultiCoilMRI)):
        return len(_outer_columns(task.op))
    return 0


def _split_mri(task: Task, y: Tensor, fraction: float, generator: torch.Generator) -> Split:
    op = task.op
    mask = op.mask.bool()  # (H, W), columns = phase encodes
    held = pick_groups(_outer_columns(op), fraction, generator)
    cols = torch.zeros(mask.shape[1], dtype=torch.bool)
    cols[held] = True
    held_mask, train_mask = mask & cols, mask & ~cols

    def sub(m: Tensor):
        if isinstance(op, MultiCoilMRI):
            return MultiCoilMRI(m, op.sensitivity_maps, real_image=op.real_image)
        return SingleCoilMRI(m, op.image_shape, real_image=op.real_image)

    train_op = sub(train_mask)
    baseline = train_op.A_dagger
    train = replace(task, op=train_op, baseline=baseline, params={**task.params, "lines": int(train_mask.any(0).sum())})
    return Split(train, y * train_mask.to(y.real.dtype), sub(held_mask), y * held_mask.to(y.real.dtype), held)


def split_task(task: Task, y: Tensor, fraction: float = HOLDOUT_FRACTION, seed: int = 0) -> Split:
    """Hold out ``fraction`` of the independent parts of measurement y (1, ...) of ``task``: CT views (never the
    first or last), or MRI k-space columns outside the fully sampled centre. ValueError (one line) for tasks
    whose measurement has no such parts (blur, super-resolution, inpainting, phase retrieval)."""
    if not 0.0 < fraction < 0.5:
        raise ValueError(f"hold-out fraction must be in (0, 0.5), got {fraction}")
    g = torch.Generator().manual_seed(seed)
    if isinstance(task.op, (ParallelBeamCT, FanBeamCT)):
        return _split_ct(task, y, fraction, g)
    if isinstance(task.op, (SingleCoilMRI, MultiCoilMRI)):
        return _split_mri(task, y, fraction, g)
    raise ValueError(f"--auto splits CT views or MRI k-space lines; {task.name} has no independent parts to hold "
                     "out (set the parameters with --param)")


def choose_by_holdout(values: Sequence, splits: Sequence, fit: Callable, score: Callable) -> tuple[int, list[float]]:
    """The core of the selection: for every candidate ``values[i]`` and every split, ``fit(split, value)`` an
    estimate from the split's training part and ``score(split, estimate)`` its held-out error; returns (index of
    the value with the lowest total score, the totals). Non-finite scores never win."""
    scores = [0.0] * len(values)
    for split in splits:
        for i, v in enumerate(values):
            scores[i] += float(score(split, fit(split, v)))
    best = min(range(len(values)), key=lambda i: scores[i] if math.isfinite(scores[i]) else math.inf)
    return best, scores


def auto_candidates(task_name: str, method: str, fast: bool, overrides: dict, noise_std: float = 0.0
                    ) -> tuple[str, list[float]]:
    """(parameter, candidate values) that --auto tries for ``method`` on ``task_name``. ValueError if the method
    has nothing to select or the user fixed the parameter with --param."""
    entry = get_method(method)
    if entry.kind == "sampler":
        if not fast:
            raise ValueError(f"--auto selects the fast mode's start level; {method} without --fast has no "
                             "selected parameter")
        name, values, how = FAST_AUTO
    elif method in AUTO_PARAMS:
        name, values, how = AUTO_PARAMS[method]
    else:
        raise ValueError(f"--auto has nothing to select for {method} (it selects the weight of "
                         f"{', '.join(AUTO_PARAMS)} and the start level of --fast)")
    if name in overrides:
        raise ValueError(f"--auto selects {name}; do not also give --param {name}=...")
    if how == "abs":
        return name, list(values)
    default = entry.resolve(task_name, overrides, fast, noise_std=noise_std)[name]
    return name, [default * f for f in values]


def default_fraction(learned: bool, parts: int) -> float:
    """The share held out when the caller gives none: ``FAST_AUTO_FRACTION`` for the learned fast mode where at
    least 10 parts can be held out, else ``HOLDOUT_FRACTION``."""
    tenth = learned and parts >= round(1.0 / FAST_AUTO_FRACTION)
    return FAST_AUTO_FRACTION if tenth else HOLDOUT_FRACTION


def candidate_steps(method: str, task_name: str, overrides: dict, noise_std: float = 0.0) -> int:
    """Noise levels of a learned fast-mode candidate: ``FAST_AUTO_STEPS`` of the final run's, at least 4."""
    full = int(get_method(method).resolve(task_name, overrides, True, noise_std)["steps"])
    return min(full, max(4, round(full * FAST_AUTO_STEPS)))


def select_and_solve(task: Task, y: Tensor, method: str, overrides: dict | None = None, *,
                     fraction: float | None = None, folds: int = 1, seed: int = 0, optional: bool = False,
                     **solve_kwargs) -> tuple[RunResult, dict]:
    """Choose ``method``'s parameter by hold-out (``split_task``, ``auto_candidates``), then reconstruct the
    whole measurement with it. ``fraction`` held out: default ``FAST_AUTO_FRACTION`` for the learned fast mode
    (``HOLDOUT_FRACTION`` where too few parts), ``HOLDOUT_FRACTION`` otherwise. Returns (the final ``solve``
    result, a JSON-safe report: parameter, candidates, held-out scores, chosen value, fraction, held rows, the
    candidates' noise levels (learned; None for classical methods), seconds). ``solve_kwargs`` go to every ``solve``
    (``truth`` only to the final one: candidates are never scored against it). ``optional`` (--auto on by
    default, not asked for): a measurement with too few parts to hold out is reconstructed with the defaults, and
    the report says why ({"skipped": reason}), instead of a ValueError."""
    overrides = dict(overrides or {})
    fast = bool(solve_kwargs.get("fast", False))
    noise_std = gaussian_std(task)
    name, values = auto_candidates(task.name, method, fast, overrides, noise_std)
    learned = get_method(method).kind == "sampler"
    t0 = time.perf_counter()
    if fraction is None:
        fraction = default_fraction(learned, holdout_parts(task))
    try:
        splits = [split_task(task, y, fraction, seed + f) for f in range(folds)]
    except ValueError as e:
        if not optional:
            raise
        return solve(task, y, method, overrides, seed=seed, **solve_kwargs), {"skipped": str(e)}
    inner = {k: v for k, v in solve_kwargs.items() if k not in ("truth", "compare", "progress")}
    fixed, warm, steps = dict(overrides), {}, None
    if learned:  # shorter candidate runs (FAST_AUTO_STEPS) from one warm start per split
        steps = fixed["steps"] = candidate_steps(method, task.name, overrides, noise_std)
        warm = {id(sp): fast_warm_start(sp.task, sp.task.fidelity(sp.y), sp.task.baseline(sp.y)) for sp in splits}

    def fit(split: Split, v: float) -> Tensor:
        kw = {**inner, "warm_start": warm[id(split)]} if learned else inner
        return solve(split.task, split.y, method, {**fixed, name: v}, seed=seed, **kw).recon

    own_norm = FAST_AUTO_RAMP or not learned  # the split's norm, else plain

    def score(split: Split, x: Tensor) -> float:
        return (split if own_norm else replace(split, ramp=False)).score(x)

    best, scores = choose_by_holdout(values, splits, fit, score)
    select_seconds = time.perf_counter() - t0
    final = solve(task, y, method, {**overrides, name: values[best]}, seed=seed, **solve_kwargs)
    report = {"param": name, "candidates": values, "heldout_scores": scores, "chosen": values[best],
              "fraction": fraction, "folds": folds, "held_out": [sp.held_rows for sp in splits],
              "held_out_kind": "views" if isinstance(task.op, (ParallelBeamCT, FanBeamCT)) else "k-space columns",
              "score": "ramp-weighted" if splits[0].ramp and own_norm else "plain", "candidate_steps": steps,
              "selection_seconds": select_seconds}
    return final, report


SPLITTABLE_TASKS = ("ct-parallel", "ct-fan", "ct-lowdose", "mri")
# --volume --auto (wavepatch.volume_selection): the same views (or k-space columns) held out of every slice, or 3-D
# k-space points
SPLITTABLE_VOLUME_TASKS = ("ct-parallel", "ct-fan", "ct-lowdose", "mri", "mri3d")


def check_volume_auto(task_name: str, method: str | None = None) -> None:
    """ValueError (one line) if ``--volume --auto`` has nothing to hold out for ``task_name`` or nothing to select
    for ``method`` (it selects admm-tv's weight and the learned fast mode's start level; None: not checked), or
    under torchrun (the selection runs in one process)."""
    if world_size() > 1:
        raise ValueError("--volume --auto runs in one process, not under torchrun")
    if task_name not in SPLITTABLE_VOLUME_TASKS:
        raise ValueError(f"--volume --auto holds out CT views or k-space columns of every slice, or 3-D k-space points "
                         f"({', '.join(SPLITTABLE_VOLUME_TASKS)}); {task_name} has no independent parts to hold "
                         "out (set the parameters with --param)")
    if method is not None and get_method(method).kind != "sampler" and method != "admm-tv":
        raise ValueError(f"--volume --auto selects the weight of admm-tv (3-D TV) and the start level of a "
                         f"learned method's --fast, not a parameter of {method}")


def check_auto(task_name: str, method: str, fast: bool, overrides: dict, volume: bool = False) -> None:
    """ValueError (one line) before any work if --auto cannot run: a task without independent measurement parts
    (in volume mode: :data:`SPLITTABLE_VOLUME_TASKS`), a method with nothing to select, or the selected parameter
    fixed by --param."""
    if volume:
        check_volume_auto(task_name, method)
        auto_candidates(task_name, method, fast, overrides)
        return
    if task_name not in SPLITTABLE_TASKS:
        raise ValueError(f"--auto splits CT views or MRI k-space lines ({', '.join(SPLITTABLE_TASKS)}); {task_name} "
                         "has no independent parts to hold out (set the parameters with --param)")
    auto_candidates(task_name, method, fast, overrides)


def auto_by_default(task_name: str, method: str, fast: bool, overrides: dict, volume: bool = False) -> bool:
    """Whether --auto is on when the user gives neither --auto nor --no-auto: for a learned method's fast mode on
    a task whose measurement splits, unless sigma_start is set by --param or the run is a volume (docs/results.md
    section 17.3b: about 2.3x the plain fast mode, and it keeps a prior from doing worse than its ADMM-TV warm
    start on scans unlike its training data; volumes: opt-in, section 14.2). Off for the classical methods (six
    ADMM runs: about 6x)."""
    if get_method(method).kind != "sampler" or volume:
        return False
    try:  # refuses no --fast, tasks without parts to hold out, sigma_start set by --param
        check_auto(task_name, method, fast, overrides)
    except ValueError:
        return False
    return True


def auto_line(report: dict) -> str:
    """One console line saying what --auto chose, among what, and what it cost (or why it did not run)."""
    if "skipped" in report:
        return f"  --auto: not applied, defaults used ({report['skipped']})"
    cands = ", ".join(f"{v:.3g}" for v in report["candidates"])
    return (f"  --auto: {report['param']} = {report['chosen']:.3g} (of {cands}; {report['fraction']:.0%} of the "
            f"{report['held_out_kind']} held out, {report['selection_seconds']:.1f} s)")


def solve_auto(task: Task, y: Tensor, method: str, overrides: dict | None = None, auto: bool = False,
               seed: int = 0, optional: bool = False, **solve_kwargs) -> tuple[RunResult, dict | None]:
    """``solve`` (report None), or with ``auto`` ``select_and_solve`` (its report): what the CLI calls."""
    if not auto:
        return solve(task, y, method, overrides, seed=seed, **solve_kwargs), None
    return select_and_solve(task, y, method, overrides, seed=seed, optional=optional, **solve_kwargs)


def run_reconstruction_auto(img, task_name: str, opts: TaskOptions, method: str, overrides: dict | None = None,
                            seed: int = 0, auto: bool = False, optional: bool = False,
                            **solve_kwargs) -> tuple[RunResult, dict | None]:
    """``run.run_reconstruction`` (simulate from the clean image ``img``, then reconstruct) with ``auto``
    selection; the truth scores only the final reconstruction."""
    task, x, y = simulate_measurement(img, task_name, opts, seed)
    return solve_auto(task, y, method, overrides, auto, seed=seed, optional=optional, truth=x, **solve_kwargs)


__all__ = ["AUTO_PARAMS", "FAST_AUTO", "FAST_AUTO_FRACTION", "FAST_AUTO_STEPS", "HOLDOUT_FRACTION", "SPLITTABLE_TASKS",
           "SPLITTABLE_VOLUME_TASKS", "Split", "auto_by_default", "auto_candidates", "auto_line", "candidate_steps",
           "centre_block", "check_auto", "check_volume_auto", "choose_by_holdout", "default_fraction", "group_mirrors",
           "holdout_parts", "inner_views", "pick_evenly", "pick_groups", "run_reconstruction_auto",
           "select_and_solve", "solve_auto", "split_task"]
