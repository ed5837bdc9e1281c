"""A noise-level classifier: p(sigma | x) for x = x_0 + sigma z, as Denoising MCMC needs (Kim & Ye 2023).

The classifier sorts an image into one of L noise levels sigma_1 > ... > sigma_L, geometric between sigma_max and
sigma_min (data units, [0, 1] images). It sees the image divided by its own standard deviation (so the
convolutions work on one scale at every noise level) and, in its head, the log of that standard deviation (so the
absolute scale is not lost). Trained by cross-entropy on training images noised at levels drawn uniformly over
the L classes; the posterior over levels is then p(sigma | x) under a uniform prior on the classes.
Convolutional with global average pooling: any image size works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from wavepatch.types import JsonConfig

Tensor = torch.Tensor

ESTIMATES = ("mean", "argmax", "sample")


@dataclass
class NoiseLevelConfig(JsonConfig):
    """levels: number of classes L; sigma_min, sigma_max: the smallest and largest level (data units);
    channels: width of the network; depth: stride-2 stages; image_size: training size; window, modality: as
    :class:`~wavepatch.prior.model.PriorConfig` (the classifier only knows images of its training units)."""

    kind: str = "noise-level"
    levels: int = 64
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    channels: int = 32
    depth: int = 4
    image_size: int = 128
    window: tuple[float, float] | None = (-1000.0, 1000.0)
    modality: str | None = None

    def __post_init__(self) -> None:
        if self.kind != "noise-level":
            raise ValueError(f"not a noise-level classifier config (kind {self.kind!r})")
        if not (2 <= self.levels <= 10_000 and 0 < self.sigma_min < self.sigma_max and math.isfinite(self.sigma_max)):
            raise ValueError(f"need 2 <= levels <= 10000 and 0 < sigma_min < sigma_max, got {self.levels}, "
                             f"{self.sigma_min}, {self.sigma_max}")
        if not (4 <= self.channels <= 1024 and 1 <= self.depth <= 12):
            raise ValueError(f"need 4 <= channels <= 1024 and 1 <= depth <= 12, got {self.channels}, {self.depth}")
        if self.window is not None:
            self.window = (float(self.window[0]), float(self.window[1]))

    def sigmas(self) -> Tensor:
        """The L levels, largest first (float64)."""
        return torch.logspace(math.log10(self.sigma_max), math.log10(self.sigma_min), self.levels,
                              dtype=torch.float64)


class NoiseLevelClassifier(nn.Module):
    """logits (B, L) = classifier(x (B, 1, H, W)); ``estimate`` turns them into sigma (B,)."""

    def __init__(self, config: NoiseLevelConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        layers: list[nn.Module] = [nn.Conv2d(1, c, 3, padding=1), nn.SiLU()]
        for _ in range(config.depth):
            layers += [nn.Conv2d(c, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c // 4), c), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(c + 1, 4 * c), nn.SiLU(), nn.Linear(4 * c, config.levels))
        self.register_buffer("log_sigmas", config.sigmas().log().float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"the noise-level classifier takes (B, 1, H, W) images, got {tuple(x.shape)}")
        std = x.float().flatten(1).std(dim=1).clamp_min(1e-8)
        feats = self.features(x.float() / std.reshape(-1, 1, 1, 1)).mean(dim=(2, 3))
        return self.head(torch.cat([feats, std.log()[:, None]], dim=1))

    @torch.no_grad()
    def estimate(self, x: Tensor, how: str = "mean", generator: torch.Generator | None = None) -> Tensor:
        """sigma (B,) for x (B, 1, H, W): 'mean' exp(E[ln sigma]), 'argmax' the most probable level, or
        'sample' a level drawn from p(sigma | x) (a Gibbs step, with ``generator``)."""
        if how not in ESTIMATES:
            raise ValueError(f"estimate must be one of {ESTIMATES}, got {how!r}")
        probs = self(x).softmax(dim=1)
        if how == "mean":
            return (probs * self.log_sigmas).sum(dim=1).exp()
        if how == "argmax":
            return self.log_sigmas[probs.argmax(dim=1)].exp()
        idx = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(x.device)
        return self.log_sigmas[idx].exp()


def noise_level_loss(model: nn.Module, x0: Tensor, generator: torch.Generator, *_unused) -> Tensor:
    """Cross-entropy of the level of x0 + sigma z, the level uniform over the classes; x0 (B, 1, H, W) in [0, 1].
    Same call as the EDM loss (the extra arguments are ignored)."""
    inner = getattr(model, "module", model)
    levels = inner.config.levels
    idx = torch.randint(0, levels, (x0.shape[0],), generator=generator, device=generator.device)
    sigma = inner.log_sigmas.to(generator.device)[idx].exp()
    noise = torch.randn(x0.shape, generator=generator, device=generator.device)
    x = x0 + (sigma.reshape(-1, 1, 1, 1) * noise).to(x0.device)
    return F.cross_entropy(model(x), idx.to(x0.device))
