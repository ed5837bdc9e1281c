"""Joint training of a score model and a wavelet denoising sub-network on noisy images (Wu et al., TMI 2023).

Only noisy training images y = x + n exist. The sub-network W (:class:`~wavepatch.prior.wavelet_denoiser.
WaveletDenoiser`) cleans them, the score model D learns from the cleaned images, and D's reconstructions feed
back into W. Per training step, on a batch y (B, 1, N, N) with a fresh noise realisation m ~ noise model on y
(:func:`wavepatch.prior.noisy_data.noise_sampler`) and s = per-band noise std of m:

    L = L_dsm + L_self + gamma(step) L_feedback
    L_dsm      = EDM loss of D on sg[W(y; s)]                         (score model; W frozen)
    L_self     = || W(y + a m; sqrt(1 + a^2) s) - (y - m / a) ||^2    (sub-network; recorrupted-to-recorrupted)
    L_feedback = || W(y; s) - sg[D(y, sigma_y)] ||^2, sigma_y = RMS(m) (sub-network; D frozen)

sg = stop-gradient, so each block of parameters sees the other as fixed: alternating (block-coordinate)
updates, done in one backward pass. gamma ramps from 0 to ``feedback`` over ``feedback_after`` steps, so W
first learns on its own while D is still poor; afterwards D's reconstructions pull W towards what the prior
considers clean, and a better W in turn gives D cleaner training data.

Where the paper (as summarised in the seeds) leaves gaps, filled here:
- The sub-network's own loss: the seed says only that it denoises and is refined by the SGM's reconstructions,
  without clean targets. L_self is recorrupted-to-recorrupted (Pang et al., CVPR 2021): for Gaussian n, m with
  the same covariance, y + a m and y - m / a carry independent noise, so L_self is an unbiased Noise2Noise loss
  from a single noisy scan, for any (also correlated, streaky) noise whose model can be sampled. Low-dose CT
  noise is only approximately Gaussian and its model is sampled on y rather than x (a small mismatch).
- "The SGM's reconstructions": D(y, sigma_y), Tweedie's posterior mean of the clean image given y under the
  current prior, treating y's noise as white with its RMS level, i.e. the E-step of an EM scheme whose M-step is
  L_dsm. The thresholds are in units of the known per-band noise std, so the same W serves y and the
  recorrupted y + a m.
- The score model never receives a gradient through W (a joint gradient would let W blur the data to make
  denoising easy), and W never through D.
- a = 0.5 (R2R's usual value); the schedule gamma = feedback * min(1, step / feedback_after).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from wavepatch.prior.precond import EDMDenoiser, edm_loss
from wavepatch.prior.wavelet_denoiser import WaveletDenoiser, band_noise_std

Tensor = torch.Tensor

R2R_ALPHA = 0.5


def clean_scans(cleaner: WaveletDenoiser, noise: Callable[[Tensor, torch.Generator], Tensor], y: Tensor,
                generator: torch.Generator) -> Tensor:
    """W(y) (B, 1, N, N) as training applies it: the per-band noise levels are measured on a fresh realisation
    of the noise model ``noise`` (:func:`wavepatch.prior.noisy_data.noise_sampler`) on y."""
    return cleaner(y, band_noise_std(noise(y, generator), cleaner.levels, cleaner.wavelet))


def _mse(a: Tensor, b: Tensor) -> Tensor:
    return ((a - b) ** 2).mean()


class JointNoisyPrior(nn.Module):
    """A whole-image score model ``score`` (EDMDenoiser) and its cleaner ``cleaner`` (WaveletDenoiser), trained
    together by ``forward(y, generator, p_mean, p_std) -> loss`` (one call, so DistributedDataParallel sees every
    parameter). noise: ``noise_like(y, generator)`` of the training noise; feedback / feedback_after: gamma's
    final value and ramp length in steps. ``last_losses`` holds the three terms of the latest call."""

    def __init__(self, score: EDMDenoiser, cleaner: WaveletDenoiser,
                 noise: Callable[[Tensor, torch.Generator], Tensor], feedback: float = 1.0,
                 feedback_after: int = 500) -> None:
        super().__init__()
        self.score, self.cleaner, self.noise = score, cleaner, noise
        self.feedback, self.feedback_after = float(feedback), int(feedback_after)
        self.sigma_data = score.sigma_data
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # saved with the training state
        self.last_losses: dict[str, float] = {}

    def gamma(self) -> float:
        return self.feedback * min(1.0, float(self.step) / max(1, self.feedback_after))

    def clean(self, y: Tensor, generator: torch.Generator) -> Tensor:
        """The cleaned images W(y) (B, 1, N, N), noise levels measured on a fresh noise realisation."""
        return clean_scans(self.cleaner, self.noise, y, generator)

    def forward(self, y: Tensor, generator: torch.Generator, p_mean: float, p_std: float) -> Tensor:
        m = self.noise(y, generator)
        s = band_noise_std(m, self.cleaner.levels, self.cleaner.wavelet)
        cleaned = self.cleaner(y, s)
        l_dsm = edm_loss(self.score, cleaned.detach(), generator, p_mean, p_std)
        a = R2R_ALPHA
        l_self = _mse(self.cleaner(y + a * m, (1 + a**2) ** 0.5 * s), y - m / a)
        gamma = self.gamma()
        l_fb = y.new_zeros(())
        if gamma > 0:
            with torch.no_grad():
                sigma_y = m.flatten(1).pow(2).mean(dim=1).sqrt().clamp_min(1e-4)
                target = self.score(y, sigma_y)
            l_fb = _mse(cleaned, target)
        if self.training:
            self.step += 1
        self.last_losses = {k: float(v.detach()) for k, v in (("dsm", l_dsm), ("self", l_self), ("feedback", l_fb))}
        return l_dsm + l_self + gamma * l_fb


def joint_loss(model: JointNoisyPrior | nn.Module, y: Tensor, generator: torch.Generator, p_mean: float,
               p_std: float, extra: Tensor | None = None) -> Tensor:
    """The training loop's loss signature (as ``edm_loss``) for a (possibly DDP-wrapped) JointNoisyPrior on a
    batch of noisy images y (B, 1, N, N); ``extra`` is unused."""
    return model(y, generator, p_mean, p_std)
