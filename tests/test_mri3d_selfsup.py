"""Scan-specific self-supervised 3-D MRI (``--method zs-ssl``): the readout split into planes is exact, the
data-consistency step solves the real least squares, the zero-filled start is the volume operator's
pseudo-inverse, splits keep mirror points together, the method beats zero-filling and fits the data, and the CLI
runs it and refuses it where it does not apply."""

from __future__ import annotations

import torch

from wavepatch.physics.mri import centre_block
from wavepatch.physics.volume_ops import Cartesian3DMRI, gaussian_2d_mask
from wavepatch.recon.mri3d_selfsup import (
    mirrored,
    mri3d_selfsup,
    plane_fft,
    readout_planes,
    real_dc,
    split_mask,
    zero_filled,
)
from wavepatch.tasks import task_options
from wavepatch.volume import measure_volume, solve_volume, volume_metrics


def _volume_and_data(shape=(6, 8, 5), accel=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, *shape, dtype=torch.float64, generator=g)
    mask = gaussian_2d_mask(shape[:2], accel, generator=g)
    op = Cartesian3DMRI(mask, (1, *shape))
    return x, mask, op, op.A(x)


def test_readout_planes_are_the_kspace_of_each_plane():
    for shape in ((6, 8, 5), (7, 5, 4)):  # even and odd sizes: the centred DFT's mirror differs
        x, mask, _, y = _volume_and_data(shape)
        planes = readout_planes(y)
        assert planes.shape == (shape[2], shape[0], shape[1])
        for w in range(shape[2]):
            assert torch.allclose(planes[w], plane_fft(x[0, 0, :, :, w]) * mask, atol=1e-12)


def test_zero_filled_is_the_volume_operators_pseudo_inverse():
    for shape in ((6, 8, 5), (7, 5, 4)):
        _, mask, op, y = _volume_and_data(shape, accel=3.0, seed=1)
        ours = zero_filled(readout_planes(y), mask).permute(1, 2, 0)
        assert torch.allclose(ours, op.A_dagger(y)[0, 0], atol=1e-12)


def test_real_dc_solves_the_real_constrained_least_squares():
    """Against the normal equations of the explicit real matrix [Re; Im] of M F on the real plane."""
    s, h, mu = 5, 6, 0.3
    g = torch.Generator().manual_seed(2)
    mask = torch.rand(s, h, generator=g) < 0.5
    basis = torch.eye(s * h, dtype=torch.float64).reshape(s * h, s, h)
    columns = plane_fft(basis) * mask  # (s h, s, h): the image of each basis plane
    a = torch.cat([columns.real.reshape(s * h, -1), columns.imag.reshape(s * h, -1)], dim=1).T
    p_true = torch.rand(2, s, h, dtype=torch.float64, generator=g)
    d = plane_fft(p_true) * mask + 0.1 * torch.randn(2, s, h, dtype=torch.complex128, generator=g) * mask
    z = torch.rand(2, s, h, dtype=torch.float64, generator=g)
    rhs = torch.cat([d.real.reshape(2, -1), d.imag.reshape(2, -1)], dim=1) @ a + mu * z.reshape(2, -1)
    expected = torch.linalg.solve(a.T @ a + mu * torch.eye(s * h, dtype=torch.float64), rhs.T).T
    assert torch.allclose(real_dc(d, mask, z, mu).reshape(2, -1), expected, atol=1e-10)


def test_splits_keep_mirror_points_together_and_the_centre_in():
    mask = gaussian_2d_mask((16, 20), 3.0, generator=torch.Generator().manual_seed(0))
    centre = centre_block(mask)
    assert centre.any()
    for seed in range(3):
        kept, held = split_mask(mask, 0.4, torch.Generator().manual_seed(seed), centre)
        assert not (kept & held).any() and torch.equal(kept | held, mask)
        assert not (held & centre).any() and held.any()
        # a held point's mirror, where sampled, is held too: the real constraint gives nothing away
        assert not (held & mirrored(kept)).any()
        share = held.sum() / (mask & ~centre & ~mirrored(centre)).sum()
        assert 0.25 < float(share) < 0.55


def test_zs_ssl_beats_zero_filling_and_fits_the_data(blob_volume):
    unit = blob_volume((16, 32, 32), n=30).numpy()
    meas = measure_volume(unit, "mri3d", task_options("mri3d", accel=4))
    params = {"steps": 60, "batch": 4, "unrolls": 3, "depth": 4, "width": 8, "start": "zero-filled"}
    res = solve_volume(meas, "zs-ssl", params, seed=0)
    base, ours = volume_metrics(res.baseline, unit), volume_metrics(res.recon, unit)
    assert ours["psnr"] > base["psnr"] + 2.0, (ours["psnr"], base["psnr"])
    recon = torch.from_numpy(res.recon).double()[None, None]
    assert torch.allclose(meas.task.op.A(recon), meas.y.to(torch.complex128), atol=1e-5)  # noiseless: projected
    again = solve_volume(meas, "zs-ssl", params, seed=0)
    assert (again.recon == res.recon).all()  # the seed fixes the weights and the splits


def test_zs_ssl_on_noisy_data_ignores_the_noise_off_the_mask(blob_volume):
    """The simulated noise covers all of k-space (the operator masks it); the unsampled points are not data. A
    first version fed them to the data-consistency step, which divides by mu there: 6.7 dB on a real volume."""
    unit = blob_volume((16, 32, 32), n=30).numpy()
    meas = measure_volume(unit, "mri3d", task_options("mri3d", accel=4, noise=0.01))
    assert (meas.y * ~meas.task.op.mask).abs().max() > 0  # the case this test is for
    res = solve_volume(meas, "zs-ssl", {"steps": 60, "batch": 4, "unrolls": 3, "depth": 4, "width": 8}, seed=0)
    base, ours = volume_metrics(res.baseline, unit), volume_metrics(res.recon, unit)
    assert ours["psnr"] > base["psnr"] + 1.0, (ours["psnr"], base["psnr"])


def test_a_start_reconstruction_sees_only_the_input_points_of_its_split(blob_volume):
    """start=admm-tv: each start of the bank is computed from Θ alone (no Λ, no Γ point), Γ is checked from
    Ω \\ Γ, and the final run starts from all of Ω."""
    unit = blob_volume((8, 16, 16), n=12)
    mask = gaussian_2d_mask((8, 16), 3.0, generator=torch.Generator().manual_seed(0))
    op = Cartesian3DMRI(mask, (1, 8, 16, 16))
    y = op.A(unit[None, None].double())
    seen = []

    def start(points):
        seen.append(points.clone())
        return zero_filled(readout_planes(y) * points, points).permute(1, 2, 0)

    _, report = mri3d_selfsup(y, mask, start=start, splits=3, steps=4, batch=2, unrolls=1, depth=2, width=4)
    assert len(seen) == 3 + 2 and torch.equal(seen[-1], mask)
    train = seen[3]  # Ω \ Γ
    assert (train & mask).sum() == train.sum() and train.sum() < mask.sum()
    for theta in seen[:3]:
        assert (theta & train).sum() == theta.sum() and theta.sum() < train.sum()
    assert report["checked_at"][0] == 0


def test_zs_ssl_from_admm_tv_is_not_worse_than_admm_tv(blob_volume):
    """The zero-initialised head makes the untrained network return its start; the held-out points keep the
    network only where it fits them better, so on a small volume it ends at or above 3-D ADMM-TV, and far above
    the same training from the zero-filled image."""
    unit = blob_volume((16, 32, 32), n=30).numpy()
    meas = measure_volume(unit, "mri3d", task_options("mri3d", accel=4))
    params = {"steps": 60, "batch": 4, "unrolls": 3, "depth": 4, "width": 8}
    tv = volume_metrics(solve_volume(meas, "admm-tv").recon, unit)["psnr"]
    zf = volume_metrics(solve_volume(meas, "zs-ssl", {**params, "start": "zero-filled"}, seed=0).recon, unit)["psnr"]
    res = solve_volume(meas, "zs-ssl", {**params, "splits": "3"}, seed=0)  # start=admm-tv: the default
    ours = volume_metrics(res.recon, unit)["psnr"]
    assert ours > tv - 0.05 and ours > zf + 5.0, (ours, tv, zf)
    assert res.params["start"] == "admm-tv"


def test_cli_zs_ssl_end_to_end_and_refusals(mri_path, volume_run, refused, capsys):
    m = volume_run(["reconstruct", str(mri_path), "--volume", "--task", "mri3d", "--accel", "4", "--slices", "0:4",
                    "--size", "32", "--method", "zs-ssl", "--param", "steps=5", "--no-progress"], "mri3d")
    assert m["method"] == "zs-ssl" and m["method_params"]["steps"] == 5
    t = m["training"]  # the held-out report: the kept weights are the best checked, step 0 being the start
    assert t["checked_at"][0] == 0 and t["best_step"] in t["checked_at"] and t["steps"] == 5
    assert t["best_error"] == min(t["validation_error"]) and t["start_error"] == t["validation_error"][0]
    assert "zs-ssl: held-out k-space error" in capsys.readouterr().out
    for argv, words in ((["--volume", "--task", "zsr", "--factor", "2", "--slices", "0:4"],
                         "or smore, not zs-ssl"),
                        (["--task", "mri"], "applies to --task mri3d only"),
                        (["--volume", "--task", "mri3d", "--slices", "0:4", "--param", "rho=1"],
                         "rho must be <= 0.9"),
                        (["--volume", "--task", "mri3d", "--slices", "0:4", "--param", "start=zero-filled",
                          "--param", "splits=3"], "splits applies with start=admm-tv only")):
        refused(["reconstruct", str(mri_path), *argv, "--size", "32", "--method", "zs-ssl", "--no-progress"], words)


def test_training_line_says_when_the_training_never_beat_its_start():
    from wavepatch.cli_volume import training_line

    kept = training_line("zs-ssl", {"start_error": 0.2, "best_error": 0.1, "best_step": 300, "steps": 1000})
    fallback = training_line("zs-ssl", {"start_error": 0.2, "best_error": 0.2, "best_step": 0, "steps": 1000})
    assert "step 300 of 1000" in kept and "never beat" not in kept
    assert "never beat the start" in fallback
    flat = training_line("smore", {"l1_first": 0.0281, "l1_last": 0.0282, "steps": 1000})
    assert "learned little" in flat
    assert "learned little" not in training_line("smore", {"l1_first": 0.028, "l1_last": 0.016, "steps": 1000})
