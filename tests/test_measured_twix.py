"""Real acquired multi-coil k-space: the Siemens TWIX file tests/data/twix/gre.dat (Skyra, 2 coils, a phantom;
twixtools' MIT example) read, retrospectively undersampled and reconstructed from the CLI with coil maps
estimated from the data, against its own fully sampled reference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from wavepatch.cli import main
from wavepatch.io.kspace import KSpaceReadError, read_kspace, sampling_mask
from wavepatch.physics.coil_maps import calibration_width
from wavepatch.physics.mri import centered_ifft2, kspace_noise_std

twixtools = pytest.importorskip("twixtools")
pytest.importorskip("sigpy")

GRE = Path(__file__).parent / "data" / "twix" / "gre.dat"


def test_twix_reads_with_oversampling_removed_like_numpy():
    ks = read_kspace(GRE)
    assert ks.source == "twix" and ks.data.shape == (2, 160, 160) and ks.data.dtype == np.complex64
    assert sampling_mask(ks).all()
    energy = (np.abs(ks.data) ** 2).sum(0)
    assert np.unravel_index(energy.argmax(), energy.shape) == (80, 80)  # centred layout
    # independent path: the raw 2x-oversampled readout, cropped to the centre half in image space by numpy
    raw = twixtools.map_twix(twixtools.read_twix(str(GRE), verbose=False), verbose=False)[-1]["image"]
    raw.flags["remove_os"] = False
    k = np.transpose(np.squeeze(raw[:]), (1, 2, 0))  # (Cha, Col=320, Lin)
    img = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(k, axes=1), axis=1), axes=1)[:, 80:240]
    ref = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(img, axes=1), axis=1), axes=1)
    scale = np.vdot(ref, ks.data) / np.vdot(ref, ref)  # the two FFT conventions differ by a constant
    assert np.linalg.norm(ks.data - scale * ref) / np.linalg.norm(ks.data) < 1e-4


def test_twix_bad_files(tmp_path):
    junk = tmp_path / "meas.dat"
    junk.write_bytes(b"\x00" * 4000)
    with pytest.raises(KSpaceReadError, match="meas.dat"):
        read_kspace(junk)
    with pytest.raises(KSpaceReadError, match="out of range"):
        read_kspace(GRE, slice=3)


def test_calibration_width_exact():
    mask = np.zeros((40, 30), dtype=bool)
    mask[:, 12:19] = True  # 7 centre columns around W // 2 = 15
    assert calibration_width(mask) == 7
    mask[:, 19] = True  # even squares span [c - n/2, c + n/2 - 1]: column 19 alone does not help
    assert calibration_width(mask) == 7
    mask[:, 11] = True
    assert calibration_width(mask) == 9  # columns 11..19
    assert calibration_width(np.ones((40, 30), bool), largest=24) == 24
    assert calibration_width(np.zeros((8, 8), bool)) == 0


def test_noise_std_of_complex_gaussian_and_of_the_real_file():
    g = torch.Generator().manual_seed(1)
    std = 0.3  # E|n|^2 = std^2
    z = (torch.randn(4, 128, 96, generator=g) + 1j * torch.randn(4, 128, 96, generator=g)) * std / math.sqrt(2)
    assert kspace_noise_std(z, torch.ones(128, 96, dtype=torch.bool)) == pytest.approx(std, rel=0.03)
    k = torch.from_numpy(read_kspace(GRE).data)
    est = kspace_noise_std(k, torch.ones(160, 160, dtype=torch.bool))
    background = centered_ifft2(k)[:, :16, :16]  # image corners are air: pure noise
    assert est == pytest.approx(float(background.abs().pow(2).mean().sqrt()), rel=0.15)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """x4 retrospective reconstructions of the real file from the CLI (metrics.json of each)."""
    root = tmp_path_factory.mktemp("twix")
    out = {}
    for method, extra in (("l1-wavelet", []), ("padis", ["--fast", "--steps", "10"])):
        code = main(["reconstruct", "--measurement", str(GRE), "--task", "mri", "--method", method, *extra,
                     "--accel", "4", "--no-progress", "--out", str(root / method)])
        assert code == 0
        out[method] = (root / method, json.loads((root / method / "metrics.json").read_text()))
    return out


@pytest.mark.parametrize("method", ["l1-wavelet", "padis"])
def test_real_multicoil_kspace_beats_zero_filled(runs, method):
    folder, m = runs[method]
    assert m["coils"] == 2 and m["task_params"]["source"] == "twix"
    assert m["task_params"]["lines"] == 40 and m["task_params"]["sampled_fraction"] == pytest.approx(0.25)
    assert 0.02 < m["task_params"]["noise_std_estimate"] < 0.2  # a noisy phantom on the unit scale
    assert m["psnr"] > m["baseline_psnr"] + 1.0, (m["psnr"], m["baseline_psnr"])
    assert m["data_consistency"]["relative_residual"] < 0.3
    assert {p.name for p in folder.iterdir()} >= {"recon.npy", "recon.png", "compare.png", "metrics.json"}


def test_retrospective_options_are_checked(tmp_path, capsys):
    undersampled = tmp_path / "k.npy"
    k = read_kspace(GRE).data.copy()
    k[:, :, 1::2] = 0
    np.save(undersampled, k)
    for argv, words in (([str(undersampled), "--accel", "4"], "already undersampled"),
                        ([str(GRE), "--mask", "uniform"], "give --accel"),
                        ([str(GRE), "--accel", "8", "--center-fraction", "0.02"], "fully sampled square")):
        code = main(["reconstruct", "--measurement", *argv, "--task", "mri", "--method", "l1-wavelet",
                     "--no-progress", "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and words in err[0], err
        assert not (tmp_path / "o").exists()
