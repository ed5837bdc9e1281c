"""WSGM sampling: coarse to fine, with the same sampler and number of steps at every scale.

``wsgm_sample`` draws the normalised coarsest low-pass x_J with the coarse model, then for j = J..1 draws the
normalised detail bands xbar_j given the current low-pass x_j (the detail model wrapped as a denoiser closure),
un-normalises them and inverts one wavelet level to get x_{j-1}; x_0 is the image. Every scale runs one of the
unconditional samplers of :mod:`wavepatch.sampling.unconditional` over the same Karras levels (in normalised
units), so the number of network evaluations (NFE) per scale does not depend on the image size; each evaluation
of scale j costs about (N / 2^j)^2 / N^2 of a full-resolution one (reported as ``nfe_pixel_weighted``).

Image size. The detail models are convolutional and their conditional law is local, so they run on any size.
The coarse model is a UNet as well and runs at size / 2^J: at the training size it generates what it learned;
at other sizes it is asked for a larger (or smaller) field of its training pixel spacing, which is right for
stationary textures (the WSGM Gaussian setting) but an extrapolation for anatomy (no global layout was learned
at that size). J is fixed by the checkpoint; a larger image means a larger coarse field, not an extra scale.

Which posterior samplers can use a WSGM. No whole-image denoiser D(x, sigma) is provided, because none follows
from the model without approximations that nothing here controls: the detail models condition on the *clean*
low-pass x_j, whereas at noise sigma the low-pass is noisy too (plugging in a denoised x_j ignores the
information the noisy details carry about it); and one image-domain noise sigma is sigma / std in each band's
normalised units, a different level per band, while each detail model was trained with one level shared by its
three bands. So DPS, MCG, PaDIS, Langevin, PC, DDNM and PnP keep using the whole-image and patch priors. What the
factorisation gives exactly is the posterior for a noise-free Haar low-pass measurement: for a box-average
downsampling y = avg_pool(x, 2^k) with k <= J, p(x | y) = prod_{j <= k} p(xbar_j | x_j) with x_k = 2^k y, so
the chain started from the measured low-pass (``lowpass=``, or ``wsgm_super_resolve``) samples it, and the
result reproduces y exactly.
"""

from __future__ import annotations

import math

import torch

from wavepatch.prior.wavelet import WaveletPrior
from wavepatch.sampling.unconditional import sample

Tensor = torch.Tensor


@torch.no_grad()
def wsgm_sample(prior: WaveletPrior, n: int, size: int, sampler: str = "heun", steps: int = 16,
                sigma_min: float = 0.002, sigma_max: float = 80.0, generator: torch.Generator | None = None,
                device: str | torch.device = "cpu", progress: bool = False, lowpass: Tensor | None = None,
                **options) -> tuple[Tensor, dict]:
    """``n`` images (n, 1, size, size) in data units from a WSGM, coarse to fine; returns (images, info).

    sampler, steps, sigma_min, sigma_max, options: those of :func:`wavepatch.sampling.unconditional.sample`,
    used unchanged at every scale (steps = noise levels per scale; sigmas in normalised units).
    lowpass: start from this low-pass x_k (n, 1, size / 2^k, size / 2^k), data units of the orthonormal
    transform (2^k times the local average), 1 <= k <= J, instead of sampling scales > k: conditional
    super-resolution (exact posterior of a noise-free Haar low-pass measurement, see the module docstring).
    info: 'per_scale' (sampling order: coarse model, then details of scale J..1; each with model, scale, side,
    nfe), 'nfe' (total network evaluations per image), 'nfe_pixel_weighted' (sum of nfe * side^2 / size^2: the
    cost in full-resolution evaluations of a network of the same width)."""
    cfg = prior.config
    J = cfg.levels
    if lowpass is None:
        k = J
        if size % cfg.divisor():
            raise ValueError(f"image size {size} must be a multiple of {cfg.divisor()} for this wavelet prior "
                             f"({J} levels)")
    else:
        if lowpass.dim() != 4 or lowpass.shape[1] != 1 or lowpass.shape[-1] != lowpass.shape[-2]:
            raise ValueError(f"lowpass must be (B, 1, h, h), got {tuple(lowpass.shape)}")
        ratio = size / lowpass.shape[-1]
        k = round(math.log2(ratio)) if ratio >= 2 else 0
        if not 1 <= k <= J or 2**k * lowpass.shape[-1] != size:
            raise ValueError(f"size {size} must be the lowpass side {lowpass.shape[-1]} times 2^k, 1 <= k <= {J}")
        if size % (2**k * cfg.detail_unet.divisor):
            raise ValueError(f"size {size} must be a multiple of {2**k * cfg.detail_unet.divisor} here")
        if lowpass.shape[0] != n:
            raise ValueError(f"n = {n} but lowpass holds {lowpass.shape[0]} images")
    kw = dict(sampler=sampler, steps=steps, sigma_min=sigma_min, sigma_max=sigma_max, generator=generator,
              device=device, progress=progress, **options)
    per_scale = []
    if lowpass is None:
        side = size // 2**J
        z, nfe = sample(prior.coarse, (n, 1, side, side), **kw)
        low = prior.unnormalize_low(z, J)
        per_scale.append({"model": "coarse", "scale": J, "side": side, "nfe": nfe})
    else:
        low = lowpass.to(device, torch.float32)
    for j in range(k, 0, -1):
        side = size // 2**j
        details, nfe = sample(prior.detail_denoiser(j, low), (n, 3, side, side), **kw)
        low = prior.finer(low, details, j)
        per_scale.append({"model": "details", "scale": j, "side": side, "nfe": nfe})
    info = {"per_scale": per_scale, "nfe": sum(s["nfe"] for s in per_scale),
            "nfe_pixel_weighted": sum(s["nfe"] * s["side"] ** 2 for s in per_scale) / size**2}
    return low, info


def wsgm_super_resolve(prior: WaveletPrior, y: Tensor, factor: int, **kwargs) -> tuple[Tensor, dict]:
    """Posterior samples (B, 1, factor h, factor h) for a noise-free box-average measurement y (B, 1, h, h)
    (``SuperResolution(factor, kernel='box')``), factor = 2^k with k <= J, Haar wavelet only: the WSGM chain
    from x_k = factor * y. ``kwargs`` as :func:`wsgm_sample`. The samples' box averages equal y."""
    if prior.config.wavelet not in ("haar", "db1"):
        raise ValueError(f"box-average super-resolution is the Haar low-pass; this prior uses {prior.config.wavelet}")
    return wsgm_sample(prior, y.shape[0], factor * y.shape[-1], lowpass=factor * y, **kwargs)
