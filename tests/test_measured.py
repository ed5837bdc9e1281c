"""Measured CT sinograms: `reconstruct --save-measurement` then `reconstruct --measurement` gives the same
reconstruction as the simulation path; raw counts; bad measurement files and options in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wavepatch.cli import main

BASE = ["--size", "48", "--no-progress"]


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _simulate(tmp_path, ct_files, capsys, task, method, *extra):
    out = tmp_path / "sim"
    code, err = _run(["reconstruct", ct_files[1], "--task", task, "--method", method, *BASE, "--save-measurement",
                      *extra, "--out", out], capsys)
    assert code == 0, err
    return out


@pytest.mark.parametrize("task, method, extra", [
    ("ct-parallel", "admm-tv", ["--views", "20", "--param", "n_iter=30"]),
    ("ct-fan", "fbp", ["--views", "24"]),
    ("ct-lowdose", "fista-tv", ["--views", "30", "--dose", "2000", "--param", "n_iter=30"]),
])
def test_saved_measurement_reconstructs_to_the_simulation_result(tmp_path, ct_files, capsys, task, method, extra):
    sim = _simulate(tmp_path, ct_files, capsys, task, method, *extra)
    sino = np.load(sim / "measurement.npy")
    geometry = [x for i, x in enumerate(extra) if not (x == "--views" or (i and extra[i - 1] == "--views"))]
    meas = tmp_path / "meas"
    code, err = _run(["reconstruct", "--measurement", sim / "measurement.npy", "--task", task, "--method", method,
                      *BASE, *geometry, "--out", meas], capsys)
    assert code == 0, err
    a, b = np.load(sim / "recon.npy"), np.load(meas / "recon.npy")
    assert np.abs(a - b).max() < 1e-3 * max(1.0, np.abs(a).max())
    m = json.loads((meas / "metrics.json").read_text())
    assert m["views"] == sino.shape[0] and m["detectors"] == sino.shape[1]
    assert "psnr" not in m and m["data_consistency"]["relative_residual"] < 0.5


def test_raw_counts_match_post_log(tmp_path, ct_files, capsys):
    sim = _simulate(tmp_path, ct_files, capsys, "ct-lowdose", "fbp", "--views", "30", "--dose", "5000")
    p = np.load(sim / "measurement.npy")
    counts = tmp_path / "counts.npy"
    np.save(counts, 5000 * np.exp(-p) - 0.5)  # the counts N behind the bias-corrected log(I0 / (N + 1/2))
    out = tmp_path / "c"
    code, err = _run(["reconstruct", "--measurement", counts, "--counts", "--dose", "5000", "--task", "ct-lowdose",
                      "--method", "fbp", *BASE, "--out", out], capsys)
    assert code == 0, err
    np.testing.assert_allclose(np.load(out / "recon.npy"), np.load(sim / "recon.npy"), atol=1e-3)


def test_learned_prior_on_a_measured_sinogram(tmp_path, ct_files, capsys):
    sim = _simulate(tmp_path, ct_files, capsys, "ct-parallel", "fbp", "--views", "20")
    out = tmp_path / "padis"
    code, err = _run(["reconstruct", "--measurement", sim / "measurement.npy", "--task", "ct-parallel",
                      "--method", "padis", "--fast", "--steps", "4", *BASE, "--out", out], capsys)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["nfe"] > 0 and np.isfinite(np.load(out / "recon.npy")).all()


def _bad(tmp_path, capsys, arr, *argv):
    f = tmp_path / "s.npy"
    if arr is not None:
        np.save(f, arr)
    code, err = _run(["reconstruct", "--measurement", f, "--method", "fbp", *BASE, *argv,
                      "--out", tmp_path / "o"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("wavepatch: error:"), err
    assert not (tmp_path / "o").exists()
    return err


def test_bad_measurements(tmp_path, capsys, ct_files):
    good = np.ones((20, 69), np.float32)
    nan = good.copy()
    nan[3, 4] = np.nan
    assert "NaN" in _bad(tmp_path, capsys, nan, "--task", "ct-parallel")
    assert "2-D" in _bad(tmp_path, capsys, np.ones((2, 20, 69)), "--task", "ct-parallel")
    assert "real numbers" in _bad(tmp_path, capsys, good.astype(np.complex64), "--task", "ct-parallel")
    assert "does not match" in _bad(tmp_path, capsys, good, "--task", "ct-parallel", "--views", "30")
    assert "--dose" in _bad(tmp_path, capsys, good, "--task", "ct-lowdose", "--counts")
    assert "non-negative" in _bad(tmp_path, capsys, -good, "--task", "ct-lowdose", "--counts", "--dose", "1e4")
    assert "clean image" in _bad(tmp_path, capsys, good, "--task", "deblur")
    assert "complex" in _bad(tmp_path, capsys, good, "--task", "mri")
    assert "either" in _bad(tmp_path, capsys, good, "--task", "ct-parallel", ct_files[0])
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    code, err = _run(["reconstruct", "--measurement", tmp_path / "junk.npy", "--task", "ct-parallel", "--method",
                      "fbp", *BASE, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "junk.npy" in err and "pickle" not in err
