"""Measurement noise models: additive Gaussian, and low-dose CT photon statistics.

Low-dose CT (Beer-Lambert + Poisson): a detector bin behind line integral p (dimensionless, p = integral of
the linear attenuation mu along the ray) counts N ~ Poisson(I0 exp(-p)) photons, plus optional Gaussian
electronic noise of std ``electronic_std`` counts. Dose enters only through I0, the incident photons per bin per
view.

The measured line integral is the bias-corrected log p_hat = log(I0 / (N + 1/2)). The plain log(I0 / N) is
biased upwards by about 1 / (2 lambda) (lambda = I0 exp(-p), the expected count; E log N = log lambda -
1 / (2 lambda) + O(lambda^-2)), and it needs a clamp at N = 0 that biases it the other way. The shift by half a
photon removes the first-order term (Anscombe-type; E p_hat - p = O(lambda^-2)) and is finite at N = 0, so the
raw counts stay recoverable: N = I0 exp(-p_hat) - 1/2. On the chest slices of the project's data the plain log
made the FBP image of soft tissue +4.8 HU too bright at I0 = 2.5e3 and bone +17 HU, exactly, in expectation;
with the shift every tissue is within 0.7 HU (``benchmarks/ldct_log_bias.py``, docs/results.md section 18.4).
With electronic noise a count can be negative; N + 1/2 is clamped at 1/2 (a zero count).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

# Linear attenuation of water at ~70 keV effective energy, per millimetre.
MU_WATER_PER_MM = 0.0192


def gaussian_noise(y: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """y + n with n ~ N(0, std^2) per entry; for complex y, E|n|^2 = std^2 (std/sqrt(2) per component)."""
    if std <= 0:
        return y.clone()
    if y.is_complex():
        s = std / 2**0.5
        re = torch.randn(y.shape, generator=generator, dtype=y.real.dtype).to(y.device)
        im = torch.randn(y.shape, generator=generator, dtype=y.real.dtype).to(y.device)
        return y + s * torch.complex(re, im)
    return y + std * torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)


def poisson_counts(line_integrals: Tensor, i0: float, electronic_std: float = 0.0,
                   generator: torch.Generator | None = None) -> Tensor:
    """Noisy photon counts N ~ Poisson(i0 exp(-p)) + N(0, electronic_std^2) for line integrals p (any shape)."""
    if i0 <= 0:
        raise ValueError(f"incident intensity I0 must be positive, got {i0}")
    expected = i0 * torch.exp(-line_integrals.clamp_min(0).double())
    counts = torch.poisson(expected, generator=generator)
    if electronic_std > 0:
        counts = counts + electronic_std * torch.randn(counts.shape, generator=generator, dtype=counts.dtype)
    return counts.to(line_integrals.dtype)


# Half a photon: the shift of the bias-corrected log (module docstring).
COUNT_SHIFT = 0.5


def counts_to_line_integrals(counts: Tensor, i0: float) -> Tensor:
    """Post-log measurement log(i0 / max(N + 1/2, 1/2)) of counts N (any shape), the bias-corrected log."""
    return torch.log(i0 / (counts + COUNT_SHIFT).clamp_min(COUNT_SHIFT))


def line_integrals_to_counts(post_log: Tensor, i0: float) -> Tensor:
    """The counts N >= 0 a post-log measurement of :func:`counts_to_line_integrals` came from (its inverse)."""
    return (i0 * torch.exp(-post_log) - COUNT_SHIFT).clamp_min(0)


def low_dose_sinogram(line_integrals: Tensor, i0: float, electronic_std: float = 0.0,
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Simulate a low-dose scan: returns (post-log noisy line integrals, photon counts), both shaped like p."""
    counts = poisson_counts(line_integrals, i0, electronic_std, generator)
    return counts_to_line_integrals(counts, i0), counts


def attenuation_per_unit(pixel_mm: float, window: tuple[float, float] = (-1000.0, 1000.0)) -> float:
    """mu (per pixel) of an image value of 1 on the unit scale of an HU window whose lower end is air.

    With x = (HU - lo) / (hi - lo) and lo = -1000, mu = mu_water (1 + HU/1000) = mu_water (hi - lo)/1000 * x,
    so line integrals in pixel units times this factor are the dimensionless p of Beer-Lambert.
    """
    lo, hi = window
    if abs(lo + 1000.0) > 1e-6:
        raise ValueError("low-dose simulation needs an HU window starting at -1000 (air) so that the unit "
                         f"image is proportional to attenuation; got lower bound {lo}")
    return MU_WATER_PER_MM * pixel_mm * (hi - lo) / 1000.0
