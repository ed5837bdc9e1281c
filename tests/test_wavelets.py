"""Periodized 2D/3D wavelet transforms against PyWavelets (orthogonal and biorthogonal families): coefficients,
exact inverses, energy preservation for orthogonal wavelets, and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch

from wavepatch.wavelets import (
    BAND_KEYS,
    dwt2_periodized,
    dwt3_periodized,
    idwt2_periodized,
    idwt3_periodized,
    wavedec2_periodized,
    wavedec3_periodized,
    waverec2_periodized,
    waverec3_periodized,
)

pytestmark = pytest.mark.filterwarnings("ignore:Level value of .* is too high")

WAVELETS = ["haar", "db2", "db4", "bior2.2", "bior4.4"]
ORTHOGONAL = ["haar", "db2", "db4"]
# pywt's bior4.4 filters are tabulated to ~1e-12, so its own round trip is only that exact.
RECON_TOL = {"bior4.4": 1e-10}


def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("levels", [1, 3])
def test_wavedec2_equals_pywt_and_inverts(wavelet, levels):
    x = _rand(2, 3, 32, 48, seed=levels)
    low, details = wavedec2_periodized(torch.from_numpy(x), wavelet, levels)
    ref = pywt.wavedec2(x, wavelet, mode="periodization", level=levels, axes=(-2, -1))
    assert low.shape == (2, 3, 32 // 2**levels, 48 // 2**levels)
    assert np.allclose(low.numpy(), ref[0], atol=1e-12)
    for d, r in zip(details, ref[1:], strict=True):
        assert np.allclose(d.numpy(), np.stack(r, axis=2), atol=1e-12)  # bands (cH, cV, cD)
    back = waverec2_periodized(low, details, wavelet)
    tol = RECON_TOL.get(wavelet, 1e-12)
    assert np.abs(back.numpy() - x).max() < tol
    assert np.allclose(back.numpy(), pywt.waverec2(ref, wavelet, mode="periodization", axes=(-2, -1)), atol=1e-12)


@pytest.mark.parametrize("wavelet", WAVELETS)
def test_wavedec3_equals_pywt_wavedecn_and_inverts(wavelet):
    x = _rand(2, 1, 16, 8, 16)
    low, details = wavedec3_periodized(torch.from_numpy(x), wavelet, 2)
    ref = pywt.wavedecn(x, wavelet, mode="periodization", level=2, axes=(-3, -2, -1))
    assert np.allclose(low.numpy(), ref[0], atol=1e-12)
    for d, r in zip(details, ref[1:], strict=True):
        assert d.shape[2] == 7
        assert np.allclose(d.numpy(), np.stack([r[k] for k in BAND_KEYS[3]], axis=2), atol=1e-12)
    back = waverec3_periodized(low, details, wavelet)
    assert np.abs(back.numpy() - x).max() < RECON_TOL.get(wavelet, 1e-12)


def test_float32_agrees_with_pywt():
    x = _rand(8, 1, 64, 64).astype(np.float32)
    low, details = wavedec2_periodized(torch.from_numpy(x), "bior4.4", 3)
    ref = pywt.wavedec2(x.astype(np.float64), "bior4.4", mode="periodization", level=3, axes=(-2, -1))
    assert low.dtype == torch.float32
    assert np.abs(low.numpy() - ref[0]).max() < 1e-4
    assert np.abs(waverec2_periodized(low, details, "bior4.4").numpy() - x).max() < 1e-5


@pytest.mark.parametrize("wavelet", ORTHOGONAL)
def test_orthogonal_transforms_preserve_energy_and_match_the_general_path(wavelet):
    x = torch.from_numpy(_rand(2, 2, 32, 32))
    low, details = dwt2_periodized(x, wavelet, 3)
    low_g, details_g = wavedec2_periodized(x, wavelet, 3)
    assert torch.equal(low, low_g) and all(torch.equal(a, b) for a, b in zip(details, details_g, strict=True))
    energy = low.pow(2).sum() + sum(d.pow(2).sum() for d in details)
    assert float(energy) == pytest.approx(float(x.pow(2).sum()), rel=1e-13)
    assert torch.allclose(idwt2_periodized(low, details, wavelet), x, atol=1e-13, rtol=0)
    v = torch.from_numpy(_rand(1, 1, 8, 16, 8))
    low3, details3 = dwt3_periodized(v, wavelet, 2)
    energy3 = low3.pow(2).sum() + sum(d.pow(2).sum() for d in details3)
    assert float(energy3) == pytest.approx(float(v.pow(2).sum()), rel=1e-13)
    assert torch.allclose(idwt3_periodized(low3, details3, wavelet), v, atol=1e-13, rtol=0)


def test_haar_round_trip_is_exact_to_float64_roundoff():
    x = torch.from_numpy(_rand(4, 1, 64, 64))
    low, details = dwt2_periodized(x, "haar", 6)  # down to a single coefficient
    assert low.shape[-2:] == (1, 1)
    err = (idwt2_periodized(low, details, "haar") - x).abs().max()
    assert float(err) < 8 * torch.finfo(torch.float64).eps * float(x.abs().max())


def test_biorthogonal_is_invertible_but_not_orthogonal():
    """The inverse uses the reconstruction filters: the adjoint of the analysis would not invert it."""
    x = torch.from_numpy(_rand(1, 1, 16, 16))
    low, details = wavedec2_periodized(x, "bior2.2", 2)
    energy = low.pow(2).sum() + sum(d.pow(2).sum() for d in details)
    assert abs(float(energy) / float(x.pow(2).sum()) - 1) > 1e-2
    assert torch.allclose(waverec2_periodized(low, details, "bior2.2"), x, atol=1e-12)
    with pytest.raises(ValueError, match="not orthogonal"):
        dwt2_periodized(x, "bior2.2", 1)
    with pytest.raises(ValueError, match="not orthogonal"):
        idwt3_periodized(torch.zeros(1, 1, 2, 2, 2), [], "bior4.4")


@pytest.mark.parametrize("wavelet", ["haar", "bior2.2"])
def test_gradients_pass_gradcheck(wavelet):
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: wavedec2_periodized(t, wavelet, 2)[1][0], (x,))
    low = torch.randn(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    det = torch.randn(1, 1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, d: waverec2_periodized(a, [d], wavelet), (low, det))
    v = torch.randn(1, 1, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: waverec3_periodized(*wavedec3_periodized(t, wavelet, 1), wavelet), (v,))


def test_shape_errors():
    with pytest.raises(ValueError, match="divisible"):
        wavedec2_periodized(torch.zeros(1, 1, 24, 16), "bior2.2", 4)
    low, details = wavedec2_periodized(torch.zeros(1, 1, 16, 16), "bior2.2", 2)
    with pytest.raises(ValueError, match="does not fit"):
        waverec2_periodized(low, details[::-1], "bior2.2")
