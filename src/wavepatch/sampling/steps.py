"""The update rules every sampler shares (VE process x_sigma = x0 + sigma z), and the step callback.

Unconditional and posterior samplers differ only in the score they feed these steps (prior score, or prior
score plus a likelihood gradient), so each rule exists once here.

Callback: every sampler takes ``callback(state)``, called once per noise level with a dict
``{"i": level index, "n": number of levels, "sigma": level, "x": current state, "denoised": last denoiser
estimate, "nfe": denoiser evaluations so far}`` (k-diffusion's convention plus the NFE): progress bars and NFE
counting read it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from wavepatch.types import Denoiser

Tensor = torch.Tensor
Callback = Callable[[dict], None]
NoiseFn = Callable[[Tensor, "torch.Generator | None"], Tensor]  # (like, generator) -> standard normal noise


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like x on x's device, drawn from ``generator`` (on its own device) if given."""
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def slerp_slice_noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Noise for a slice stack x (S, C, H, W) whose neighbouring slices are correlated (ISCS, the inter-slice
    consistent sampling of duchenhe/ISCS): two independent single-slice draws z0, z1 (near-orthogonal in high
    dimension) are joined by spherical interpolation, and slice k takes the point t = k / S along the arc:
    z_k = (sin((1 - t) theta) z0 + sin(t theta) z1) / sin(theta), theta the angle between z0 and z1. Each z_k
    has the norm of a standard normal draw; neighbours are correlated by about cos(theta / S)."""
    s = x.shape[0]
    z = randn_like(x[:2] if s >= 2 else torch.cat([x, x]), generator).to(torch.float64)
    cos = float((z[0] * z[1]).sum() / (z[0].norm() * z[1].norm()))
    theta = torch.tensor(cos, dtype=torch.float64).clamp(-1.0, 1.0).acos()
    t = torch.arange(s, dtype=torch.float64, device=z.device) / s
    w0, w1 = torch.sin((1 - t) * theta) / torch.sin(theta), torch.sin(t * theta) / torch.sin(theta)
    view = (s,) + (1,) * (x.ndim - 1)
    return (w0.view(view) * z[0] + w1.view(view) * z[1]).to(x.dtype)


def level_pairs(sigmas: Tensor) -> list[tuple[float, float]]:
    """(sigma_i, sigma_{i+1}) for consecutive levels of a schedule."""
    return [(float(sigmas[i]), float(sigmas[i + 1])) for i in range(len(sigmas) - 1)]


def positive_levels(sigmas: Tensor) -> list[float]:
    """The levels > 0 of a schedule (Langevin-type samplers iterate at each)."""
    return [float(s) for s in sigmas if s > 0]


class Counted:
    """A denoiser that counts its evaluations (``nfe``)."""

    def __init__(self, denoise: Denoiser) -> None:
        self.denoise, self.nfe = denoise, 0

    def __call__(self, x: Tensor, sigma) -> Tensor:
        self.nfe += 1
        return self.denoise(x, sigma)


def report(callback: Callback | None, i: int, n: int, sigma: float, x: Tensor, denoised: Tensor | None,
           counted: Counted) -> None:
    """Call ``callback`` with the step state (see the module docstring)."""
    if callback is not None:
        callback({"i": i, "n": n, "sigma": sigma, "x": x, "denoised": denoised, "nfe": counted.nfe})


def ancestral_step(x: Tensor, x0: Tensor, s: float, s_next: float, generator: torch.Generator | None) -> Tensor:
    """Sample x_{s'} from the VE forward process' posterior given x_s = x and the clean estimate x0:
    x0 + (s'^2/s^2)(x - x0) + s' sqrt(1 - s'^2/s^2) z, so the result has noise level exactly s' however large the
    step (an Euler-Maruyama step to s' << s leaves noise of level ~s). It is the reverse SDE step of DDPM, or
    DDIM with eta = 1."""
    r2 = (s_next / s) ** 2
    return x0 + r2 * (x - x0) + s_next * (1 - r2) ** 0.5 * randn_like(x, generator)


def euler_maruyama_step(x: Tensor, score: Tensor, s: float, s_next: float,
                        generator: torch.Generator | None) -> Tensor:
    """Reverse VE SDE step: x + (s^2 - s'^2) score + sqrt(s^2 - s'^2) z (Song et al. 2021)."""
    var = s**2 - s_next**2
    return x + var * score + var**0.5 * randn_like(x, generator)


def langevin_step(x: Tensor, score: Tensor, a: float, generator: torch.Generator | None) -> Tensor:
    """One Langevin step x + a score + sqrt(2 a) z of step size a."""
    return x + a * score + (2 * a) ** 0.5 * randn_like(x, generator)


def corrector_step(x: Tensor, score: Tensor, snr: float, generator: torch.Generator | None) -> Tensor:
    """score_sde's Langevin corrector: step 2 (snr ||z|| / ||score||)^2 with batch-mean norms (a step that depends
    on each sample's own state breaks the Langevin kernel's invariance: per-item steps inflate the variance by
    ~40% on a Gaussian test)."""
    z = randn_like(x, generator)
    ratio = z.flatten(1).norm(dim=1).mean() / score.flatten(1).norm(dim=1).mean().clamp_min(1e-12)
    step = float(2 * (snr * ratio) ** 2)
    return x + step * score + (2 * step) ** 0.5 * z
