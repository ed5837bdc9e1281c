"""Noisy training images: simulate the realistic case where a prior only ever sees noisy scans.

Noise models (each: simulate a noisy training set once; and draw fresh noise with the same statistics on any
image, for the self-supervised loss of :mod:`wavepatch.prior.noisy_training`):

- ``lowdose``: low-dose CT noise inserted into the clean slice (the usual way to simulate a lower dose from a
  full-dose scan): x + FBP(low-dose sinogram of x) - FBP(sinogram of x). The clean slice x (unit image of an HU
  window starting at -1000) is projected (parallel beam, 180 views), photon counts are drawn with I0 = ``level``
  photons per bin (Beer-Lambert + Poisson, :func:`wavepatch.physics.noise.low_dose_sinogram`) and the post-log
  sinogram reconstructed by FBP (Hann): exactly the ``ct-lowdose`` task's measurement and baseline
  (:func:`wavepatch.tasks.make_task`). The noise is streaky, spatially correlated and signal dependent; its RMS
  depends on size and anatomy (training patient, I0 = 1e3 / 2.5e3 / 1e4: 0.014 / 0.009 / 0.005 at 64 px,
  0.021 / 0.014 / 0.007 at 128 px, 0.059 / 0.037 / 0.018 at 256 px); ``noise_report`` measures it.
- ``lowdose-fbp``: the low-dose FBP image itself, FBP(low-dose sinogram of x): the same noise plus the FBP's own
  blur and discretisation error, which at 128 px and below is larger than the noise (RMS 0.027 at 128 px) and
  which no denoiser removes.
- ``gaussian``: white Gaussian noise of std ``level`` on the unit image.

``noise_like(y)`` for the CT kinds is FBP(low-dose sinogram of y) - FBP(sinogram of y): a realisation of the
scanner's noise on the object y itself, which is all a self-supervised method can know without clean data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from wavepatch.tasks import TaskOptions, make_task

Tensor = torch.Tensor
NoiseFn = Callable[[Tensor, torch.Generator], Tensor]

NOISE_KINDS = ("lowdose", "lowdose-fbp", "gaussian")
DEFAULT_LEVEL = {"lowdose": 1e4, "lowdose-fbp": 1e4, "gaussian": 0.05}  # I0 photons per bin; std on the unit image


def default_level(kind: str) -> float:
    """The default ``level`` of a noise kind: I0 = 1e4 photons/bin (CT kinds, the ct-lowdose task's dose) or
    std 0.05 (gaussian)."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"noisy data must be one of {', '.join(NOISE_KINDS)}, got {kind!r}")
    return DEFAULT_LEVEL[kind]


def _check(kind: str, level: float, window: tuple[float, float] | None) -> None:
    default_level(kind)
    if not level > 0:
        raise ValueError(f"noise level must be positive, got {level}")
    if kind != "gaussian" and (window is None or abs(window[0] + 1000.0) > 1e-6):
        raise ValueError("lowdose training noise simulates CT photon statistics and needs an HU window starting at "
                         f"-1000 (air), got window {window}; use gaussian noise for other data")


def noise_sampler(kind: str, level: float, size: int,
                  window: tuple[float, float] | None = (-1000.0, 1000.0)) -> NoiseFn:
    """``noise_like(y, generator) -> n``: a fresh noise realisation (B, 1, N, N) with the training noise's
    statistics on images y (B, 1, N, N) (see the module docstring). Runs on the CPU; returns on y's device."""
    _check(kind, level, window)
    if kind == "gaussian":
        return lambda y, g: level * torch.randn(y.shape, generator=g).to(y.device)
    task = make_task("ct-lowdose", size, TaskOptions(dose=level, window=window))

    def noise_like(y: Tensor, g: torch.Generator) -> Tensor:
        yc = y.detach().float().cpu().clamp_min(0)
        noisy = task.baseline(task.simulate(yc, g))
        return (noisy - task.baseline(task.op.A(yc))).to(y.device)

    return noise_like


def simulate(kind: str, level: float, window: tuple[float, float] | None = (-1000.0, 1000.0)) -> NoiseFn:
    """``corrupt(x, generator) -> noisy`` for clean unit images x (B, 1, N, N): the noisy scan (module
    docstring)."""
    _check(kind, level, window)
    if kind == "gaussian":
        return lambda x, g: x + level * torch.randn(x.shape, generator=g).to(x.device)

    def corrupt(x: Tensor, g: torch.Generator) -> Tensor:
        if kind == "lowdose":
            return x + noise_sampler(kind, level, x.shape[-1], window)(x, g)
        task = make_task("ct-lowdose", x.shape[-1], TaskOptions(dose=level, window=window))
        return task.baseline(task.simulate(x.float().cpu(), g)).to(x.device)

    return corrupt


@torch.no_grad()
def noisy_training_set(images: Tensor, kind: str, level: float, window: tuple[float, float] | None,
                       seed: int = 0, chunk: int = 16) -> Tensor:
    """One fixed noisy scan per clean slice, images (S, 1, N, N) -> (S, 1, N, N), reproducible from ``seed``
    (every DDP rank and every resumed run sees the same noisy set)."""
    corrupt = simulate(kind, level, window)
    g = torch.Generator().manual_seed(seed * 1_000_003 + 424_242)
    return torch.cat([corrupt(images[i:i + chunk], g) for i in range(0, images.shape[0], chunk)])


def noise_report(noisy: Tensor, clean: Tensor) -> dict[str, float]:
    """RMS of noisy - clean and the PSNR (data range 1) of the noisy set against the clean one."""
    rms = float(((noisy - clean) ** 2).mean().sqrt())
    return {"rms_vs_clean": rms, "psnr_vs_clean": float(-20 * torch.log10(torch.tensor(max(rms, 1e-12))))}
