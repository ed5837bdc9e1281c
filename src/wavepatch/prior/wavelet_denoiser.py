"""Adaptive wavelet denoising sub-network (the cleaner of Wu et al.'s wavelet-improved score model).

x (B, 1, H, W) -> orthonormal periodized DWT (:func:`wavepatch.wavelets.dwt2_periodized`, J levels) -> per level
j and band b (cH, cV, cD): soft-threshold at t_jb = relu(tau_jb) * s_jb, times a gain g_jb, optionally a learned
3 x 3 filter per band -> inverse DWT. The low-pass band passes unchanged. Optional cycle spinning averages the
result over ``shifts`` diagonal circular shifts (translation invariance, fewer blocking artefacts).

s_jb is the noise standard deviation of band (j, b) in data units, given by the caller per image:
:func:`band_noise_std` measures it on a noise realisation drawn from the known noise model (for low-dose CT
noise, which is far from white, the per-band levels differ by an order of magnitude). Thresholds are therefore in
units of the noise, so one set of learned tau works at every dose, and on inputs carrying extra noise (the
recorrupted inputs of the self-supervised loss) the thresholds grow with it.

With tau = 0, g = 1 and identity filters the network is exactly the identity (perfect reconstruction of an
orthonormal transform). Parameters: 2 J 3 (+ 27 J with filters): tiny, and differentiable in all of them.
Wu et al. use a multi-level wavelet CNN here; this learned-shrinkage network is the small, interpretable version
(the thresholds are readable in the checkpoint's JSON).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wavepatch.linalg import soft_threshold
from wavepatch.wavelets import dwt2_periodized, idwt2_periodized

Tensor = torch.Tensor

MAD_TO_STD = 0.6744897501960817  # median |N(0, 1)|


def band_noise_std(noise: Tensor, levels: int, wavelet: str = "haar") -> Tensor:
    """Per-image, per-band standard deviation of a noise realisation (B, 1, H, W): (B, J, 3), level 0 coarsest,
    bands (cH, cV, cD) in data units (an orthonormal transform keeps white noise's std in every band)."""
    _, details = dwt2_periodized(noise, wavelet, levels)
    return torch.stack([d[:, 0].flatten(2).std(dim=2) for d in details], dim=1)


def mad_noise_std(x: Tensor, levels: int, wavelet: str = "haar") -> Tensor:
    """Donoho's estimate median(|cD_1|) / 0.6745 of white noise in x (B, 1, H, W) from the finest diagonal band,
    broadcast to (B, J, 3); for when no noise model is known."""
    _, details = dwt2_periodized(x, wavelet, levels)
    s = details[-1][:, 0, 2].flatten(1).abs().median(dim=1).values / MAD_TO_STD
    return s[:, None, None].expand(-1, levels, 3)


class WaveletDenoiser(nn.Module):
    """Learned per-level, per-band wavelet shrinkage (see the module docstring).

    levels: J; wavelet: an orthogonal pywt wavelet; shifts: cycle-spinning shifts (1 = none); tau_init: initial
    thresholds in noise stds (0: identity); band_filter: also learn a 3 x 3 filter per band (delta-initialised).
    forward(x, noise_std): x (B, 1, H, W) with H, W multiples of 2^J; noise_std (B, J, 3) from
    :func:`band_noise_std`, or a float / (B,) tensor for white noise. Returns (B, 1, H, W).
    """

    def __init__(self, levels: int = 3, wavelet: str = "haar", shifts: int = 1, tau_init: float = 1.0,
                 band_filter: bool = False) -> None:
        super().__init__()
        if levels < 1 or shifts < 1:
            raise ValueError(f"levels and shifts must be >= 1, got {levels}, {shifts}")
        self.levels, self.wavelet, self.shifts = int(levels), wavelet, int(shifts)
        self.tau = nn.Parameter(torch.full((levels, 3), float(tau_init)))
        self.gain = nn.Parameter(torch.ones(levels, 3))
        self.filters = None
        if band_filter:
            delta = torch.zeros(levels, 3, 1, 3, 3)
            delta[..., 1, 1] = 1.0
            self.filters = nn.Parameter(delta)

    def thresholds(self, noise_std: Tensor | float, batch: int, device: torch.device) -> Tensor:
        """t (B, J, 3) in data units."""
        s = torch.as_tensor(noise_std, dtype=torch.float32, device=device)
        if s.dim() <= 1:
            s = s.reshape(-1, 1, 1).expand(batch, self.levels, 3)
        return F.relu(self.tau) * s

    def shrink(self, x: Tensor, t: Tensor) -> Tensor:
        """One pass without cycle spinning, thresholds t (B, J, 3)."""
        low, details = dwt2_periodized(x, self.wavelet, self.levels)
        out = []
        for j, d in enumerate(details):  # d (B, 1, 3, h, w)
            c = soft_threshold(d[:, 0], t[:, j, :, None, None]) * self.gain[j, :, None, None]
            if self.filters is not None:
                c = F.conv2d(F.pad(c, (1, 1, 1, 1), mode="circular"), self.filters[j], groups=3)
            out.append(c[:, None])
        return idwt2_periodized(low, out, self.wavelet)

    def forward(self, x: Tensor, noise_std: Tensor | float) -> Tensor:
        t = self.thresholds(noise_std, x.shape[0], x.device)
        acc = 0
        for k in range(self.shifts):
            acc = acc + self.shrink(x.roll((k, k), dims=(-2, -1)), t).roll((-k, -k), dims=(-2, -1))
        return acc / self.shifts

    def info(self) -> dict:
        """A JSON-able summary (stored in the prior checkpoint's info)."""
        d = {"levels": self.levels, "wavelet": self.wavelet, "shifts": self.shifts,
             "tau": F.relu(self.tau).tolist(), "gain": self.gain.tolist(),
             "band_filter": self.filters is not None}
        if self.filters is not None:
            d["filters"] = self.filters[:, :, 0].tolist()
        return d

    @classmethod
    def from_info(cls, info: dict) -> WaveletDenoiser:
        """Rebuild a trained sub-network from :meth:`info`."""
        net = cls(info["levels"], info["wavelet"], info["shifts"], band_filter=info.get("band_filter", False))
        with torch.no_grad():
            net.tau.copy_(torch.tensor(info["tau"]))
            net.gain.copy_(torch.tensor(info["gain"]))
            if net.filters is not None:
                net.filters.copy_(torch.tensor(info["filters"])[:, :, None])
        return net
