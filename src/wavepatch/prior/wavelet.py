"""WSGM, the wavelet score-based generative model (Guth, Coste, De Bortoli, Mallat 2022): config, networks, loss.

The image x (= x_0, data units, [0, 1]) is split by an orthonormal periodized wavelet transform (Haar by default,
:func:`wavepatch.wavelets.dwt2_periodized`) one level at a time: x_{j-1} -> (x_j, xbar_j), where x_j is the
low-pass image at scale j (side N / 2^j) and xbar_j its three detail bands (cH, cV, cD in pywt's order; side
N / 2^j). Then p(x) = p(x_J) prod_{j=1..J} p(xbar_j | x_j), and WSGM learns each factor with a score model:

- ``coarse``: an EDM denoiser of the normalised coarsest low-pass x_J, (B, 1, N/2^J, N/2^J);
- ``details[j - 1]`` (j = 1..J): an EDM denoiser of the normalised detail bands of scale j, (B, 3, N/2^j, N/2^j),
  given the clean normalised low-pass x_j of the same scale as one extra input channel (4 in, 3 out).

Normalisation (WSGM whitens each scale): every network sees c_norm = (c - mean) / std, with one mean/std per
scale for the low-pass and per scale and band for the details, measured on the training set
(:func:`coefficient_stats`) and stored in the config, hence in the checkpoint's JSON. The normalised
coefficients have unit variance, so the EDM preconditioning uses sigma_data = 1 and noise levels are in
normalised units (the same schedule fits every scale).

Scaling convention: the transform is orthonormal, so the Haar low-pass at scale j is 2^j times the local
2^j x 2^j average (an image in [0, 1] has x_j in [0, 2^j]); a box-average downsampling by 2^j is x_j / 2^j.
Lists indexed by scale (stats, ``details``, ``lows``) hold scale j at index j - 1, finest first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pywt
import torch
from torch import nn

from wavepatch.prior.model import modality_is_ct
from wavepatch.prior.precond import EDMDenoiser, edm_loss_weight
from wavepatch.prior.unet import UNet, UNetConfig
from wavepatch.wavelets import dwt2_periodized, idwt2_periodized

Tensor = torch.Tensor

STD_FLOOR = 1e-6  # a band that is constant on the training set (std 0) is divided by this instead


@dataclass
class WaveletPriorConfig:
    """What a WSGM checkpoint holds besides weights (see the module docstring for the notation).

    levels: J, the number of wavelet scales (J detail models + 1 coarse model). wavelet: an orthogonal pywt
    wavelet name. coarse_unet: architecture of the x_J model (1 in, 1 out). detail_unet: architecture shared by
    the J detail models (3 noisy bands + 1 low-pass in, 3 out). sigma_data: EDM data std of the normalised
    coefficients (1). image_size: side N of the training images. window, modality: as ``PriorConfig``.
    low_mean, low_std: J floats, the low-pass x_j's mean/std (data units) at scale j = index + 1.
    detail_mean, detail_std: J lists of 3 floats, per band (cH, cV, cD) of scale j = index + 1.
    Stats left as None mean "no normalisation" (mean 0, std 1).
    """

    kind: str = "wavelet"
    levels: int = 2
    wavelet: str = "haar"
    coarse_unet: UNetConfig = field(default_factory=UNetConfig)
    detail_unet: UNetConfig = field(default_factory=lambda: UNetConfig(in_channels=4, out_channels=3))
    sigma_data: float = 1.0
    image_size: int = 128
    window: tuple[float, float] | None = (-1000.0, 1000.0)
    modality: str | None = None
    low_mean: list[float] | None = None
    low_std: list[float] | None = None
    detail_mean: list[list[float]] | None = None
    detail_std: list[list[float]] | None = None

    def __post_init__(self) -> None:
        if self.kind != "wavelet":
            raise ValueError(f"a WaveletPriorConfig has kind 'wavelet', got {self.kind!r}")
        if self.modality not in (None, "ct", "mri", "other"):
            raise ValueError(f"modality must be ct, mri or other, got {self.modality!r}")
        if int(self.levels) != self.levels or self.levels < 1:
            raise ValueError(f"levels must be a positive integer, got {self.levels}")
        self.levels = int(self.levels)
        if self.wavelet not in pywt.wavelist(kind="discrete") or not pywt.Wavelet(self.wavelet).orthogonal:
            raise ValueError(f"WSGM needs an orthogonal wavelet (haar, dbN, symN, coifN), got {self.wavelet!r}")
        if isinstance(self.coarse_unet, dict):
            self.coarse_unet = UNetConfig(**self.coarse_unet)
        if isinstance(self.detail_unet, dict):
            self.detail_unet = UNetConfig(**self.detail_unet)
        if (self.coarse_unet.in_channels, self.coarse_unet.out_channels) != (1, 1):
            raise ValueError("the coarse model needs unet in_channels = out_channels = 1")
        if (self.detail_unet.in_channels, self.detail_unet.out_channels) != (4, 3):
            raise ValueError("the detail models need unet in_channels = 4 (3 bands + low-pass), out_channels = 3")
        if self.window is not None:
            self.window = (float(self.window[0]), float(self.window[1]))
        J = self.levels
        self.low_mean = _floats(self.low_mean, [0.0] * J, (J,), "low_mean")
        self.low_std = _floats(self.low_std, [1.0] * J, (J,), "low_std")
        self.detail_mean = _floats(self.detail_mean, [[0.0] * 3] * J, (J, 3), "detail_mean")
        self.detail_std = _floats(self.detail_std, [[1.0] * 3] * J, (J, 3), "detail_std")
        if min(self.low_std) <= 0 or min(min(s) for s in self.detail_std) <= 0:
            raise ValueError("coefficient stds must be positive")

    @property
    def is_ct(self) -> bool:
        return modality_is_ct(self.modality, self.window)

    def divisor(self) -> int:
        """Image sides must be multiples of this: 2^J times the coarser of the two UNets' divisors."""
        return 2**self.levels * max(self.coarse_unet.divisor, self.detail_unet.divisor)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> WaveletPriorConfig:
        return cls(**d)


def _floats(value, default, shape: tuple[int, ...], name: str) -> list:
    t = torch.as_tensor(default if value is None else value, dtype=torch.float64)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} (levels, bands), got {tuple(t.shape)}")
    return t.tolist()


def split_scales(x: Tensor, levels: int, wavelet: str = "haar") -> tuple[list[Tensor], list[Tensor]]:
    """Low-pass images and detail bands of every scale of x (B, 1, N, N), in data units (not normalised).

    Returns (lows, details): lows[j - 1] is x_j (B, 1, N/2^j, N/2^j) and details[j - 1] is xbar_j
    (B, 3, N/2^j, N/2^j), bands (cH, cV, cD), for j = 1..levels; lows[-1] is the coarsest x_J."""
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"expected images (B, 1, N, N), got {tuple(x.shape)}")
    lows, details = [], []
    low = x
    for _ in range(levels):
        low, (d,) = dwt2_periodized(low, wavelet, levels=1)
        lows.append(low)
        details.append(d[:, 0])  # (B, 1, 3, h, w) -> (B, 3, h, w)
    return lows, details


@torch.no_grad()
def coefficient_stats(images: Tensor, levels: int, wavelet: str = "haar", chunk: int = 64) -> dict[str, list]:
    """Mean and std of the low-pass at each scale and of each detail band at each scale over ``images``
    (S, 1, N, N), pooled over images and positions: the ``low_mean, low_std, detail_mean, detail_std`` fields
    of ``WaveletPriorConfig``. Accumulated in float64; stds below ``STD_FLOOR`` are raised to it."""
    sums = torch.zeros(levels, 4, 2, dtype=torch.float64)  # (scale, [low, cH, cV, cD], [sum, sum of squares])
    counts = torch.zeros(levels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        lows, details = split_scales(images[start:start + chunk].double(), levels, wavelet)
        for j, (low, d) in enumerate(zip(lows, details, strict=True)):
            c = torch.cat([low, d], dim=1).transpose(0, 1).flatten(1)  # (4, values)
            sums[j, :, 0] += c.sum(dim=1)
            sums[j, :, 1] += (c**2).sum(dim=1)
            counts[j] += c.shape[1]
    mean = sums[..., 0] / counts[:, None]
    std = (sums[..., 1] / counts[:, None] - mean**2).clamp_min(0).sqrt().clamp_min(STD_FLOOR)
    return {"low_mean": mean[:, 0].tolist(), "low_std": std[:, 0].tolist(),
            "detail_mean": mean[:, 1:].tolist(), "detail_std": std[:, 1:].tolist()}


class WaveletPrior(nn.Module):
    """The J + 1 preconditioned networks of a WSGM and the (un)normalisation of its coefficients.

    ``coarse`` denoises normalised x_J; ``details[j - 1]`` denoises normalised xbar_j given normalised x_j
    (``detail_denoiser``). ``forward`` runs all of them at once (one call, so DistributedDataParallel sees every
    parameter); sampling goes through :func:`wavepatch.sampling.wsgm.wsgm_sample`.
    """

    def __init__(self, config: WaveletPriorConfig) -> None:
        super().__init__()
        self.config = config
        self.levels = config.levels
        self.wavelet = config.wavelet
        self.sigma_data = config.sigma_data
        self.coarse = EDMDenoiser(UNet(config.coarse_unet), sigma_data=config.sigma_data)
        self.details = nn.ModuleList(EDMDenoiser(UNet(config.detail_unet), sigma_data=config.sigma_data)
                                     for _ in range(config.levels))
        # stats live in the config (exact, readable JSON); buffers only follow the module's device
        for name in ("low_mean", "low_std", "detail_mean", "detail_std"):
            self.register_buffer(name, torch.tensor(getattr(config, name), dtype=torch.float32), persistent=False)

    def forward(self, coarse: Tensor, coarse_sigma: Tensor, details: list[Tensor], detail_sigmas: list[Tensor],
                lows: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """All J + 1 denoisers: noisy normalised x_J (B, 1, n, n) at coarse_sigma (B,), and for j = 1..J noisy
        normalised xbar_j (B, 3, ...) at detail_sigmas[j - 1] (B,) given normalised x_j lows[j - 1] (B, 1, ...).
        Returns the denoised (x_J, [xbar_1, ..., xbar_J]), normalised."""
        out = [net(d, s, extra=low) for net, d, s, low in zip(self.details, details, detail_sigmas, lows, strict=True)]
        return self.coarse(coarse, coarse_sigma), out

    def normalize_low(self, low: Tensor, j: int) -> Tensor:
        """x_j (B, 1, h, w), data units -> normalised."""
        return (low - self.low_mean[j - 1]) / self.low_std[j - 1]

    def unnormalize_low(self, z: Tensor, j: int) -> Tensor:
        return z * self.low_std[j - 1] + self.low_mean[j - 1]

    def normalize_details(self, d: Tensor, j: int) -> Tensor:
        """xbar_j (B, 3, h, w), data units -> normalised, per band."""
        return (d - self.detail_mean[j - 1, :, None, None]) / self.detail_std[j - 1, :, None, None]

    def unnormalize_details(self, z: Tensor, j: int) -> Tensor:
        return z * self.detail_std[j - 1, :, None, None] + self.detail_mean[j - 1, :, None, None]

    def coefficients(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Normalised training targets and conditions of images x (B, 1, N, N): (x_J (B, 1, N/2^J, N/2^J),
        details [xbar_1 .. xbar_J], lows [x_1 .. x_J]), every one normalised with its scale's stats."""
        lows, details = split_scales(x, self.levels, self.wavelet)
        lows_n = [self.normalize_low(low, j) for j, low in enumerate(lows, start=1)]
        details_n = [self.normalize_details(d, j) for j, d in enumerate(details, start=1)]
        return lows_n[-1], details_n, lows_n

    def finer(self, low: Tensor, details_n: Tensor, j: int) -> Tensor:
        """One inverse step: x_j (B, 1, h, w) in data units and normalised xbar_j (B, 3, h, w) -> x_{j-1}
        (B, 1, 2h, 2w) in data units (x_0 is the image)."""
        d = self.unnormalize_details(details_n, j)
        return idwt2_periodized(low, [d[:, None]], self.wavelet)

    def detail_denoiser(self, j: int, low: Tensor):
        """``denoise(x, sigma)`` for normalised xbar_j (B, 3, h, w) given x_j ``low`` (B, 1, h, w, data units)."""
        cond = self.normalize_low(low, j)
        return lambda x, sigma: self.details[j - 1](x, sigma, extra=cond)


def periodic_crops(bands: list[Tensor], side: int, generator: torch.Generator) -> list[Tensor]:
    """The same random periodic crop (side x side, wrapping around the edges like the periodized transform) of
    every tensor in ``bands`` (each (B, C_k, h, w), equal h, w), one offset per item; unchanged if side >= h."""
    b, _, h, w = bands[0].shape
    if side >= h and side >= w:
        return bands
    dy = torch.randint(0, h, (b,), generator=generator, device=generator.device).tolist()
    dx = torch.randint(0, w, (b,), generator=generator, device=generator.device).tolist()
    return [torch.stack([t[i].roll((-dy[i], -dx[i]), dims=(-2, -1))[..., :side, :side] for i in range(b)])
            for t in bands]


def wsgm_loss(model: WaveletPrior | nn.Module, x0: Tensor, generator: torch.Generator, p_mean: float,
              p_std: float, extra: Tensor | None = None, crop: int | None = None) -> Tensor:
    """EDM loss of all J + 1 WSGM networks on clean images x0 (B, 1, N, N), summed over the networks.

    For every network and item, ln sigma ~ N(p_mean, p_std^2) independently; each term is
    mean_b lambda(sigma) ||D(c + sigma z) - c||^2 / (values per item), as :func:`wavepatch.prior.precond.edm_loss`,
    on that network's normalised coefficients c. ``model`` may be wrapped by DistributedDataParallel; ``extra``
    is unused (signature of ``edm_loss``).

    crop: train each detail network on a random periodic crop (crop x crop) of its bands and of the low-pass it
    is conditioned on (:func:`periodic_crops`), so a step costs the same at every image size; the coarse network
    always sees its whole band (it carries the global layout). The detail networks are convolutional and are
    applied to whole bands when sampling: this assumes the conditional detail score is local, WSGM's premise."""
    core = getattr(model, "module", model)
    coarse, details, lows = core.coefficients(x0)
    if crop is not None:
        pairs = [periodic_crops([d, low], crop, generator) for d, low in zip(details, lows, strict=True)]
        details, lows = [p[0] for p in pairs], [p[1] for p in pairs]
    targets = [coarse, *details]
    b = x0.shape[0]
    sigmas, noisy = [], []
    for t in targets:
        s = (torch.randn(b, generator=generator, device=generator.device) * p_std + p_mean).exp().to(x0.device)
        z = torch.randn(t.shape, generator=generator, device=generator.device).to(x0.device)
        sigmas.append(s)
        noisy.append(t + s.reshape(-1, 1, 1, 1) * z)
    out_coarse, out_details = model(noisy[0], sigmas[0], noisy[1:], sigmas[1:], lows)
    loss = x0.new_zeros(())
    for d, t, s in zip([out_coarse, *out_details], targets, sigmas, strict=True):
        loss = loss + (edm_loss_weight(s, core.sigma_data) * ((d - t) ** 2).mean(dim=(1, 2, 3))).mean()
    return loss
