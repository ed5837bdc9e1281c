"""Fourier phase retrieval: the magnitude operator, its fidelity gradient, the ambiguity resolver, HIO, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from wavepatch.fidelity import GaussianNoise, MagnitudeFidelity, make_fidelity
from wavepatch.physics.phase_retrieval import FourierMagnitude, hio, resolve_ambiguities


def _object(h=24, w=28, seed=0):
    x = torch.zeros(1, 1, h, w, dtype=torch.float64)
    x[..., 5:15, 6:20] = torch.rand(1, 1, 10, 14, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x


def test_operator_is_an_isometry_in_energy_and_invariant_to_the_ambiguities():
    op = FourierMagnitude((1, 24, 28), oversampling=2.0)
    x = _object()
    y = op.A(x)
    assert y.shape == (1, 1, 48, 56) and torch.allclose(y.pow(2).sum(), x.pow(2).sum())
    shifted = torch.roll(x, (3, -4), dims=(-2, -1))  # the object stays inside the box
    assert torch.allclose(op.A(shifted), y, atol=1e-10)
    assert torch.allclose(op.A(x.flip(-2, -1)), y, atol=1e-10)  # the twin
    assert torch.equal(resolve_ambiguities(shifted.flip(-2, -1), x, op), x)


def test_fidelity_gradient_matches_finite_differences():
    op = FourierMagnitude((1, 24, 28), oversampling=1.5)
    x, y = _object(seed=1) + 0.1, op.A(_object(seed=2))
    fid = make_fidelity(op, y, GaussianNoise(0.1))
    assert isinstance(fid, MagnitudeFidelity)
    g = fid.grad(x)
    d = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eps = 1e-6
    fd = (fid.residual(x + eps * d) - fid.residual(x - eps * d)) / (4 * eps)  # grad of residual / 2
    assert float((g * d).sum()) == pytest.approx(float(fd), rel=1e-6)
    with pytest.raises(ValueError, match="needs a linear forward model"):
        fid.prox(x, 1.0)


def test_dps_line_search_length_decreases_the_magnitude_misfit():
    # DPS' default step on this nonlinear model: the Newton length along the gradient (a finite-difference
    # Hessian-vector product of the autograd gradient) and the three-point fit at that unit lower the residual
    from wavepatch.sampling.posterior import _guidance_step, _newton_length

    op = FourierMagnitude((1, 24, 28), oversampling=2.0)
    x, y = _object(seed=1) + 0.05, op.A(_object(seed=2))
    fid = make_fidelity(op, y, GaussianNoise(0.0))
    g = fid.grad(x)
    t = _newton_length(fid, x, g)
    assert float(t) > 0 and float(fid.residual(x - t * g)) < float(fid.residual(x))
    lam = _guidance_step(fid, x, -t * g, 1.0)
    assert float(fid.residual(x - lam * t * g)) < float(fid.residual(x))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hio_recovers_a_small_image_from_noiseless_data_up_to_the_ambiguities(seed):
    # an image that fills its support box (a tight support): HIO with its defaults recovers it exactly. With a
    # loose support (an object inside a larger empty box) HIO can stagnate: measured 2 of 4 seeds at 1e-5, the
    # others at 0.25-0.37 relative error even with 1000 iterations x 4 restarts
    op = FourierMagnitude((1, 12, 14), oversampling=2.0)
    x = torch.rand(1, 1, 12, 14, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    aligned = resolve_ambiguities(hio(op, op.A(x), seed=seed), x, op)
    assert float((aligned - x).norm() / x.norm()) < 1e-6
    with pytest.raises(ValueError, match="oversampling"):
        FourierMagnitude((1, 8, 8), oversampling=0.5)


@pytest.mark.slow
def test_several_samples_of_a_nonlinear_problem_keep_the_best_data_fit():
    # averaging phase-retrieval draws would mix shifted and twin images: --samples K keeps the draw with the
    # smallest residual (and says which), and no uncertainty map is made
    import numpy as np

    from wavepatch.io import normalize_volume, read_image, resize_square
    from wavepatch.run import run_reconstruction
    from wavepatch.tasks import TaskOptions

    unit, _ = normalize_volume(read_image("data/ct/A0002_B40f_015.dcm"), None)
    img = resize_square(unit[0], 24)
    r = run_reconstruction(img, "phase-retrieval", TaskOptions(), "dps", {"steps": 4}, samples=3)
    fits = r.params["sample_residuals"]
    assert len(fits) == 3 and r.params["selected_sample"] == int(np.argmin(fits)) and r.std is None
    assert len(set(fits)) == 3  # three different draws, not one repeated


def test_phase_retrieval_from_the_cli(tmp_path, capsys):
    from wavepatch.cli import main

    data = "data/ct/A0002_B40f_015.dcm"
    out = tmp_path / "hio"
    assert main(["reconstruct", data, "--task", "phase-retrieval", "--size", "32", "--method", "dps", "--param",
                 "steps=8", "--compare", "hio", "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["task_params"] == {"oversampling": 2.0, "noise": 0.01} and m["baseline"] == "hio"
    # --fast warm-starts DPS from the HIO estimate (ADMM-TV does not apply to a nonlinear model)
    assert main(["reconstruct", data, "--task", "phase-retrieval", "--size", "32", "--method", "dps", "--fast",
                 "--param", "steps=3", "--out", str(tmp_path / "fast"), "--no-progress"]) == 0
    capsys.readouterr()
    for argv, needle in ((["--method", "admm-tv"], "needs a linear forward model"),
                         (["--method", "pigdm"], "needs a linear forward model"),  # A^+ of a magnitude: none
                         (["--method", "hio", "--noise", "-1"], "--noise must be >= 0"),
                         (["--method", "hio", "--oversampling", "0.9"], "--oversampling must be in [1, 8]"),
                         (["--method", "hio", "--views", "20"], "--views does not apply to phase-retrieval")):
        assert main(["reconstruct", data, "--task", "phase-retrieval", "--size", "32", *argv, "--out",
                     str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
    assert main(["reconstruct", data, "--task", "ct-parallel", "--size", "32", "--method", "hio", "--out",
                 str(tmp_path / "y")]) == 2
    assert "phase retrieval" in capsys.readouterr().err
