"""Exact error of discretised score-based sampling for stationary Gaussian fields: SGM on pixels vs WSGM.

The WSGM Gaussian setting (Guth, Coste, De Bortoli, Mallat, NeurIPS 2022, Theorems 1 and 3): the data are a
stationary Gaussian field on an n x n periodic grid, p = N(0, Sigma). Sigma is circulant, diagonal in the unitary
2D DFT with eigenvalues lambda(omega) (:func:`power_law_spectrum`). With the forward Ornstein-Uhlenbeck process
dx = -x dt + sqrt(2) dw (WSGM's choice), x_t = e^-t x_0 + sqrt(1 - e^-2t) z, the noised law is
p_t = N(e^-t mu, Sigma_t), Sigma_t = e^-2t Sigma + (1 - e^-2t) I, and its score -Sigma_t^-1 (x - e^-t mu) is
known in closed form (:func:`noised_score`).

Sampler. Euler-Maruyama on the reverse SDE with N uniform steps delta = T / N, started from N(0, I) (WSGM's
uniform time grid and final time T):

    y_{k+1} = y_k + delta (y_k + 2 score(y_k, T - k delta)) + sqrt(2 delta) z_k,     k = 0..N-1.

It is linear in y, so it maps Gaussians to Gaussians, and along each eigen-direction of the target covariance
it is a scalar recursion: for a target N(mu, lambda) the output is g mu + sqrt(v) eps (:func:`reverse_em_law`).
The law of the generated field is therefore exact, no sampling involved.

* SGM: the directions are the n^2 Fourier modes, with variance lambda(omega).
* WSGM: an orthogonal periodized wavelet transform (Haar by default) at J levels factorises
  p(x) = p(x_J) prod_j p(xbar_j | x_j). Every factor is Gaussian and stationary on its coarse grid, hence
  block-diagonal in that grid's Fourier basis: per coarse frequency nu, the low-pass and the 3 detail bands of
  one level are a 4 x 4 mix of the 4 fine frequencies aliasing to nu (:func:`band_covariance`), and the detail
  conditional given the low-pass is N(K(nu) c, C(nu)) with a 3 x 3 covariance. As WSGM does, each band is divided
  by one scalar std per band and scale (conditional std by default, or the marginal one as in WSGM's code) and
  the coarsest low-pass by its pixel std; the same N-step sampler runs at every scale, conditionally on the
  low-pass for the details. The eigen-directions of each normalised 3 x 3 block are again scalar recursions.

Error. KL(p || p_generated) in nats (data law first), reported per pixel (divided by n^2, as the paper's
(1/d)(E_T + E_delta)). For WSGM it is computed by the chain rule
KL = KL(p(x_J) || q(x_J)) + sum_j E_{x_j ~ p} KL(p(xbar_j | x_j) || q(xbar_j | x_j)), which is exact because the
generated law factorises the same way. :func:`sgm_dense_covariance` and :func:`wsgm_dense_covariance` build the
generated image covariance with dense matrices (small n only) as an independent check of the fast paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pywt
import torch

from wavepatch.wavelets import dwt2_periodized

Tensor = torch.Tensor
DTYPE = torch.float64


# ------------------------------------------------------------------------------------------ Gaussian field


def power_law_spectrum(n: int, eta: float = 2.0, xi_cycles: float = 1.0) -> Tensor:
    """Covariance eigenvalues lambda (n, n) of a stationary field on the n x n periodic grid, numpy-fft order.

    lambda(omega) = c / (xi^eta + |omega|^eta), omega = 2 pi k / n in radians per pixel, with the regulariser
    xi = 2 pi xi_cycles / n, i.e. xi_cycles cycles per image side: the field is the same continuous field sampled
    on a finer grid as n grows, so the condition number max/min lambda grows like n^eta. c normalises the pixel
    variance mean(lambda) to 1.
    """
    k = torch.fft.fftfreq(n, dtype=DTYPE) * 2 * math.pi
    w2 = k[:, None] ** 2 + k[None, :] ** 2
    xi = 2 * math.pi * xi_cycles / n
    lam = 1.0 / (xi**eta + w2 ** (eta / 2))
    return lam / lam.mean()


def circulant_covariance(lam: Tensor) -> Tensor:
    """Dense covariance (n^2, n^2) of the stationary field with DFT eigenvalues lam (n, n), row-major pixels."""
    n = lam.shape[-1]
    c = torch.fft.ifft2(lam).real  # autocovariance c(r) = mean_f lambda(f) e^{2 pi i f.r / n}
    i = torch.arange(n)
    di = (i[:, None] - i[None, :]) % n  # (n, n) index differences along one axis
    return c[di[:, None, :, None], di[None, :, None, :]].reshape(n * n, n * n)


def ou_variance(lam: Tensor, t: Tensor | float) -> Tensor:
    """Variance e^-2t lambda + 1 - e^-2t of the OU-noised field along a direction of variance lambda."""
    e = torch.exp(-2 * torch.as_tensor(t, dtype=DTYPE))
    return e * lam + 1 - e


def noised_score(x: Tensor, lam: Tensor, t: float) -> Tensor:
    """Closed-form score -Sigma_t^-1 x of p_t for the zero-mean field: x (B, n, n), lam (n, n) -> (B, n, n)."""
    return -torch.fft.ifft2(torch.fft.fft2(x) / ou_variance(lam, t)).real


# ------------------------------------------------------------------------------------------ the sampler


def reverse_em_law(lam: Tensor, n_steps: int, T: Tensor | float) -> tuple[Tensor, Tensor]:
    """Exact law of the N-step Euler-Maruyama reverse OU sampler along independent directions.

    For a target N(mu, lam) (lam: any shape) the sampler returns g mu + sqrt(v) eps, eps ~ N(0, 1); T (scalar
    or a tensor broadcasting against lam, e.g. (nT, 1)) is the final time. Returns (g, v) of the broadcast shape.
    """
    T = torch.as_tensor(T, dtype=DTYPE)
    delta = T / n_steps
    g = torch.zeros_like(lam * T)
    v = torch.ones_like(g)
    for k in range(n_steps):
        t = T - k * delta
        s2 = ou_variance(lam, t)
        a = 1 + delta - 2 * delta / s2
        g = a * g + 2 * delta * torch.exp(-t) / s2
        v = a * a * v + 2 * delta
    return g, v


def kl_direction(lam: Tensor, v: Tensor, mean_var: Tensor | float = 0.0, g: Tensor | float = 1.0) -> Tensor:
    """E_mu KL(N(mu, lam) || N(g mu, v)) over mu ~ N(0, mean_var), elementwise, in nats."""
    r = lam / v
    kl = 0.5 * (r - 1 - torch.log(r) + mean_var * (1 - g) ** 2 / v)
    return torch.where(torch.isfinite(kl), kl, torch.full_like(kl, math.inf))


@dataclass
class Directions:
    """Independent scalar targets N(mu, lam) with mu ~ N(0, mean_var), each counted `count` times (all (K,))."""

    lam: Tensor
    mean_var: Tensor
    count: Tensor


def _compress(lam: Tensor, mean_var: Tensor) -> Directions:
    """Merge directions equal to 12 decimals (Fourier symmetries repeat each one up to 8 times)."""
    key = torch.stack([lam.flatten(), mean_var.flatten()], dim=1).round(decimals=12)
    uniq, count = torch.unique(key, dim=0, return_counts=True)
    return Directions(uniq[:, 0], uniq[:, 1], count.to(DTYPE))


def total_kl(directions: list[Directions], n_steps: int, T: Tensor | float) -> Tensor:
    """Total KL (nats) of the sampler run with n_steps on every set of directions; T (nT,) -> (nT,)."""
    T = torch.as_tensor(T, dtype=DTYPE).reshape(-1, 1)
    out = torch.zeros(T.shape[0], dtype=DTYPE)
    for d in directions:
        g, v = reverse_em_law(d.lam, n_steps, T)
        out = out + (kl_direction(d.lam, v, d.mean_var, g) * d.count).sum(dim=-1)
    return out


# ------------------------------------------------------------------------------------------ SGM and WSGM


def sgm_directions(lam: Tensor) -> list[Directions]:
    """SGM on pixels: one direction per Fourier mode, zero mean."""
    return [_compress(lam, torch.zeros_like(lam))]


def _transfer_1d(n: int, wavelet: str) -> Tensor:
    """P (n/2, 2, 2) complex: band beta (lo, hi) at coarse frequency nu from fine frequency nu + a n/2 (a = 0, 1).

    pywt's periodized analysis a[k] = sum_i h[i] x[(2k + L/2 - i) mod n] maps the unitary fine mode e_f to
    H(f) / sqrt(2) times the unitary coarse mode e_{f mod n/2}, with H(f) = sum_i h[i] e^{2 pi i f (L/2 - i) / n}.
    """
    w = pywt.Wavelet(wavelet)
    filt = torch.tensor([w.dec_lo, w.dec_hi], dtype=DTYPE)  # (2, L)
    L, m = filt.shape[1], n // 2
    s = L // 2 - torch.arange(L, dtype=DTYPE)
    f = torch.arange(n, dtype=DTYPE)
    H = (filt.to(torch.complex128)[:, None, :] * torch.exp(2j * math.pi * f[:, None] * s / n)).sum(-1)  # (2, n)
    return (H.reshape(2, 2, m).permute(2, 0, 1) / math.sqrt(2)).contiguous()  # [nu, beta, a]


def band_covariance(lam: Tensor, wavelet: str = "haar") -> Tensor:
    """Covariance (m, m, 4, 4) complex of one DWT level in the coarse Fourier basis, m = n/2.

    Bands in binary order (lowpass, lo-hi, hi-lo, hi-hi) over axes (H, W); entry [nu] is
    P2(nu) diag(lambda at the 4 aliases of nu) P2(nu)^H with P2 = P(nu_1) kron P(nu_2). Different coarse
    frequencies are uncorrelated; the lowpass spectrum of the next level is the real part of [..., 0, 0].
    """
    n = lam.shape[-1]
    m = n // 2
    P = _transfer_1d(n, wavelet)
    P2 = torch.einsum("xba,ycd->xybcad", P, P).reshape(m, m, 4, 4)
    alias = lam.reshape(2, m, 2, m).permute(1, 3, 0, 2).reshape(m, m, 4).to(torch.complex128)
    return P2 @ (alias[..., :, None] * P2.mH)


def _band_variance(cond_var: Tensor, marg_var: Tensor, band_std: str) -> Tensor:
    """Per-band variance (3,) used to normalise the details, from per-coefficient variances (..., 3): the mean
    conditional variance given the lowpass (default) or the mean marginal variance (WSGM's code)."""
    if band_std not in ("conditional", "marginal"):
        raise ValueError(f"band_std must be 'conditional' or 'marginal', got {band_std!r}")
    src = cond_var if band_std == "conditional" else marg_var
    return src.reshape(-1, 3).mean(0)


def wsgm_directions(lam: Tensor, levels: int, wavelet: str = "haar", band_std: str = "conditional"
                    ) -> list[Directions]:
    """Scalar directions of WSGM: the normalised coarsest lowpass, then the normalised detail conditionals.

    Level by level, B = :func:`band_covariance`; the details given the lowpass c are N(K c, C) with
    K = B_da / B_aa, C = B_dd - B_da B_ad / B_aa; scaled by the band stds s, C' = C / (s s^T) = U diag(mu) U^H,
    and along eigenvector i the target mean is (U^H K / s)_i c, whose variance is B_aa |(U^H K / s)_i|^2.
    """
    if not pywt.Wavelet(wavelet).orthogonal:
        raise ValueError("WSGM needs an orthogonal wavelet")
    sets = []
    for _ in range(levels):
        B = band_covariance(lam, wavelet)
        b_aa = B[..., 0, 0].real
        K = B[..., 1:, 0] / b_aa[..., None]  # (m, m, 3)
        C = B[..., 1:, 1:] - K[..., :, None] * B[..., 0, 1:][..., None, :]
        diag = lambda M: M.diagonal(dim1=-2, dim2=-1).real  # noqa: E731
        s = _band_variance(diag(C), diag(B[..., 1:, 1:]), band_std).sqrt()
        mu, U = torch.linalg.eigh(C / (s[:, None] * s[None, :]))
        w = (U.mH @ (K / s)[..., None])[..., 0]
        sets.append(_compress(mu, b_aa[..., None] * w.abs() ** 2))
        lam = b_aa
    sets.insert(0, _compress(lam / lam.mean(), torch.zeros_like(lam)))
    return sets


def condition_numbers(directions: list[Directions]) -> list[float]:
    """max / min target variance of each set of directions (coarsest first for WSGM)."""
    return [float(d.lam.max() / d.lam.min()) for d in directions]


# ------------------------------------------------------------------------------------------ dense reference


def gaussian_kl(cov_p: Tensor, cov_q: Tensor) -> Tensor:
    """KL(N(0, cov_p) || N(0, cov_q)) in nats for dense (d, d) covariances."""
    Lq = torch.linalg.cholesky(cov_q)
    tr = torch.cholesky_solve(cov_p, Lq).diagonal().sum()
    logdet_q = 2 * Lq.diagonal().log().sum()
    logdet_p = torch.linalg.slogdet(cov_p)[1]
    return 0.5 * (tr - cov_p.shape[0] + logdet_q - logdet_p)


def reverse_em_law_dense(cov: Tensor, n_steps: int, T: float) -> tuple[Tensor, Tensor]:
    """Matrix version of :func:`reverse_em_law` for a target N(mu, cov), cov (d, d): output G mu + N(0, V)."""
    d = cov.shape[0]
    eye = torch.eye(d, dtype=DTYPE)
    G, V = torch.zeros(d, d, dtype=DTYPE), eye.clone()
    delta = T / n_steps
    for k in range(n_steps):
        t = T - k * delta
        prec = torch.linalg.inv(math.exp(-2 * t) * cov + (1 - math.exp(-2 * t)) * eye)
        A = (1 + delta) * eye - 2 * delta * prec
        G = A @ G + 2 * delta * math.exp(-t) * prec
        V = A @ V @ A.T + 2 * delta * eye
    return G, V


def sgm_dense_covariance(lam: Tensor, n_steps: int, T: float) -> Tensor:
    """Covariance (n^2, n^2) of the SGM-generated field, dense."""
    return reverse_em_law_dense(circulant_covariance(lam), n_steps, T)[1]


def analysis_matrix(n: int, wavelet: str = "haar") -> Tensor:
    """Orthogonal matrix (n^2, n^2) of one periodized DWT level: rows = [lowpass, cH, cV, cD], each (n/2)^2."""
    basis = torch.eye(n * n, dtype=DTYPE).reshape(n * n, 1, n, n)
    low, (det,) = dwt2_periodized(basis, wavelet, 1)
    return torch.cat([low.reshape(n * n, -1), det.reshape(n * n, -1)], dim=1).T


def wsgm_dense_covariance(lam: Tensor, levels: int, n_steps: int, T: float, wavelet: str = "haar",
                          band_std: str = "conditional") -> Tensor:
    """Covariance (n^2, n^2) of the WSGM-generated field, with dense matrices throughout (small n only).

    Analysis fine to coarse gives, per level, the Haar matrix W, the conditional mean map K and covariance C of
    the details given the lowpass, and the band stds; generation coarse to fine propagates the covariance of
    the generated lowpass through the conditional sampler (output L c + noise of covariance Q) and W^T.
    """
    n = lam.shape[-1]
    cov, factors = circulant_covariance(lam), []
    for _ in range(levels):
        W = analysis_matrix(n, wavelet)
        B = W @ cov @ W.T
        m2 = (n // 2) ** 2
        b_aa, b_ad, b_dd = B[:m2, :m2], B[:m2, m2:], B[m2:, m2:]
        K = torch.linalg.solve(b_aa, b_ad).T
        C = b_dd - K @ b_ad
        var = _band_variance(C.diagonal().reshape(3, m2).T, b_dd.diagonal().reshape(3, m2).T, band_std)
        factors.append((W, K, C, var.repeat_interleave(m2).sqrt()))
        cov, n = b_aa, n // 2
    var0 = cov.diagonal().mean()
    gen = var0 * reverse_em_law_dense(cov / var0, n_steps, T)[1]
    for W, K, C, s in reversed(factors):
        G, V = reverse_em_law_dense(C / (s[:, None] * s[None, :]), n_steps, T)
        L = s[:, None] * (G @ (K / s[:, None]))
        Q = s[:, None] * V * s[None, :]
        top = torch.cat([gen, gen @ L.T], dim=1)
        joint = torch.cat([top, torch.cat([L @ gen, L @ gen @ L.T + Q], dim=1)], dim=0)
        gen = W.T @ joint @ W
    return gen


def sgm_sample(lam: Tensor, n_samples: int, n_steps: int, T: float, generator: torch.Generator | None = None
               ) -> Tensor:
    """Monte-Carlo draw of the SGM sampler with the closed-form score: (n_samples, n, n)."""
    n = lam.shape[-1]
    y = torch.randn(n_samples, n, n, dtype=DTYPE, generator=generator)
    delta = T / n_steps
    for k in range(n_steps):
        y = y + delta * (y + 2 * noised_score(y, lam, T - k * delta))
        y = y + math.sqrt(2 * delta) * torch.randn(y.shape, dtype=DTYPE, generator=generator)
    return y
