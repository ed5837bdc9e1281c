"""Self-supervised z super-resolution (``--method smore``): the in-plane degradation is the z one, the result
fits the thick slices exactly, it beats cubic interpolation on an isotropic volume, the CLI runs it and refuses
it where it does not apply."""

from __future__ import annotations

import json

import pytest
import torch

from wavepatch.cli import main
from wavepatch.physics.volume_ops import ThickSliceZ, box_mean_along, cubic_along, cubic_z
from wavepatch.recon.zsr_selfsup import degrade_rows, sample_pairs, training_images
from wavepatch.tasks import task_options
from wavepatch.volume import measure_volume, solve_volume, volume_metrics


def test_box_and_cubic_along_match_the_z_operators():
    vol = torch.rand(2, 1, 8, 5, 6, dtype=torch.float64)
    assert torch.equal(box_mean_along(vol, 4, 2), ThickSliceZ(4, (1, 8, 5, 6)).A(vol))
    thick = torch.rand(1, 1, 3, 4, 5, dtype=torch.float64)
    assert torch.allclose(cubic_along(thick, 4, 2), cubic_z(thick, 4), atol=1e-14)
    # along another axis: the same numbers, transposed
    assert torch.allclose(cubic_along(thick.transpose(2, 4), 4, 4), cubic_z(thick, 4).transpose(2, 4), atol=1e-14)


def test_degrade_rows_keeps_constants_and_box_means_of_a_ramp():
    flat = torch.full((1, 32, 5), 0.3, dtype=torch.float64)
    assert torch.allclose(degrade_rows(flat, 4), flat, atol=1e-14)  # cubic weights sum to one
    ramp = torch.arange(32, dtype=torch.float64)[:, None].expand(32, 5) * 0.1
    centres = (torch.arange(8, dtype=torch.float64) * 4 + 1.5)[:, None].expand(8, 5) * 0.1
    assert torch.allclose(box_mean_along(ramp, 4, 0), centres, atol=1e-14)
    x = torch.rand(1, 32, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert (degrade_rows(x, 4) - x).abs().max() > 0.1  # the degradation does lose detail


def test_training_images_are_resampled_to_the_slice_spacing():
    thick = torch.rand(3, 40, 30)
    a, b = training_images(thick, 0.5)
    assert a.shape == (3, 20, 30) and b.shape == (3, 15, 40)
    a1, b1 = training_images(thick, 1.0)
    assert torch.equal(a1, thick) and torch.equal(b1, thick.transpose(1, 2))
    degraded, clean = sample_pairs([a, b], 4, 48, 5, torch.Generator().manual_seed(0))
    assert degraded.shape == clean.shape == (5, 1, 12, 30)  # rows: the smallest image's 15 -> a multiple of 4
    assert torch.allclose(degraded, degrade_rows(clean, 4))
    with pytest.raises(ValueError, match="too small to train on"):  # 40 px at z_weight 0.1: 4 rows, need 8
        sample_pairs(training_images(thick, 0.1), 4, 48, 5, torch.Generator().manual_seed(0))


def test_smore_beats_cubic_on_an_isotropic_volume_and_fits_the_data(blob_volume):
    unit = blob_volume().numpy()
    meas = measure_volume(unit, "zsr", task_options("zsr", factor=4))
    params = {"steps": 300, "patch": 32, "batch": 8, "depth": 6, "width": 16}
    res = solve_volume(meas, "smore", params, seed=0)
    base, ours = volume_metrics(res.baseline, unit), volume_metrics(res.recon, unit)
    assert ours["psnr"] > base["psnr"] + 1.0, (ours["psnr"], base["psnr"])
    recon = torch.from_numpy(res.recon).double()[None, None]
    assert torch.allclose(meas.task.op.A(recon), meas.y.double(), atol=1e-5)  # noiseless: projected exactly
    assert res.params["z_weight"] == 1.0 and res.params["steps"] == 300
    assert res.training["steps"] == 300 and res.training["l1_last"] < 0.9 * res.training["l1_first"]  # it learned
    again = solve_volume(meas, "smore", params, seed=0)
    assert (again.recon == res.recon).all()  # the seed fixes the weights and the patches


def test_cli_smore_end_to_end_and_refusals(mri_path, volume_run, refused, capsys):
    m = volume_run(["reconstruct", str(mri_path), "--volume", "--task", "zsr", "--factor", "2", "--slices", "0:4",
                    "--size", "32", "--method", "smore", "--param", "steps=20", "--no-progress"], "zsr")
    assert m["method"] == "smore" and m["method_params"]["steps"] == 20
    assert m["training"]["steps"] == 20 and m["training"]["l1_first"] > 0
    assert "smore: training L1" in capsys.readouterr().out
    for argv, words in ((["--volume", "--task", "ct-parallel", "--views", "8"], "applies to --task zsr only"),
                        (["--task", "sr"], "applies to --task zsr only"),
                        (["--volume", "--task", "zsr", "--factor", "2", "--slices", "0:4", "--param", "steps=0"],
                         "steps must be >= 1")):
        refused(["reconstruct", str(mri_path), *argv, "--size", "32", "--method", "smore", "--no-progress"], words)


def test_smore_lists_itself_where_zsr_refuses_a_method(tmp_path, capsys, mri_path):
    code = main(["reconstruct", str(mri_path), "--volume", "--task", "zsr", "--factor", "2", "--slices", "0:4",
                 "--size", "32", "--method", "cgls", "--no-progress", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "or smore" in err


def test_cli_as_measured_upsamples_a_thick_volume(tmp_path, capsys, mri_path, ct_dir, refused):
    from wavepatch.io import read_image

    out = tmp_path / "thin"
    code = main(["reconstruct", str(mri_path), "--volume", "--as-measured", "--task", "zsr", "--factor", "2",
                 "--size", "32", "--method", "smore", "--param", "steps=20", "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    thick = read_image(str(mri_path))
    m = json.loads((out / "metrics.json").read_text())
    assert m["slices_in"] == thick.data.shape[0] and m["slices"] == 2 * thick.data.shape[0]
    assert "psnr" not in m and m["relative_data_misfit"] < 1e-5  # noiseless model: projected onto the thick slices
    thin = read_image(str(out / "recon.nii.gz"))
    assert thin.data.shape == (2 * thick.data.shape[0], 32, 32)
    assert abs(m["voxel_mm"][0] * 2 - m["input_voxel_mm"][0]) < 1e-9 and (out / "planes.png").exists()
    for path, argv, words in ((mri_path, ["--volume", "--task", "mri3d"], "it is for --task zsr"),
                              (mri_path, ["--task", "sr"], "is for --volume --task zsr"),
                              (ct_dir, ["--volume", "--task", "zsr", "--dicom"], "--dicom does not apply")):
        refused(["reconstruct", str(path), "--as-measured", *argv, "--size", "32", "--method", "admm-tv",
                 "--no-progress"], words)
