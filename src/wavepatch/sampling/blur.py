"""Reverse sampling of blur diffusion (:mod:`wavepatch.prior.blur`), coarse to fine.

Over Karras noise levels sigma_0 = sigma_max > ... > sigma_{N-1} = sigma_min, one network call each (NFE = N).
With x0_hat = D(x_t, sigma_t) (clamped to [0, 1]) and the DCT gains g_t = d_{sigma_t}[k], each step maps
x_t to x_s (sigma_s < sigma_t) coefficient-wise in the DCT domain:

    z_hat = (x_t - g_t x0_hat) / sigma_t
    x_s = g_s x0_hat + sqrt(sigma_s^2 - c^2) z_hat + c z,    c = eta sigma_s sigma_{t|s} / sigma_t,

with g_{t|s} = g_t / g_s and sigma_{t|s}^2 = sigma_t^2 - g_{t|s}^2 sigma_s^2. For eta = 1 the step's mean and
variance are those of the forward process's posterior q(x_s | x_t, x_0 = x0_hat) (the blurring-diffusion
posterior of Hoogeboom & Salimans 2022); eta = 0 is the deterministic DDIM-type step. The only ratio of gains is
g_t / g_s <= 1 (gains fall as sigma grows, and never below d_min), so the vanishing gains of high frequencies at
large sigma are harmless. The chain starts from sigma_max z (at sigma_max
the blurred image is a constant far below the noise) and returns the last x0_hat.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from wavepatch.prior.blur import BlurDiffusion, dct2, gains, idct2
from wavepatch.prior.model import inference_network, resolve_precision
from wavepatch.sampling.unconditional import karras_sigmas

Tensor = torch.Tensor


@torch.no_grad()
def blur_sample(model: BlurDiffusion, n: int, steps: int = 50, eta: float = 0.0, size: int | None = None,
                sigma_min: float = 0.002, sigma_max: float = 80.0, generator: torch.Generator | None = None,
                device: str | torch.device = "cpu", progress: bool = False,
                precision: str = "fp32") -> tuple[Tensor, int]:
    """``n`` images (n, 1, size, size) in [0, 1] (size: the prior's training size by default); returns
    (images, NFE per image = steps). eta in [0, 1]: 0 deterministic, 1 ancestral (see the module docstring).
    precision: the network's arithmetic, as :func:`~wavepatch.prior.model.make_denoiser`'s."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    cfg = model.config
    size = size or cfg.image_size
    if size % cfg.unet.divisor:
        raise ValueError(f"size {size} must be a multiple of {cfg.unet.divisor} for this prior")
    dev = generator.device if generator is not None else "cpu"

    def randn() -> Tensor:
        return torch.randn((n, 1, size, size), generator=generator, device=dev).to(device, torch.float32)

    network = inference_network(model, resolve_precision(precision, device))
    sigmas = karras_sigmas(steps, sigma_min, sigma_max)[:-1]
    x = randn() * float(sigmas[0])
    for i in tqdm(range(steps), disable=not progress, desc="blur diffusion", leave=False):
        t = torch.full((n,), float(sigmas[i]), device=device)
        x0 = network(x, t).float().clamp(0, 1)
        if i == steps - 1:
            break
        s = torch.full((n,), float(sigmas[i + 1]), device=device)
        x = reverse_step(x, x0, t, s, eta, cfg, randn)
    return x0, steps


def reverse_step(x: Tensor, x0: Tensor, t: Tensor, s: Tensor, eta: float, cfg, randn=None) -> Tensor:
    """x_t -> x_s (module docstring); x, x0 (B, 1, H, W), t, s (B,) noise levels, s < t."""
    h, w = x.shape[-2:]
    g_t, g_s = gains(t, cfg, h, w), gains(s, cfg, h, w)
    sig_t, sig_s = t.float().reshape(-1, 1, 1, 1), s.float().reshape(-1, 1, 1, 1)
    xt_hat, x0_hat = dct2(x), dct2(x0)
    z = (xt_hat - g_t * x0_hat) / sig_t
    var_ts = (sig_t**2 - (g_t / g_s) ** 2 * sig_s**2).clamp_min(0)
    c = eta * sig_s * var_ts.sqrt() / sig_t
    out = g_s * x0_hat + (sig_s**2 - c**2).clamp_min(0).sqrt() * z
    if eta > 0:
        out = out + c * randn()  # white noise is white in the orthonormal DCT domain too
    return idct2(out)
