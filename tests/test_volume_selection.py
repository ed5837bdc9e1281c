"""``reconstruct --volume --auto``: hold-out splits of a whole volume's measurement (the same views of every
slice; 3-D k-space points with their Hermitian mirrors), the candidates' scores, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wavepatch.cli import main
from wavepatch.physics.mri import mirror_index
from wavepatch.physics.volume_ops import gaussian_2d_mask
from wavepatch.selection import centre_block
from wavepatch.tasks import TaskOptions
from wavepatch.volume import measure_volume, solve_volume
from wavepatch.volume_selection import (
    mirror_groups,
    select_and_solve_volume,
    split_volume,
    volume_holdout_parts,
)


def _volume(s: int = 8, n: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth random volume (S, n, n) in [0, 1]: blurred noise, so TV and the priors have something to do."""
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(1, 1, s, n, n, generator=g)
    v = torch.nn.functional.avg_pool3d(v, 3, stride=1, padding=1)
    return ((v - v.min()) / (v.max() - v.min()))[0, 0].numpy().astype(np.float32)


def test_centre_block_is_the_fully_sampled_rectangle_around_dc():
    mask = torch.zeros(9, 12, dtype=torch.bool)
    mask[3:6, 4:9] = True  # the block, DC at (4, 6)
    mask[0, 0] = mask[8, 11] = True  # isolated outer points
    expected = torch.zeros(9, 12, dtype=torch.bool)
    expected[3:6, 4:9] = True
    assert torch.equal(centre_block(mask), expected)
    mask[2, 4:9] = True  # a sampled row along the block's edge joins it
    expected[2, 4:9] = True
    assert torch.equal(centre_block(mask), expected)
    mask[4, 6] = False
    assert not centre_block(mask).any()
    cols = torch.tensor([1, 0, 1, 1, 1, 1, 0, 1], dtype=torch.bool)  # 2-D MRI's columns: S = 1, DC at 4
    assert centre_block(cols[None])[0].tolist() == [False, False, True, True, True, True, False, False]


def test_mirror_groups_pair_each_point_with_its_hermitian_mirror():
    """Every group is a sampled point and, when sampled, its mirror (-z, -y); no group touches the centre block;
    every sampled point outside the groups is in the centre block or mirrors into it."""
    mask = gaussian_2d_mask((16, 24), 4.0, generator=torch.Generator().manual_seed(1))
    s, h = mask.shape
    mz, my = mirror_index(s), mirror_index(h)
    centre = centre_block(mask).flatten()
    grouped = set()
    for group in mirror_groups(mask):
        assert 1 <= len(group) <= 2
        for i in group:
            z, y = divmod(i, h)
            j = int(mz[z]) * h + int(my[y])
            assert bool(mask.flatten()[i]) and not centre[i] and not centre[j]
            assert (j in group) == bool(mask.flatten()[j])
            grouped.add(i)
    for i in torch.nonzero(mask.flatten()).flatten().tolist():
        if i not in grouped:
            z, y = divmod(i, h)
            assert centre[i] or centre[int(mz[z]) * h + int(my[y])]


def test_mri3d_split_leaves_nothing_of_the_held_points_in_the_training_part():
    """The two parts' masks partition the measurement's; y splits exactly; and since every held point leaves with
    its mirror, the training part's exact real pseudo-inverse predicts nothing there: its held-out score is the
    held-out energy ||y_held||^2 (a split that kept a mirror would predict that point exactly)."""
    meas = measure_volume(_volume(), "mri3d", TaskOptions(accel=4.0), seed=0)
    part, split = split_volume(meas, 0.2, seed=3)
    full, train, held = meas.task.op.mask, part.task.op.mask, split.held_op.mask
    assert torch.equal(train | held, full) and not bool((train & held).any()) and bool(held.any())
    assert torch.allclose(part.y + split.held_y, meas.y)
    x_train = part.task.op.A_dagger(part.y)
    energy = float(split.held_y.abs().pow(2).sum())
    assert energy > 0 and split.score(x_train) == pytest.approx(energy, rel=1e-5)
    truth = torch.from_numpy(_volume()).reshape(1, 1, 8, 32, 32)
    assert split.score(truth) == pytest.approx(0.0, abs=1e-8)
    assert volume_holdout_parts(meas) == len(mirror_groups(full[:, :, 0]))


def test_ct_volume_split_holds_out_the_same_views_of_every_slice():
    meas = measure_volume(_volume(6), "ct-parallel", TaskOptions(views=20), seed=0)
    part, split = split_volume(meas, 0.1, seed=0)
    held = split.held_rows
    assert len(held) == 2 and 0 not in held and 19 not in held
    assert part.y.shape == (6, 1, 18, meas.y.shape[-1]) and split.held_y.shape == (6, 1, 2, meas.y.shape[-1])
    assert torch.equal(split.held_y, meas.y[..., held, :])
    assert part.baseline.shape == (6, 1, 32, 32) and volume_holdout_parts(meas) == 18
    with pytest.raises(ValueError, match="zsr has no independent parts"):
        split_volume(measure_volume(_volume(8), "zsr", TaskOptions(factor=4), seed=0), 0.1)


def test_mri_volume_split_holds_out_the_same_mirror_columns_of_every_slice():
    """Slice-by-slice 2-D MRI: the held columns are the same in every slice and closed under the mirror
    (-c mod W); the parts partition y; the training part's exact real pseudo-inverse predicts none of the
    held-out energy, the truth all of it."""
    vol = _volume(4, 64)
    meas = measure_volume(vol, "mri", TaskOptions(accel=2.0), seed=1)
    part, split = split_volume(meas, 0.3, seed=1)
    held = sorted(split.held_rows)
    w = vol.shape[-1]
    sampled = meas.task.op.mask.bool().any(0)
    mirrors = [int(mirror_index(w)[c]) for c in held]
    assert held and all(m in held or not bool(sampled[m]) for m in mirrors)  # a sampled mirror leaves too
    assert any(m in held and m != c for m, c in zip(mirrors, held, strict=True))  # a pair held out here
    assert torch.allclose(part.y + split.held_y, meas.y)
    assert not bool(split.held_y[..., [c for c in range(w) if c not in held]].abs().gt(0).any())
    assert bool(split.held_y[..., held].abs().gt(0).any(dim=-2).all())  # every slice, every held column
    energy = float(split.held_y.abs().pow(2).sum())
    x_train = part.task.op.A_dagger(part.y)
    assert energy > 0 and split.score(x_train) == pytest.approx(energy, rel=1e-5)
    assert split.score(torch.from_numpy(vol)[:, None]) == pytest.approx(0.0, abs=1e-8)
    parts, groups_held = volume_holdout_parts(meas), len({min(c, m) for c, m in zip(held, mirrors, strict=True)})
    assert groups_held in (parts // 3, -(-parts // 3))  # every 3rd (fraction 0.3) of the mirror groups


def test_volume_selection_scores_equal_independent_runs_and_pick_the_lowest():
    """admm-tv on noisy 3-D MRI: each candidate's reported score equals an independent 3-D ADMM-TV run on the
    training part, scored on the held-out points; the chosen weight has the lowest; the final run uses it."""
    meas = measure_volume(_volume(), "mri3d", TaskOptions(accel=4.0, noise=0.02), seed=0)
    res, report = select_and_solve_volume(meas, "admm-tv", {"n_iter": 15}, seed=0)
    part, split = split_volume(meas, report["fraction"], seed=0)
    for v, reported in zip(report["candidates"], report["heldout_scores"], strict=True):
        r = solve_volume(part, "admm-tv", {"n_iter": 15, "lam": v})
        assert split.score(torch.from_numpy(r.recon).reshape(1, 1, 8, 32, 32)) == pytest.approx(reported, rel=1e-4)
    assert report["chosen"] == report["candidates"][int(np.argmin(report["heldout_scores"]))]
    assert res.params["lam"] == report["chosen"] and report["score"] == "plain"
    assert report["held_out_kind"] == "k-space points with their mirrors" and report["held_out"] > 0


def test_cli_volume_auto_learned_fast(tmp_path, capsys, mri_path):
    out = tmp_path / "vol"
    code = main(["reconstruct", str(mri_path), "--volume", "--task", "ct-parallel", "--views", "12", "--size", "32",
                 "--method", "padis", "--fast", "--steps", "5", "--auto", "--no-progress", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    m = json.loads((out / "metrics.json").read_text())
    auto = m["auto"]
    assert auto["param"] == "sigma_start" and auto["candidates"] == [0.0, 0.02, 0.05, 0.1]
    assert auto["candidate_steps"] == 4 and auto["held_out_kind"] == "views of every slice"
    assert auto["fraction"] == 0.1 and len(auto["held_out"][0]) == 1  # 10 inner views: a tenth
    assert m["method_params"]["sigma_start"] == auto["chosen"] and "--auto: sigma_start" in captured.out


@pytest.mark.parametrize("argv, words", [
    (["--task", "zsr", "--method", "admm-tv", "--auto"], "zsr has no independent parts"),
    (["--task", "ct-parallel", "--method", "fbp", "--auto"], "not a parameter of fbp"),
    (["--task", "ct-parallel", "--method", "padis", "--auto"], "without --fast"),
])
def test_cli_volume_auto_refusals(tmp_path, capsys, mri_path, argv, words):
    code = main(["reconstruct", str(mri_path), "--volume", "--size", "32", "--slices", "0:4", *argv,
                 "--no-progress", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert not (tmp_path / "o").exists()


def test_cli_volume_auto_refused_under_torchrun(tmp_path, capsys, mri_path, monkeypatch):
    """Several processes would each run the selection: --volume --auto runs in one, and says so in one line."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code = main(["reconstruct", str(mri_path), "--volume", "--size", "32", "--slices", "0:4", "--task",
                 "ct-parallel", "--views", "12", "--method", "admm-tv", "--auto", "--no-progress",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not under torchrun" in err[0], err
    assert not (tmp_path / "o").exists()
