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
