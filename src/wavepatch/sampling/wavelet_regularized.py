"""Wavelet-regularised annealed Langevin sampling for inverse problems (Wu et al., TMI 2023, reconstruction).

Plain Langevin sampling with a score prior wanders among plausible images; Wu et al. guide it, after every
prior step, with a data-consistency step and a wavelet-domain sparsity (wavelet TV) step. Per noise level sigma
and inner iteration:

    x <- x + a s(x, sigma) + sqrt(2 a) z,  a = eps sigma^2 / 2,  s = (D(x, sigma) - x) / sigma^2   (prior)
    v <- beta v + omega P(y - A x);  x <- x + v                                                 (data, ART-type)
    u = W^-1 soft(W x, tau);  x <- (x + lam u) / (1 + lam)                                      (wavelet TV)

P is SART's normalised back-projection C A^T R (R, C = inverse row / column sums of A) for operators with
non-negative real entries (CT, inpainting, blur, super-resolution): a simultaneous, relaxed form of the ART
update the paper uses for CT, made faster with heavy-ball momentum beta. For other operators (MRI) P is the
gradient step A^H / ||A||^2 (for single-coil Cartesian MRI with omega = 1: replace the measured k-space lines).
(Pulling towards y + sigma A z', the measurement of a sample at level sigma, made no difference on CT and is
left out.) W is an orthonormal periodized wavelet transform
(:func:`wavepatch.wavelets.dwt2_periodized`), soft thresholding acts on the detail bands only (for Haar this is
an anisotropic total variation at every scale), and the last line is the proximal step of (lam / 2)||x - u||^2,
the paper's lambda ||x - u||^2 coupling. The estimate returned is D(x, sigma_min).

The denoiser is used without its gradient, so any prior's ``denoise`` works (whole-image or patch).
NFE = n_inner * (number of sigmas > 0) + 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from wavepatch.fidelity import DataFidelity
from wavepatch.physics.base import LinearOperator
from wavepatch.sampling.posterior import data_consistency
from wavepatch.sampling.steps import Callback, Counted, langevin_step, positive_levels, report
from wavepatch.types import Denoiser
from wavepatch.wavelets import wavelet_shrink

Tensor = torch.Tensor


def data_step(op: LinearOperator) -> Callable[[Tensor, Tensor], Tensor]:
    """``delta(x, y) -> dx`` (image shaped): SART's C A^T R (y - A x) for an operator with non-negative real
    entries, else the gradient step A^H (y - A x) / ||A||^2 (see the module docstring)."""
    row = op.A(op.image_zeros(1) + 1)
    col = None if row.is_complex() else op.A_adjoint(torch.ones_like(row))
    if col is None or bool((row < 0).any()) or bool((col < 0).any()):  # not a non-negative operator
        lip = float(op.norm()) ** 2
        return lambda x, y: op.A_adjoint(y - op.A(x)) / lip
    inv_row = torch.where(row > 1e-6 * row.max(), 1 / row, torch.zeros_like(row))
    inv_col = torch.where(col > 1e-6 * col.max(), 1 / col, torch.zeros_like(col))
    return lambda x, y: inv_col * op.A_adjoint(inv_row * (y - op.A(x)))


@torch.no_grad()
def wavelet_regularized_langevin(denoise: Denoiser, fidelity: DataFidelity, x: Tensor, sigmas: Tensor, *,
                                 n_inner: int = 3, eps: float = 1.5, omega: float = 1.9, beta: float = 0.8,
                                 lam: float = 0.5, tau: float = 0.005, levels: int = 3, wavelet: str = "haar",
                                 data: str = "sart", cg: int = 10, generator: torch.Generator | None = None,
                                 callback: Callback | None = None) -> Tensor:
    """Annealed Langevin + ART-type data consistency + wavelet-TV coupling (Wu et al.); module docstring.

    denoise: the prior's D(x, sigma); fidelity: the measurement's data term (its operator and measurement y
    (B, ...) drive the SART step); x: the start (B, C, H, W), sigmas[0] z for a cold start; sigmas: decreasing,
    ending in 0 (``geometric_sigmas``). n_inner, eps: Langevin iterations per level and step factor. omega,
    beta: data-step relaxation and momentum. lam: coupling weight of the wavelet term; tau: its soft threshold
    (data units, unit images); levels, wavelet: its transform. data: "sart" (the paper's step above), "map"
    (instead of it, the MAP combination of the iterate, whose noise std is sigma, with the measurement under its
    noise model: ``fidelity.prox(x, 1 / sigma^2)`` with ``cg`` CG iterations; the projection for noiseless
    data; omega and beta unused) or "auto" (sart for noiseless data, map for noisy). SART fits the data with no
    noise model; on low-dose CT training slices map gained 0.4 dB at I0 = 2.5e3 but lost 0.9 dB at 1e4 and costs
    4x the time (docs/results.md section 18.2), so sart stays the default. Returns the estimate (B, C, H, W).
    NFE = n_inner * (number of sigmas > 0) + 1."""
    if data not in ("sart", "map", "auto"):
        raise ValueError(f"data must be 'sart', 'map' or 'auto', got {data!r}")
    if data == "auto":
        data = "sart" if fidelity.noiseless else "map"
    denoise = Counted(denoise)
    levels_sigma = positive_levels(sigmas)
    y = fidelity.y
    delta = data_step(fidelity.op) if data == "sart" else None
    v = torch.zeros_like(x)
    for i, s in enumerate(levels_sigma):
        a = eps * s**2 / 2
        d = None
        for _ in range(n_inner):
            d = denoise(x, s)
            x = langevin_step(x, (d - x) / s**2, a, generator)
            if delta is None:
                x = data_consistency(fidelity, x, s, cg)
            else:
                v = beta * v + omega * delta(x, y)
                x = x + v
            x = (x + lam * wavelet_shrink(x, tau, wavelet, levels)) / (1 + lam)
        report(callback, i, len(levels_sigma), s, x, d, denoise)
    return denoise(x, levels_sigma[-1])
