"""Denoising Langevin Gibbs (DLG; Kim & Ye, "Denoising MCMC", ICML 2023): MCMC over (x, sigma) near the data,
each output finished by a short probability-flow ODE.

Each of ``chains`` chains starts from sigma_max noise and descends with EDM's Heun sampler to ``sigma_chain``
(``init_levels`` levels, paid once per chain). Then, per output, ``gibbs`` Gibbs sweeps alternate

    x <- x + (eps / 2) (D(x, l) - x) + sqrt(eps) l z,  l = min(sigma, sigma_chain)   (Langevin on p_l, step eps l^2)
    sigma <- classifier(x)                                      (the noise-level classifier)

and the state with the smallest sigma of the sweep is finished by Heun from its own sigma to 0 over
``finish_levels`` Karras levels. The chain itself continues from its Gibbs state, not from the finished image,
so consecutive outputs of a chain are different draws near the data manifold (correlated if ``gibbs`` is
small). Cost per output: gibbs + 2 finish_levels - 1 network calls, plus the chain's start (2 (init_levels - 1))
shared by its outputs; the classifier's calls are not network (denoiser) evaluations and are timed, not counted.

Sigma is per image (B,), as the denoisers accept.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from wavepatch.sampling.steps import Counted
from wavepatch.sampling.unconditional import edm_heun, karras_sigmas
from wavepatch.types import Denoiser

Tensor = torch.Tensor
SigmaEstimator = Callable[[Tensor], Tensor]  # x (B, 1, H, W) -> sigma (B,)


def finish_levels_per_item(sigma: Tensor, levels: int, sigma_min: float) -> Tensor:
    """Karras levels from each image's sigma (B,) down to sigma_min, then 0: (levels + 1, B)."""
    cols = [karras_sigmas(levels, min(sigma_min, float(s)), float(s)) for s in sigma]
    return torch.stack(cols, dim=1).to(sigma.device)


@torch.no_grad()
def dlg_sample(denoise: Denoiser, estimate_sigma: SigmaEstimator, n: int, shape: tuple[int, ...],
               chains: int | None = None, gibbs: int = 2, finish_levels: int = 4, init_levels: int = 6,
               sigma_chain: float = 1.0, eps: float = 0.5, sigma_min: float = 0.002, sigma_max: float = 80.0,
               generator: torch.Generator | None = None, device: str | torch.device = "cpu",
               progress: bool = False) -> tuple[Tensor, dict]:
    """``n`` samples of ``shape`` (C, H, W) each, from ``chains`` chains (default n: one output each);
    returns (samples (n, C, H, W), info). ``estimate_sigma`` is the noise level of the state over its whole
    range (``NoiseLevelClassifier.estimate``): the output is finished from it, and a state noisier than
    ``sigma_chain`` gets its Langevin step at sigma_chain, which removes part of the excess. The sigma update is
    whatever ``estimate_sigma`` returns: the classifier's posterior mean of ln sigma here (a deterministic
    update, as the official demo's argmax), or a draw from p(sigma | x) for a literal Gibbs step.
    info: nfe_per_chain (network calls), nfe_per_image (calls times chains over the n outputs kept), chains,
    outputs_per_chain, the sigmas the outputs were finished from (mean, min, max)."""
    chains = chains or n
    if not 1 <= chains <= n:
        raise ValueError(f"chains must be in [1, n = {n}], got {chains}")
    for name, value, low in (("gibbs", gibbs, 1), ("finish_levels", finish_levels, 1),
                             ("init_levels", init_levels, 2)):
        if value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if not (0 < eps <= 2 and 0 < sigma_min < sigma_chain < sigma_max):
        raise ValueError(f"need 0 < eps <= 2 and 0 < sigma_min < sigma_chain < sigma_max, got eps {eps}, "
                         f"{sigma_min}, {sigma_chain}, {sigma_max}")
    counted = Counted(denoise)
    dev = generator.device if generator is not None else "cpu"

    def randn(b: int) -> Tensor:
        return torch.randn((b, *shape), generator=generator, device=dev).to(device, torch.float32)

    start = karras_sigmas(init_levels, sigma_chain, sigma_max, device=device)[:-1]  # ends at sigma_chain
    x = edm_heun(counted, randn(chains) * float(start[0]), start)
    sigma = estimate_sigma(x).to(device).clamp(sigma_min, sigma_max)
    rounds = -(-n // chains)
    outputs, finished_from = [], []
    for _ in tqdm(range(rounds), disable=not progress, desc="DLG", leave=False):
        best_x, best_sigma = x, torch.full_like(sigma, float("inf"))  # only this sweep's states count
        for _ in range(gibbs):
            level = sigma.clamp(max=sigma_chain)  # noisier states are pulled back towards p_sigma_chain
            view = level.reshape(-1, *[1] * len(shape))
            x = x + eps / 2 * (counted(x, level) - x) + eps**0.5 * view * randn(chains)
            sigma = estimate_sigma(x).to(device).clamp(sigma_min, sigma_max)
            better = sigma < best_sigma
            best_x = torch.where(better.reshape(-1, *[1] * len(shape)), x, best_x)
            best_sigma = torch.where(better, sigma, best_sigma)
        outputs.append(edm_heun(counted, best_x, finish_levels_per_item(best_sigma, finish_levels, sigma_min)))
        finished_from.append(best_sigma)
    samples = torch.cat(outputs)[:n]
    sig = torch.cat(finished_from)[:n]
    # one counted call evaluates every chain once; the chains made rounds * chains outputs, n of them kept
    info = {"nfe_per_chain": counted.nfe, "nfe_per_image": counted.nfe * chains / n, "chains": chains,
            "outputs_per_chain": rounds,
            "finish_sigma": {"mean": float(sig.mean()), "min": float(sig.min()), "max": float(sig.max())}}
    return samples, info
