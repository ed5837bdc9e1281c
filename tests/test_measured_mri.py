"""Measured multi-coil k-space on the CLI: coil maps estimated from the data (ESPIRiT), L1-wavelet and a
learned prior. The k-space is simulated here from a real MRI slice (8 analytic coils, x4 mask with a fully
sampled centre), written as a user's .npy file; the reconstruction must agree with the truth up to scale."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wavepatch.cli import main
from wavepatch.io import normalize_volume, read_image, resize_square
from wavepatch.physics.mri import MultiCoilMRI, simulate_coil_maps, uniform_1d_mask

pytest.importorskip("sigpy")


@pytest.fixture(scope="module")
def kspace_file(tmp_path_factory, mri_path):
    img = resize_square(normalize_volume(read_image(mri_path), None)[0][2], 96).astype(np.float32)
    maps = simulate_coil_maps(8, 96, 96)
    mask = uniform_1d_mask(96, 4, 0.25, offset=0)
    y = MultiCoilMRI(mask, maps).A(torch.from_numpy(img)[None, None].to(torch.complex64))[0]
    path = tmp_path_factory.mktemp("k") / "kspace.npy"
    np.save(path, y.numpy().astype(np.complex64))
    return path, img


@pytest.mark.parametrize("method, extra", [("l1-wavelet", []), ("padis", ["--fast", "--steps", "4"])])
def test_multicoil_kspace_reconstructs(tmp_path, capsys, kspace_file, method, extra):
    path, truth = kspace_file
    out = tmp_path / method
    code = main(["reconstruct", "--measurement", str(path), "--task", "mri", "--method", method, *extra,
                 "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["coils"] == 8 and m["data_consistency"]["relative_residual"] < 0.2
    r = np.load(out / "recon.npy")
    obj = truth > 0.05
    a = float((r[obj] * truth[obj]).sum() / (r[obj] ** 2).sum())  # best scale: the file's units are arbitrary
    nrmse = np.linalg.norm(a * r[obj] - truth[obj]) / np.linalg.norm(truth[obj])
    assert nrmse < 0.25, nrmse


def test_saved_mri_measurement_round_trip(tmp_path, capsys, mri_path):
    """--save-measurement writes the simulated k-space as a user's file. Fully sampled, read back with
    --measurement, it gives the simulation's image times the measured path's scale (the unique least-squares
    image; the single unit coil map's phase rotation only touches the air around the object). Undersampled,
    the zero pattern is the simulation's mask."""
    common = ["--task", "mri", "--method", "cgls", "--size", "64", "--no-progress"]
    for accel in ("1", "4"):
        sim, meas = tmp_path / f"sim{accel}", tmp_path / f"meas{accel}"
        assert main(["reconstruct", str(mri_path), *common, "--accel", accel, "--save-measurement",
                     "--out", str(sim)]) == 0
        k = np.load(sim / "measurement.npy")
        assert k.dtype == np.complex64 and k.shape == (1, 64, 64)
        assert main(["reconstruct", "--measurement", str(sim / "measurement.npy"), *common, "--noise", "0",
                     "--out", str(meas)]) == 0, capsys.readouterr().err
        m = json.loads((meas / "metrics.json").read_text())
        lines = json.loads((sim / "metrics.json").read_text())["task_params"]["lines"]
        assert m["task_params"]["sampled_fraction"] == pytest.approx(lines / 64)
    truth, back = np.load(sim.parent / "sim1" / "recon.npy"), np.load(sim.parent / "meas1" / "recon.npy")
    scale = json.loads((sim.parent / "meas1" / "metrics.json").read_text())["task_params"]["scale"]
    obj = truth > 0.1
    err = np.abs(back * scale - truth)[obj].max() / truth.max()
    assert err < 1e-2, err
