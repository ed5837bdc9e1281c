"""The exact Gaussian SGM / WSGM computations: closed-form scores against autograd, exact laws of the sampler
against Monte Carlo, the Fourier-block fast paths against dense linear algebra."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from wavepatch.analysis.gaussian_fields import (
    DTYPE,
    analysis_matrix,
    band_covariance,
    circulant_covariance,
    condition_numbers,
    gaussian_kl,
    kl_direction,
    noised_score,
    power_law_spectrum,
    reverse_em_law,
    sgm_dense_covariance,
    sgm_directions,
    sgm_sample,
    total_kl,
    wsgm_dense_covariance,
    wsgm_directions,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_spectrum_and_circulant_covariance():
    n = 8
    lam = power_law_spectrum(n, eta=2.0)
    assert float(lam.mean()) == pytest.approx(1.0) and bool((lam > 0).all())
    F = torch.fft.fft2(torch.eye(n * n, dtype=DTYPE).reshape(n * n, n, n), norm="ortho").reshape(n * n, -1).T
    dense = (F.conj().T @ torch.diag(lam.flatten().to(F.dtype)) @ F).real  # F^H diag(lambda) F
    assert torch.allclose(circulant_covariance(lam), dense, atol=1e-12)
    assert torch.allclose(circulant_covariance(lam).diagonal(), torch.ones(n * n, dtype=DTYPE))  # unit variance


@pytest.mark.parametrize("t", [0.05, 0.7, 3.0])
def test_closed_form_score_equals_autograd_of_log_density(t):
    n = 8
    lam = power_law_spectrum(n, eta=2.0)
    cov_t = math.exp(-2 * t) * circulant_covariance(lam) + (1 - math.exp(-2 * t)) * torch.eye(n * n, dtype=DTYPE)
    x = torch.randn(3, n * n, dtype=DTYPE, generator=_gen(), requires_grad=True)
    MultivariateNormal(torch.zeros(n * n, dtype=DTYPE), cov_t).log_prob(x).sum().backward()
    score = noised_score(x.detach().reshape(3, n, n), lam, t).reshape(3, -1)
    assert torch.allclose(score, x.grad, rtol=1e-9, atol=1e-9)


def test_kl_of_identical_gaussians_is_zero_and_known_values():
    cov = circulant_covariance(power_law_spectrum(8))
    assert abs(float(gaussian_kl(cov, cov))) < 1e-9
    lam = torch.tensor([0.3, 1.0, 5.0], dtype=DTYPE)
    assert torch.allclose(kl_direction(lam, lam), torch.zeros(3, dtype=DTYPE), atol=1e-15)
    assert torch.allclose(kl_direction(lam, lam, mean_var=2.0, g=1.0), torch.zeros(3, dtype=DTYPE), atol=1e-15)
    one, two = torch.ones(1, dtype=DTYPE), 2 * torch.ones(1, dtype=DTYPE)
    assert float(kl_direction(one, two)) == pytest.approx(0.5 * (0.5 - 1 + math.log(2)))
    assert float(gaussian_kl(torch.eye(2, dtype=DTYPE), 2 * torch.eye(2, dtype=DTYPE))) == pytest.approx(
        2 * 0.5 * (0.5 - 1 + math.log(2)))
    # A mean error adds mean_var (1 - g)^2 / (2 v): E_mu KL(N(mu, 1) || N(0, 1)) = mean_var / 2.
    assert float(kl_direction(one, one, mean_var=3.0, g=0.0)) == pytest.approx(1.5)


def test_exact_sgm_law_matches_monte_carlo():
    n, n_steps, T, S = 4, 6, 2.0, 60000
    lam = power_law_spectrum(n, eta=2.0)
    y = sgm_sample(lam, S, n_steps, T, _gen(1)).reshape(S, -1)
    empirical = y.T @ y / S
    _, v = reverse_em_law(lam, n_steps, T)
    exact = circulant_covariance(v)
    assert float((empirical - exact).abs().max()) < 3 * math.sqrt(2 / S) * float(v.max())
    assert float(y.mean(0).abs().max()) < 5 * math.sqrt(float(v.max()) / S)


def _em_samples(cov: torch.Tensor, mean: torch.Tensor, n_steps: int, T: float, g: torch.Generator) -> torch.Tensor:
    """Monte-Carlo Euler-Maruyama reverse OU sampler for targets N(mean_s, cov): mean (S, d) -> samples (S, d)."""
    eye = torch.eye(cov.shape[0], dtype=DTYPE)
    y = torch.randn(mean.shape, dtype=DTYPE, generator=g)
    delta = T / n_steps
    for k in range(n_steps):
        t = T - k * delta
        prec = torch.linalg.inv(math.exp(-2 * t) * cov + (1 - math.exp(-2 * t)) * eye)
        score = -(y - math.exp(-t) * mean) @ prec
        y = y + delta * (y + 2 * score) + math.sqrt(2 * delta) * torch.randn(y.shape, dtype=DTYPE, generator=g)
    return y


def test_exact_wsgm_law_matches_monte_carlo():
    """One Haar level on 8x8: sample coarse lowpass, then details given it, invert; compare covariances."""
    n, n_steps, T, S = 8, 5, 2.0, 40000
    g = _gen(2)
    lam = power_law_spectrum(n, eta=2.0)
    W = analysis_matrix(n)
    B = W @ circulant_covariance(lam) @ W.T
    m2 = (n // 2) ** 2
    K = torch.linalg.solve(B[:m2, :m2], B[:m2, m2:]).T
    C = B[m2:, m2:] - K @ B[:m2, m2:]
    s = C.diagonal().reshape(3, m2).mean(1).sqrt().repeat_interleave(m2)  # conditional band stds
    s0 = B[:m2, :m2].diagonal().mean().sqrt()
    c = s0 * _em_samples(B[:m2, :m2] / s0**2, torch.zeros(S, m2, dtype=DTYPE), n_steps, T, g)
    d = s * _em_samples(C / (s[:, None] * s[None, :]), (c @ K.T) / s, n_steps, T, g)
    x = torch.cat([c, d], dim=1) @ W
    empirical = x.T @ x / S
    exact = wsgm_dense_covariance(lam, 1, n_steps, T)
    scale = float(exact.diagonal().max())
    assert float((empirical - exact).abs().max()) < 5 * math.sqrt(2 / S) * scale


def test_lowpass_spectrum_from_blocks_equals_dense():
    n = 8
    lam = power_law_spectrum(n, eta=3.0)
    W = analysis_matrix(n)
    assert torch.allclose(W @ W.T, torch.eye(n * n, dtype=DTYPE), atol=1e-12)
    B = band_covariance(lam)
    dense_low = (W @ circulant_covariance(lam) @ W.T)[: (n // 2) ** 2, : (n // 2) ** 2]
    assert torch.allclose(circulant_covariance(B[..., 0, 0].real), dense_low, atol=1e-12)


@pytest.mark.parametrize("n,levels,wavelet,band_std", [(8, 1, "haar", "conditional"), (8, 2, "haar", "marginal"),
                                                       (16, 2, "haar", "conditional"), (8, 1, "db2", "conditional")])
def test_fourier_block_fast_paths_equal_dense(n, levels, wavelet, band_std):
    lam = power_law_spectrum(n, eta=2.0)
    cov = circulant_covariance(lam)
    n_steps, T = 7, 2.5
    fast_sgm = float(total_kl(sgm_directions(lam), n_steps, T))
    assert fast_sgm == pytest.approx(float(gaussian_kl(cov, sgm_dense_covariance(lam, n_steps, T))), rel=1e-9)
    fast = float(total_kl(wsgm_directions(lam, levels, wavelet, band_std), n_steps, T))
    dense = float(gaussian_kl(cov, wsgm_dense_covariance(lam, levels, n_steps, T, wavelet, band_std)))
    assert fast == pytest.approx(dense, rel=1e-9)
    assert 0 < fast < fast_sgm  # and WSGM is the better sampler here


def test_kl_decreases_with_steps_and_wsgm_conditioning_is_size_independent():
    lam = power_law_spectrum(16, eta=2.0)
    kls = [float(total_kl(sgm_directions(lam), N, 3.0)) for N in (8, 32, 128)]
    assert kls[0] > kls[1] > kls[2] > 0
    kappa_sgm, kappa_details = [], []
    for n in (32, 128):
        lam = power_law_spectrum(n, eta=2.0)
        kappa_sgm.append(condition_numbers(sgm_directions(lam))[0])
        kappa_details.append(max(condition_numbers(wsgm_directions(lam, int(math.log2(n // 8))))[1:]))
    assert kappa_sgm[1] / kappa_sgm[0] == pytest.approx(16, rel=0.05)  # ~ n^eta
    assert max(kappa_details) < 10 and kappa_details[1] / kappa_details[0] < 1.2
