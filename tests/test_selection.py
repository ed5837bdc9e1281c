"""Per-scan parameter selection (wavepatch.selection): the measurement splits are exact partitions of the
measurement, the hold-out principle finds a closed-form optimum, and --auto runs from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from wavepatch.io import normalize_volume, percentile_range, read_image, resize_square
from wavepatch.io.readers import ImageVolume
from wavepatch.physics.mri import mirror_index
from wavepatch.run import simulate_measurement, solve
from wavepatch.selection import (
    FAST_AUTO,
    FAST_AUTO_FRACTION,
    FAST_AUTO_RAMP,
    FAST_AUTO_STEPS,
    auto_by_default,
    auto_candidates,
    check_auto,
    choose_by_holdout,
    holdout_parts,
    select_and_solve,
    split_task,
)
from wavepatch.tasks import make_task, task_options


def _phantom(n: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n] / n - 0.5
    img = 0.6 * (xx**2 / 0.16 + yy**2 / 0.1 < 1) + 0.3 * ((xx - 0.1) ** 2 + yy**2 < 0.01)
    return img.astype(np.float32)


@pytest.mark.parametrize("name,opts", [("ct-parallel", {"views": 30}), ("ct-fan", {"views": 24}),
                                       ("ct-lowdose", {"views": 40}), ("mri", {"accel": 4.0})])
def test_split_parts_add_back_to_the_whole(name, opts):
    """Training and held-out parts partition the measurement: their normal operators sum to A^T A, the rows of
    y are split without loss, and the held-out parts spread over the measurement (not one block)."""
    n = 48
    task = make_task(name, n, task_options(name, **opts), torch.Generator().manual_seed(3))
    x = torch.rand(1, 1, n, n, dtype=torch.float64)
    y = task.op.A(x)
    split = split_task(task, y, fraction=0.2, seed=1)
    full = task.op.A_adjoint(task.op.A(x))
    parts = split.task.op.A_adjoint(split.task.op.A(x)) + split.held_op.A_adjoint(split.held_op.A(x))
    torch.testing.assert_close(parts, full, rtol=1e-9, atol=1e-9)
    # the parts' data are the measurement's own rows
    torch.testing.assert_close(split.task.op.A(x), split.y)
    torch.testing.assert_close(split.held_op.A(x), split.held_y)
    total = float((y.abs() ** 2).sum())
    assert float((split.y.abs() ** 2).sum() + (split.held_y.abs() ** 2).sum()) == pytest.approx(total, rel=1e-9)
    held = split.held_rows
    if name.startswith("ct"):
        assert len(held) >= 2 and min(np.diff(held)) >= 4  # every 5th part, spread out
        assert 0 not in held and task.op.n_views - 1 not in held
        assert split.task.op.n_views + len(held) == task.op.n_views
    else:  # only outer sampled columns are held out: the fully sampled centre stays in training
        sampled = task.op.mask.any(0)
        assert len(held) >= 1 and all(bool(sampled[c]) for c in held)
        assert all(abs(c - n // 2) > 2 for c in held)
        mirror = mirror_index(n)  # a held column leaves with its mirror (Hermitian k-space of a real image)
        assert all(int(mirror[c]) in held or not bool(sampled[mirror[c]]) for c in held)


def test_mri_split_leaves_nothing_of_the_held_columns_in_the_training_part():
    """A real image's k-space is Hermitian, so a held-out column whose mirror stayed in the training part would be
    predicted exactly by any real reconstruction. With the mirrors held out together, the training part's exact
    real pseudo-inverse predicts none of the held-out data: its score is the held-out energy."""
    g = torch.Generator().manual_seed(0)
    for seed in range(3):
        task = make_task("mri", 160, task_options("mri", accel=4.0), torch.Generator().manual_seed(seed))
        y = task.simulate(torch.rand(1, 1, 160, 160, generator=g), g)
        split = split_task(task, y, 0.2, seed)
        energy = float(split.held_y.abs().pow(2).sum())
        x_train = split.task.op.A_dagger(split.y)
        assert energy > 0 and split.score(x_train) == pytest.approx(energy, rel=1e-4)


def test_holdout_finds_the_closed_form_optimum():
    """K noisy copies y_k = x + n_k of x ~ N(0, s^2 I), n_k ~ N(0, sigma^2 I): the ridge estimate from any subset
    of copies, sum(y_k) / (k + lam), has the lowest expected error of every kind at lam = sigma^2 / s^2
    (the posterior mean, whatever k), so holding copies out must pick that value from a grid around it."""
    g = torch.Generator().manual_seed(0)
    s, sigma, k, dim = 1.0, 2.0, 10, 20000
    x = s * torch.randn(dim, generator=g, dtype=torch.float64)
    y = x + sigma * torch.randn(k, dim, generator=g, dtype=torch.float64)
    lam_opt = sigma**2 / s**2
    values = [lam_opt * f for f in (0.25, 0.5, 1.0, 2.0, 4.0)]
    splits = [[i, (i + 5) % k] for i in range(5)]  # 5 folds, 2 copies held out each

    def fit(held, lam):
        kept = [i for i in range(k) if i not in held]
        return y[kept].sum(0) / (len(kept) + lam)

    def score(held, est):
        return float(((y[held] - est) ** 2).sum())

    best, scores = choose_by_holdout(values, splits, fit, score)
    assert values[best] == lam_opt
    assert scores[best] < min(scores[:best] + scores[best + 1:])
    # non-finite scores never win
    best, _ = choose_by_holdout([1.0, 2.0], [0], lambda _, v: v, lambda _, e: float("nan") if e == 1.0 else e)
    assert best == 1


def test_selection_matches_the_truth_on_a_mistuned_weight():
    """Low-dose CT of a phantom with candidate weights far apart: hold-out selection (no ground truth) picks the
    candidate that the ground truth ranks best, and its report is complete."""
    img = _phantom(48)
    task, x, y = simulate_measurement(img, "ct-lowdose", task_options("ct-lowdose", views=60, dose=2e3), seed=0)
    overrides = {"n_iter": 30}
    res, report = select_and_solve(task, y, "admm-tv", overrides, truth=x)
    psnrs = [solve(task, y, "admm-tv", {**overrides, "lam": v}, truth=x).metrics["psnr"]
             for v in report["candidates"]]
    assert report["param"] == "lam" and len(report["heldout_scores"]) == len(report["candidates"]) == 5
    assert psnrs[report["candidates"].index(report["chosen"])] >= max(psnrs) - 0.3
    assert res.params["lam"] == report["chosen"]
    assert report["held_out_kind"] == "views" and report["selection_seconds"] > 0


@pytest.mark.slow
def test_fast_mode_selection_offers_the_warm_start():
    """The learned fast mode's candidates start with sigma_start = 0 (the ADMM-TV warm start itself, no network
    call) and are scored in the norm ``FAST_AUTO_RAMP`` says (on CT: ramp-weighted), a tenth of the views held
    out; with 8 views (6 inner ones) it holds out a fifth."""
    img = _phantom(48)
    task, x, y = simulate_measurement(img, "ct-parallel", task_options("ct-parallel", views=20), seed=0)
    res, report = select_and_solve(task, y, "padis", {"steps": 2}, fast=True, truth=x)
    assert report["candidates"] == list(FAST_AUTO[1]) and report["candidates"][0] == 0.0
    assert report["score"] == ("ramp-weighted" if FAST_AUTO_RAMP else "plain")
    assert res.params["sigma_start"] == report["chosen"]
    assert report["fraction"] == FAST_AUTO_FRACTION  # 2 of the 20 views
    split = split_task(task, y, FAST_AUTO_FRACTION)
    assert split.held_rows == report["held_out"][0] and len(split.held_rows) == 2
    warm = solve(split.task, split.y, "admm-tv", {}).recon
    assert split.ramp and report["heldout_scores"][0] == pytest.approx(
        replace(split, ramp=FAST_AUTO_RAMP).score(warm), rel=1e-5)
    task, x, y = simulate_measurement(img, "ct-parallel", task_options("ct-parallel", views=8), seed=0)
    _, report = select_and_solve(task, y, "padis", {"steps": 1}, fast=True, truth=x)
    assert report["fraction"] == 0.2 and len(report["held_out"][0]) in (1, 2)


@pytest.mark.slow
def test_fast_mode_candidates_are_shorter_runs_from_one_warm_start():
    """The learned candidates run FAST_AUTO_STEPS of the final run's noise levels (10 -> 4) from the split's
    ADMM-TV warm start, computed once: each held-out score equals that of an independent run with those levels;
    the final run has the full 10 (or none, if the warm start itself won). Four views leave too few to hold out:
    an error when --auto was asked for, the defaults and a 'skipped' report when it is only on by default."""
    img = _phantom(48)
    task, x, y = simulate_measurement(img, "ct-parallel", task_options("ct-parallel", views=20), seed=0)
    res, report = select_and_solve(task, y, "padis", {"steps": 10}, fast=True, truth=x)
    assert report["candidate_steps"] == round(10 * FAST_AUTO_STEPS) == 4
    assert res.nfe == (10 if report["chosen"] > 0 else 0)  # sigma_start 0: the warm start, no network call
    split = replace(split_task(task, y, FAST_AUTO_FRACTION), ramp=FAST_AUTO_RAMP)
    for v, got in zip(report["candidates"][1:], report["heldout_scores"][1:], strict=True):
        alone = solve(split.task, split.y, "padis", {"steps": 4, "sigma_start": v}, fast=True)
        assert alone.nfe == 4 and split.score(alone.recon) == pytest.approx(got, rel=1e-5)
    task, x, y = simulate_measurement(img, "ct-parallel", task_options("ct-parallel", views=4), seed=0)
    with pytest.raises(ValueError, match="too few"):
        select_and_solve(task, y, "padis", {"steps": 2}, fast=True)
    res, report = select_and_solve(task, y, "padis", {"steps": 2}, fast=True, optional=True, truth=x)
    assert "too few" in report["skipped"] and res.params["sigma_start"] == 0.1 and res.nfe == 2


def test_auto_is_on_by_default_only_for_the_learned_fast_mode_on_split_tasks():
    assert auto_by_default("ct-parallel", "padis", True, {})
    assert auto_by_default("mri", "ddnm", True, {})
    assert not auto_by_default("ct-parallel", "padis", False, {})  # no fast mode: nothing selected
    assert not auto_by_default("ct-parallel", "admm-tv", False, {})  # classical: opt-in (about 6x)
    assert not auto_by_default("deblur", "padis", True, {})  # nothing to hold out
    assert not auto_by_default("ct-parallel", "padis", True, {"sigma_start": 0.05})  # the user chose
    assert not auto_by_default("ct-parallel", "padis", True, {}, volume=True)


def test_holdout_parts_counts_what_a_split_can_hold_out():
    """CT: every view but the first and last; MRI: the sampled columns outside the centre, which is what a split
    with fraction 1/k holds out every k-th of; tasks without independent parts: 0."""
    g = torch.Generator().manual_seed(0)
    assert holdout_parts(make_task("ct-parallel", 32, task_options("ct-parallel", views=20), g)) == 18
    assert holdout_parts(make_task("deblur", 32, task_options("deblur"), g)) == 0
    task = make_task("mri", 64, task_options("mri", accel=4.0), g)
    y = task.simulate(torch.rand(1, 1, 64, 64, generator=g), g)
    parts = holdout_parts(task)
    assert parts > 0 and len(split_task(task, y, 0.2).held_rows) in (parts // 5, parts // 5 + 1)


def test_auto_refusals():
    with pytest.raises(ValueError, match="nothing to select"):
        auto_candidates("ct-parallel", "fbp", False, {})
    with pytest.raises(ValueError, match="without --fast"):
        auto_candidates("ct-parallel", "padis", False, {})
    with pytest.raises(ValueError, match="do not also give"):
        auto_candidates("mri", "admm-tv", False, {"lam": 0.1})
    with pytest.raises(ValueError, match="no independent parts"):
        check_auto("deblur", "admm-tv", False, {})
    check_auto("ct-parallel", "admm-tv", False, {}, volume=True)  # volume mode: views of every slice
    check_auto("mri3d", "padis", True, {}, volume=True)
    with pytest.raises(ValueError, match="zsr has no independent parts"):
        check_auto("zsr", "admm-tv", False, {}, volume=True)
    with pytest.raises(ValueError, match="not a parameter of pnp-admm"):
        check_auto("ct-parallel", "pnp-admm", False, {}, volume=True)
    name, values = auto_candidates("ct-parallel", "padis", True, {})
    assert name == "sigma_start" and 0.1 in values


def test_percentile_normalisation_round_trip():
    """0 stays 0 and the 99.5th percentile maps to 1 (clipped above); below it the map inverts exactly; signed
    data start at the 0.5th percentile; a constant image does not divide by zero."""
    rng = np.random.default_rng(0)
    data = rng.gamma(2.0, 50.0, size=(3, 40, 40)).astype(np.float32)
    vol = ImageVolume(data=data, kind="mri", spacing=(1.0, 1.0), source="synthetic")
    unit, info = normalize_volume(vol)
    lo, hi = percentile_range(data)
    assert info["method"] == "percentile" and info["lo"] == lo == 0.0 and info["hi"] == pytest.approx(hi)
    assert unit.min() >= 0 and unit.max() == 1.0 and np.mean(unit >= 1.0) == pytest.approx(0.005, abs=0.001)
    from wavepatch.io import denormalize
    below = data < hi
    np.testing.assert_allclose(denormalize(unit, info)[below], data[below], rtol=1e-5, atol=1e-3)
    lo, hi = percentile_range(data - 100.0)
    assert lo == pytest.approx(np.percentile(data - 100.0, 0.5), rel=1e-5)
    assert percentile_range(np.zeros((4, 4))) == (0.0, 1.0)
    assert percentile_range(np.ones((4, 4))) == (0.0, 1.0)


def test_training_and_reconstruction_normalise_alike(tmp_path):
    """A JPEG slice reaches a prior's training set and `reconstruct` with the same unit image."""
    from PIL import Image

    from wavepatch.io import SliceDataset
    rng = np.random.default_rng(1)
    img = (rng.gamma(2.0, 30.0, size=(64, 64))).clip(0, 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.jpg", quality=95)
    ds = SliceDataset(tmp_path, size=32)
    unit, _ = normalize_volume(read_image(tmp_path / "a.jpg"))
    np.testing.assert_allclose(ds.images[0, 0].numpy(), resize_square(unit[0], 32), atol=1e-6)


@pytest.mark.slow
def test_cli_auto(tmp_path, ct_files):
    out = tmp_path / "auto"
    cmd = [sys.executable, "-m", "wavepatch.cli", "reconstruct", str(ct_files[0]), "--task", "ct-parallel",
           "--views", "20", "--method", "admm-tv", "--auto", "--size", "48", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "--auto: lam =" in proc.stdout
    report = json.loads((out / "metrics.json").read_text())["auto"]
    assert report["chosen"] in report["candidates"] and report["param"] == "lam"
    bad = [sys.executable, "-m", "wavepatch.cli", "reconstruct", str(ct_files[0]), "--task", "deblur", "--method",
           "admm-tv", "--auto", "--size", "48", "--out", str(tmp_path / "b")]
    bad = subprocess.run(bad, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no independent parts" in bad.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_cli_learned_fast_mode_selects_by_default(tmp_path, ct_files):
    """`reconstruct --method padis --fast` runs --auto without being asked (metrics.json has the report);
    --no-auto gives the hand-set default; with 4 views nothing can be held out and the run goes on with the
    defaults, saying so."""
    from wavepatch.cli import main

    base = ["reconstruct", str(ct_files[0]), "--task", "ct-parallel", "--method", "padis", "--fast", "--steps",
            "2", "--size", "48", "--no-progress"]
    assert main([*base, "--views", "20", "--out", str(tmp_path / "a")]) == 0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["auto"]["param"] == "sigma_start" and metrics["auto"]["candidate_steps"] == 2
    assert metrics["method_params"]["sigma_start"] == metrics["auto"]["chosen"]
    assert main([*base, "--views", "20", "--no-auto", "--out", str(tmp_path / "b")]) == 0
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert "auto" not in metrics and metrics["method_params"]["sigma_start"] == 0.1
    assert main([*base, "--views", "4", "--out", str(tmp_path / "c")]) == 0
    assert "too few" in json.loads((tmp_path / "c" / "metrics.json").read_text())["auto"]["skipped"]


@pytest.mark.slow
def test_cli_auto_on_a_measurement_file(tmp_path, ct_files):
    """A sinogram file goes through the same selection: asked for (admm-tv: the report and the chosen weight) and
    by default for the learned fast mode; a method with nothing to select is refused (exit 2, nothing written)."""
    from wavepatch.cli import main

    sim = ["reconstruct", str(ct_files[0]), "--task", "ct-parallel", "--views", "20", "--size", "48", "--method",
           "fbp", "--save-measurement", "--no-progress", "--out", str(tmp_path / "sim")]
    assert main(sim) == 0
    base = ["reconstruct", "--measurement", str(tmp_path / "sim" / "measurement.npy"), "--task", "ct-parallel",
            "--size", "48", "--no-progress"]
    assert main([*base, "--method", "admm-tv", "--param", "n_iter=20", "--auto", "--out", str(tmp_path / "a")]) == 0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["auto"]["param"] == "lam" and metrics["method_params"]["lam"] == metrics["auto"]["chosen"]
    assert main([*base, "--method", "padis", "--fast", "--steps", "2", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["auto"]["param"] == "sigma_start"
    assert main([*base, "--method", "fbp", "--auto", "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "c").exists()


def test_split_multicoil_mri():
    """Measured multi-coil k-space splits the same way: coil maps kept, columns partitioned."""
    from wavepatch.fidelity import GaussianNoise
    from wavepatch.physics.mri import MultiCoilMRI, gaussian_1d_mask
    from wavepatch.tasks import Task

    n, coils = 32, 3
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(coils, n, n, generator=g, dtype=torch.complex128)
    op = MultiCoilMRI(gaussian_1d_mask(n, 3.0, generator=g), maps)
    task = Task("mri", op, lambda x, gen: op.A(x), op.A_dagger, "zero-filled", "multi-coil", GaussianNoise(0.0))
    x = torch.rand(1, 1, n, n, dtype=torch.float64)
    y = op.A(x)
    split = split_task(task, y, 0.2, seed=0)
    torch.testing.assert_close(split.y + split.held_y, y)
    torch.testing.assert_close(split.task.op.A_adjoint(split.y) + split.held_op.A_adjoint(split.held_y),
                               op.A_adjoint(y))
    assert isinstance(split.task.op, MultiCoilMRI) and split.task.op.n_coils == coils
