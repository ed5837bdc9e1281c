"""ESPIRiT coil maps (wavepatch.physics.coil_maps) on simulated multi-coil k-space of the bundled MRI slice:
the maps match the true ones up to a per-pixel phase, and after phase normalisation a real-image SENSE
reconstruction from x4-undersampled data recovers the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wavepatch.physics.coil_maps import espirit_maps, lowres_combined_image, phase_normalized
from wavepatch.physics.mri import MultiCoilMRI, centered_ifft2, simulate_coil_maps, uniform_1d_mask

pytest.importorskip("sigpy")
nibabel = pytest.importorskip("nibabel")

MRI = Path(__file__).resolve().parents[1] / "src" / "wavepatch" / "data" / "mri" / "mni_icbm152_t1_axial5.nii.gz"
N_COILS = 8


@pytest.fixture(scope="module")
def setup():
    img = np.asarray(nibabel.load(MRI).dataobj[:, :, 2], dtype=np.float64) / 255.0  # (197, 233)
    h, w = img.shape
    maps = simulate_coil_maps(N_COILS, h, w, dtype=torch.complex128)
    x = torch.from_numpy(img)[None, None]
    kspace = MultiCoilMRI(torch.ones(h, w, dtype=torch.bool), maps).A(x)[0]  # fully sampled (C, H, W)
    est = espirit_maps(kspace)  # torch input
    return {"img": img, "obj": img > 0.1, "maps": maps, "kspace": kspace, "est": est}


def _pixel_coherence(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|<a, b>| / (|a| |b|) per pixel over coils: 1 when equal up to a common phase."""
    num = np.abs((a.conj() * b).sum(axis=0))
    return num / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0) + 1e-30)


def test_espirit_matches_true_maps_up_to_phase(setup):
    est = setup["est"]
    assert isinstance(est, torch.Tensor) and est.dtype == torch.complex64
    assert est.shape == setup["kspace"].shape
    coherence = _pixel_coherence(est.numpy().astype(np.complex128), setup["maps"].numpy())
    obj = setup["obj"]
    assert coherence[obj].min() > 0.95, coherence[obj].min()
    # unit norm over coils inside the object, like simulate_coil_maps
    norms = np.linalg.norm(est.numpy(), axis=0)[obj]
    np.testing.assert_allclose(norms, 1.0, atol=0.02)


def test_sense_x4_with_phase_normalized_espirit_maps(setup):
    img, obj, maps = setup["img"], setup["obj"], setup["maps"]
    h, w = img.shape
    mask = uniform_1d_mask(w, 4, center_fraction=0.12)  # 28 fully sampled centre columns >= calib 24
    assert int(mask.sum()) <= round(w / 4)
    y = MultiCoilMRI(mask, maps).A(torch.from_numpy(img)[None, None])  # (1, C, H, W)
    est = espirit_maps(y[0].numpy())  # calibrated from the undersampled data itself (numpy input)
    est = phase_normalized(est, y[0])
    recon = MultiCoilMRI(mask, est).A_dagger(y.to(torch.complex64), n_iter=50)[0, 0].double().numpy()
    nrmse = np.linalg.norm((recon - img)[obj]) / np.linalg.norm(img[obj])
    assert nrmse < 0.1, nrmse


def test_phase_normalized_makes_explained_image_real(setup):
    """Object with a smooth phase: with normalised maps the coil-combined image is ~ real and >= 0."""
    img, obj, maps, est = setup["img"], setup["obj"], setup["maps"], setup["est"]
    h, w = img.shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    phase = 1.2 * np.sin(1.5 * xx + 0.5) + 0.8 * yy
    x = torch.from_numpy(img * np.exp(1j * phase))[None, None]
    y = MultiCoilMRI(torch.ones(h, w, dtype=torch.bool), maps, real_image=False).A(x)[0]
    # ESPIRiT maps do not depend on the object, so the fixture's estimate serves this k-space too
    for maps_used, expect_real in ((est, False), (phase_normalized(est, y), True)):
        s = maps_used.to(torch.complex128)
        combined = (s.conj() * centered_ifft2(y)).sum(dim=0).numpy()  # the image the maps explain
        np.testing.assert_allclose(np.abs(combined[obj]), img[obj], atol=0.02)
        imag_ratio = np.linalg.norm(combined.imag[obj]) / np.linalg.norm(img[obj])
        if expect_real:
            assert imag_ratio < 0.05, imag_ratio
            assert combined.real[obj].min() > -0.02
        else:
            assert imag_ratio > 0.3  # the raw ESPIRiT phase (first coil's) is far from real
    low = lowres_combined_image(est, y)
    assert low.shape == (h, w) and low.is_complex()


def test_input_checks(setup):
    with pytest.raises(ValueError, match="complex"):
        espirit_maps(np.ones((2, 32, 32)))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        espirit_maps(np.ones((32, 32), dtype=np.complex64))
    with pytest.raises(ValueError, match="calib_width"):
        espirit_maps(np.ones((2, 16, 16), dtype=np.complex64), calib_width=24)
    with pytest.raises(ValueError, match="all zeros"):
        espirit_maps(np.zeros((2, 32, 32), dtype=np.complex64))
    with pytest.raises(ValueError, match="same"):
        phase_normalized(setup["est"], setup["kspace"][:, :10])
