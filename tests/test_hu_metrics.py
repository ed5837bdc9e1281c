"""HU fidelity: tissue regions of a synthetic phantom with known HU, bias and noise recovered, the NPS integral."""

from __future__ import annotations

import numpy as np
import pytest

from wavepatch.metrics.hu import body_mask, histogram_w1, hu_metrics, noise_power_spectrum, tissue_rois


def _phantom(n: int = 128) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n] - n / 2
    img = np.full((n, n), -1000.0)
    img[(yy / 50) ** 2 + (xx / 58) ** 2 < 1] = -100.0  # the body's fat rim
    img[(yy / 44) ** 2 + (xx / 52) ** 2 < 1] = 40.0  # soft tissue inside it
    img[((yy + 5) / 15) ** 2 + ((xx + 25) / 12) ** 2 < 1] = -800.0  # a lung
    img[(yy / 5) ** 2 + ((xx - 20) / 5) ** 2 < 1] = 700.0  # a bone
    return img


def test_rois_of_a_phantom_hold_only_their_tissue():
    truth = _phantom()
    rois = tissue_rois(truth)
    assert body_mask(truth)[64, 39]  # the lung is inside the body
    for name, value in (("soft tissue", 40.0), ("fat", -100.0), ("lung", -800.0), ("bone", 700.0)):
        assert rois[name].sum() > 20 and np.all(truth[rois[name]] == value), name
    assert not rois["fat"][0, 0]


def test_bias_and_noise_are_recovered_per_region():
    truth = _phantom()
    rng = np.random.default_rng(0)
    recon = truth + 10.0 + 5.0 * rng.standard_normal(truth.shape)
    m = hu_metrics(recon, truth)
    for name in ("soft tissue", "fat", "lung"):
        r = m["rois"][name]
        assert r["mean_error_hu"] == pytest.approx(10.0, abs=1.5) and r["noise_std_hu"] == pytest.approx(5.0, rel=0.15)
    assert m["roi_mean_abs_error_hu"] == pytest.approx(10.0, abs=1.0)
    assert m["histogram_w1_hu"] == pytest.approx(10.0, abs=1.5)
    assert hu_metrics(truth, truth)["roi_mean_abs_error_hu"] == 0.0


def test_nps_integrates_to_the_variance_and_is_flat_for_white_noise():
    rng = np.random.default_rng(1)
    e = 7.0 * rng.standard_normal((128, 128))
    freq, nps = noise_power_spectrum(e)
    assert freq[0] > 0 and freq[-1] < 0.5
    assert np.mean(nps[2:]) == pytest.approx(49.0, rel=0.1)  # white: NPS = variance at every frequency
    smooth = np.fft.ifft2(np.fft.fft2(e) * np.exp(-((np.fft.fftfreq(128)[:, None] ** 2 +
                                                     np.fft.fftfreq(128)[None] ** 2) / 0.01))).real
    f2, nps2 = noise_power_spectrum(smooth)
    assert nps2[0] > 10 * nps2[-1]  # low-pass noise: power at low frequencies


def test_histogram_w1_equals_scipy():
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 30, 500), rng.gamma(2.0, 20.0, 500) - 40
    assert histogram_w1(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-12)
    assert histogram_w1(a, a + 7.5) == pytest.approx(7.5)
    with pytest.raises(ValueError, match="equal size"):
        histogram_w1(a, b[:10])
