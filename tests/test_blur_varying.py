"""Spatially varying blur: exact adjoint, PSF widths at the centre and corners, agreement with a direct
pixel-by-pixel construction, and the deblur task and methods on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wavepatch.physics.base import adjoint_mismatch
from wavepatch.physics.blur_varying import VaryingBlur, radial_hat_weights


def test_weights_are_a_partition_of_unity():
    w = radial_hat_weights(33, 20, 4)
    assert w.shape == (4, 33, 20) and torch.allclose(w.sum(0), torch.ones(33, 20, dtype=torch.float64))
    assert w.min() >= 0 and w[0, 16, 9:11].max() > 0.9 and w[-1, 0, 0] == pytest.approx(1.0)


def test_adjoint_is_exact_and_mass_is_kept_inside():
    op = VaryingBlur((1, 40, 48))
    assert adjoint_mismatch(op) < 1e-12
    ones = op.A(torch.ones(1, 1, 40, 48, dtype=torch.float64))
    assert torch.allclose(ones[0, 0, 15:25, 15:33], torch.ones(10, 18, dtype=torch.float64))


def _psf_std(psf: torch.Tensor) -> float:
    r = torch.arange(psf.shape[0], dtype=torch.float64) - psf.shape[0] // 2
    return float(((psf.sum(1) * r**2).sum() / psf.sum()).sqrt())


def test_psf_widens_from_centre_to_corner():
    op = VaryingBlur((1, 97, 97), sigma_centre=0.7, sigma_edge=2.5, nodes=5)
    centre, corner = op.psf_at(48, 48), op.psf_at(14, 14)  # corner pixel stays inside so its PSF is whole
    assert centre.sum() == pytest.approx(1.0) and corner.sum() == pytest.approx(1.0, abs=1e-6)
    assert _psf_std(centre) == pytest.approx(0.7, rel=0.05)
    t = np.hypot(34, 34) / np.hypot(48, 48)  # the corner pixel's normalised radius
    assert 0.7 + t * 1.8 * 0.85 < _psf_std(corner) < 0.7 + t * 1.8 * 1.15  # mixture std ~ the interpolated one
    with pytest.raises(ValueError, match="outside"):
        op.psf_at(97, 0)


def test_matches_a_direct_sum_of_weighted_convolutions():
    from scipy import ndimage

    from wavepatch.physics.blur import gaussian_kernel

    op = VaryingBlur((1, 24, 30), sigma_centre=0.6, sigma_edge=1.6, nodes=3)
    x = torch.rand(1, 1, 24, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    direct = sum(op.weights[k].numpy() * ndimage.convolve(x[0, 0].numpy(), gaussian_kernel(s, dtype=torch.float64)
                                                          .numpy(), mode="constant")
                 for k, s in enumerate(op.sigmas))
    assert np.allclose(op.A(x)[0, 0].numpy(), direct, atol=1e-12)


@pytest.mark.slow
def test_deblur_varying_task_from_the_cli(tmp_path, capsys):
    import json

    from wavepatch.cli import main

    data = "data/ct/A0002_B40f_015.dcm"
    for method in (["admm-tv"], ["padis", "--fast"]):
        out = tmp_path / method[0]
        assert main(["reconstruct", data, "--task", "deblur", "--kernel", "varying", "--size", "64", "--method",
                     *method, "--out", str(out)]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert m["task_params"]["kernel"] == "varying"
        assert m["psnr"] > m["baseline_psnr"] + 3  # well above the blurred image
    capsys.readouterr()
    assert main(["reconstruct", data, "--task", "deblur", "--kernel", "wobbly", "--method", "admm-tv", "--out",
                 str(tmp_path / "x")]) == 2
    assert "--kernel must be one of" in capsys.readouterr().err
