"""The options of a prior training run (:class:`TrainConfig`, saved as train_config.json), checked when they are
made, and what a resumed run may not change."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from wavepatch.prior.blur import BlurConfig
from wavepatch.prior.model import PriorConfig
from wavepatch.prior.noise_level import NoiseLevelConfig
from wavepatch.prior.noisy_data import default_level
from wavepatch.prior.pyramidal import check_factors
from wavepatch.prior.unet import UNetConfig
from wavepatch.prior.wavelet import WaveletPriorConfig, coefficient_stats
from wavepatch.shapes import per_axis
from wavepatch.types import from_known_fields

Tensor = torch.Tensor

# Fields that fix the architecture or the data: a resumed run must keep them.
_FROZEN = ("prior", "size", "window", "base_channels", "channel_mult", "num_blocks", "attention", "sigma_data",
           "patch_sizes", "pad", "axis", "levels", "wavelet", "noisy_data", "noise_level", "wavelet_denoiser", "dims",
           "patch_depth", "pyramid")


TRAINABLE = ("whole", "patch", "wavelet", "pyramidal", "blur", "noise-level")
MAX_SIZE = 4096  # largest image / patch side (pixels)
MAX_COUNT = 10_000  # largest batch
MAX_CHANNELS = 1024  # largest UNet base width


def _in_range(name: str, value: int, lo: int, hi: int | None) -> None:
    """ValueError unless ``lo <= value <= hi`` (``hi`` None: no upper bound)."""
    if value < lo or (hi is not None and value > hi):
        bound = f"at least {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {bound}, got {value}")


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved as train_config.json.

    data: files/folders ``SliceDataset`` reads. prior: 'whole', 'patch' or 'wavelet' (WSGM, see
    :mod:`wavepatch.prior.wavelet`: J + 1 networks of this architecture, one per scale, trained together on whole
    images; its coefficient statistics are measured on the training set, flips included, when the run starts).
    levels, wavelet: J and the orthogonal wavelet of a wavelet prior. detail_crop: a wavelet prior's detail
    networks train on random periodic crops of this side of their bands (``wsgm_loss``; None: whole bands), so a
    training step costs the same at every image size. dims: 2 (slices) or 3 (whole volumes, ``VolumeDataset``;
    patch and whole priors only). size: training images are resized to size x size; volumes to size per axis (an
    int, or (D, H, W) for dims 3). window: HU window (lo, hi) or None (0 to the 99.5th percentile per volume).
    modality: ct / mri / other, stored in the prior (None: CT if the window is an HU window). axis: NIfTI slicing axis.
    patch_sizes / patch_probs: patch sides drawn per step (patch priors) and their probabilities; the batch
    holds ``batch * (max(patch_sizes) / P)^dims`` patches so every step sees about the same number of pixels.
    patch_size: default inference patch size stored in the prior, an int or one per axis (default: largest
    training size). patch_depth: 3-D patch priors: slices per patch, fixed (DiffusionBlend's slabs of adjacent
    slices), the in-plane side drawn from patch_sizes; None: cubic patches.
    pad: zero border around training images from which patches may be cut (default: max patch size).
    batch: images (whole, wavelet) or largest-size patches (patch) per step and process. lr: AdamW peak learning
    rate, reached linearly over warmup steps. ema_halflife: steps. p_mean, p_std: ln(sigma) ~ N(p_mean, p_std^2).
    sigma_data: EDM data std; default 0.5 (images in [0, 1]), 1 for a wavelet prior (unit-variance normalised
    coefficients). p_mean default: -1.2 + ln(sigma_data / 0.5), i.e. EDM's -1.2 placed relative to sigma_data.
    checkpoint_every: steps between checkpoints; minutes: stop (after a checkpoint) once this much wall time
    has passed, resume later with --resume. init: a prior checkpoint of the same architecture to start from
    (fine-tuning; e.g. a bundled patch prior continued as a pyramidal one); None: random initialisation.
    noisy_data: None, or 'lowdose' / 'lowdose-fbp' / 'gaussian': replace every training slice by one simulated
    noisy scan (:mod:`wavepatch.prior.noisy_data`; fixed by ``seed``) at ``noise_level`` (lowdose*: I0 photons
    per bin, default 1e4; gaussian: std on the unit image, default 0.05). wavelet_denoiser: train a whole-image
    prior jointly with a wavelet denoising sub-network (``levels`` levels of ``wavelet``, 4 cycle-spinning shifts)
    on the noisy data (:mod:`wavepatch.prior.noisy_training`; needs noisy_data, whose noise model it is told);
    denoiser_lr: the sub-network's peak learning rate; feedback, feedback_after: weight of the score model's
    reconstructions in the sub-network's loss and its ramp in steps. The checkpoint is a plain whole-image
    prior; the sub-network's thresholds are in its info.
    """

    data: list[str] = field(default_factory=list)
    out: str = "runs/prior"
    prior: str = "patch"
    dims: int = 2
    size: int | tuple[int, ...] = 128
    window: tuple[float, float] | None = (-1000.0, 1000.0)
    modality: str | None = None
    axis: int = 2
    patch_sizes: tuple[int, ...] = (16, 32, 64)
    patch_probs: tuple[float, ...] = (0.2, 0.3, 0.5)
    patch_size: int | tuple[int, ...] | None = None
    patch_depth: int | None = None
    pyramid: tuple[int, ...] = (1, 2, 4)
    pyramid_probs: tuple[float, ...] | None = None
    pad: int | None = None
    levels: int = 2
    wavelet: str = "haar"
    detail_crop: int | None = None
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_blocks: int = 2
    attention: bool = True
    dropout: float = 0.0
    sigma_data: float | None = None
    batch: int = 16
    steps: int = 10_000
    lr: float = 2e-4
    warmup: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_halflife: float = 500.0
    p_mean: float | None = None
    p_std: float = 1.2
    flip: bool = True  # left-right mirroring (bodies are roughly mirror-symmetric; up-down is not)
    seed: int = 0
    init: str | None = None
    checkpoint_every: int = 500
    log_every: int = 10
    minutes: float | None = None
    device: str = "auto"
    noisy_data: str | None = None
    noise_level: float | None = None
    wavelet_denoiser: bool = False
    denoiser_lr: float = 1e-2
    feedback: float = 1.0
    feedback_after: int = 500

    def __post_init__(self) -> None:
        self.patch_sizes = tuple(int(p) for p in self.patch_sizes)
        self.patch_probs = tuple(float(p) for p in self.patch_probs)
        self.pyramid = tuple(int(f) for f in self.pyramid)
        if self.pyramid_probs is not None:
            self.pyramid_probs = tuple(float(p) for p in self.pyramid_probs)
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.size = self.size if isinstance(self.size, int) else tuple(int(s) for s in self.size)
        if self.patch_size is not None and not isinstance(self.patch_size, int):
            self.patch_size = tuple(int(s) for s in self.patch_size)
        if self.window is not None:
            self.window = (float(self.window[0]), float(self.window[1]))
        if self.prior not in TRAINABLE:
            raise ValueError(f"--prior must be one of {', '.join(TRAINABLE)}, got {self.prior!r}")
        self._check_dims()
        sizes = per_axis(self.size, self.dims, "size")
        if self.sigma_data is None:
            self.sigma_data = 1.0 if self.prior == "wavelet" else 0.5
        if self.p_mean is None:
            self.p_mean = -1.2 + math.log(self.sigma_data / 0.5)
        if min(sizes) < 8 or self.batch < 1 or self.steps < 1 or self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("size >= 8, batch >= 1, steps >= 1, checkpoint_every >= 1, log_every >= 1 needed")
        if not self.lr > 0 or self.grad_clip < 0 or self.ema_halflife <= 0 or self.p_std <= 0:
            raise ValueError("lr > 0, grad_clip >= 0, ema_halflife > 0 and p_std > 0 needed")
        self._check_ranges(sizes)
        divisor = 2 ** (len(self.channel_mult) - 1)
        if self.prior == "pyramidal":
            self._check_pyramid(sizes[0])
        if self.prior in ("patch", "pyramidal"):
            if any(p % divisor or p < divisor for p in self.patch_sizes):
                raise ValueError(f"patch sizes {self.patch_sizes} must be multiples of {divisor}")
            if self.patch_depth is not None:
                if self.dims != 3 or self.patch_depth % divisor or self.patch_depth < divisor:
                    raise ValueError(f"patch_depth is for 3-D patch priors and must be a multiple of {divisor}, got "
                                     f"{self.patch_depth}")
                if self.patch_size is None:
                    self.patch_size = (self.patch_depth, max(self.patch_sizes), max(self.patch_sizes))
            if self.patch_size is None:
                self.patch_size = max(self.patch_sizes)
            if self.pad is None:
                self.pad = max(self.patch_sizes)
            coarsest = min(sizes) // (max(self.pyramid) if self.prior == "pyramidal" else 1)
            if max(self.patch_sizes) > coarsest + 2 * self.pad:
                frame = coarsest + 2 * self.pad
                raise ValueError(f"largest patch {max(self.patch_sizes)} exceeds the padded image ({frame})")
        elif self.prior == "wavelet":
            if self.levels < 1 or self.size % (2**self.levels * divisor):
                raise ValueError(f"wavelet prior: size {self.size} must be a multiple of 2^levels * {divisor} = "
                                 f"{2 ** max(self.levels, 0) * divisor} (levels >= 1)")
            if self.detail_crop is not None and (self.detail_crop < divisor or self.detail_crop % divisor):
                raise ValueError(f"--detail-crop {self.detail_crop} must be a positive multiple of {divisor}")
        elif self.prior != "noise-level" and any(s % divisor for s in sizes):
            raise ValueError(f"{self.prior} prior: image size {self.size} must be a multiple of {divisor}")
        if self.detail_crop is not None and self.prior != "wavelet":
            raise ValueError("--detail-crop is for wavelet priors (--prior wavelet)")
        if self.noisy_data is not None:
            self.noise_level = float(self.noise_level or default_level(self.noisy_data))
        elif self.noise_level is not None:
            raise ValueError("--noise-level needs --noisy-data")
        if self.wavelet_denoiser:
            if self.prior != "whole" or self.noisy_data is None:
                raise ValueError("--wavelet-denoiser trains a whole-image prior on noisy data: it needs --prior whole "
                                 "and --noisy-data")
            if self.levels < 1 or self.size % 2**self.levels:
                raise ValueError(f"wavelet denoiser: size {self.size} must be a multiple of 2^levels = "
                                 f"{2 ** max(self.levels, 0)} (levels >= 1)")
            if not self.denoiser_lr > 0 or self.feedback < 0 or self.feedback_after < 0:
                raise ValueError("denoiser_lr > 0, feedback >= 0 and feedback_after >= 0 needed")

    def _check_ranges(self, sizes: tuple[int, ...]) -> None:
        """ValueError naming the first numeric option that is non-finite or outside its range."""
        floats = {"lr": self.lr, "grad_clip": self.grad_clip, "ema_halflife": self.ema_halflife,
                  "dropout": self.dropout, "weight_decay": self.weight_decay, "p_std": self.p_std,
                  "p_mean": self.p_mean, "sigma_data": self.sigma_data, "denoiser_lr": self.denoiser_lr,
                  "feedback": self.feedback}
        if self.minutes is not None:
            floats["minutes"] = self.minutes
        if self.noise_level is not None:
            floats["noise_level"] = self.noise_level
        bad = [k for k, v in floats.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"{bad[0]} must be a finite number, got {floats[bad[0]]}")
        _in_range("size", max(sizes), 8, MAX_SIZE)
        _in_range("batch", self.batch, 1, MAX_COUNT)
        _in_range("base_channels (--channels)", self.base_channels, 4, MAX_CHANNELS)
        _in_range("num_blocks (--blocks)", self.num_blocks, 1, 64)
        if not self.channel_mult or min(self.channel_mult) < 1 or max(self.channel_mult) > 64:
            raise ValueError(f"channel_mult must be integers in [1, 64], got {self.channel_mult}")
        if len(self.channel_mult) > 12:
            raise ValueError(f"channel_mult has {len(self.channel_mult)} levels; at most 12")
        _in_range("warmup", self.warmup, 0, None)
        _in_range("feedback_after", self.feedback_after, 0, None)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.weight_decay < 0 or not self.sigma_data > 0:
            raise ValueError("weight_decay >= 0 and sigma_data > 0 needed")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"minutes must be positive, got {self.minutes}")
        if self.noise_level is not None and not self.noise_level > 0:
            raise ValueError(f"noise_level must be positive, got {self.noise_level}")
        if self.window is not None and not (math.isfinite(self.window[0]) and math.isfinite(self.window[1])
                                            and self.window[0] < self.window[1]):
            raise ValueError(f"window must be finite with LO < HI, got {self.window}")
        if self.pad is not None:
            _in_range("pad", self.pad, 0, MAX_SIZE)
        if self.prior in ("patch", "pyramidal"):
            self._check_patches(sizes)

    def _check_patches(self, sizes: tuple[int, ...]) -> None:
        """Patch sides positive and at most the image size; probabilities in [0, 1], one per size, summing to 1."""
        if len(self.patch_sizes) != len(self.patch_probs) or not self.patch_sizes:
            raise ValueError(f"--patch-probs needs one probability per patch size: {len(self.patch_sizes)} sizes "
                             f"{self.patch_sizes}, {len(self.patch_probs)} probabilities {self.patch_probs}")
        for p in self.patch_sizes:
            _in_range("patch size", p, 1, MAX_SIZE)
        if any(not (math.isfinite(p) and 0 <= p <= 1) for p in self.patch_probs):
            raise ValueError(f"patch probabilities must lie in [0, 1], got {self.patch_probs}")
        if abs(sum(self.patch_probs) - 1) > 1e-6:
            raise ValueError(f"patch probabilities must sum to 1, got {self.patch_probs} (sum "
                             f"{sum(self.patch_probs):g})")
        if self.patch_size is not None:
            for p in per_axis(self.patch_size, self.dims, "patch_size"):
                _in_range("patch_size", p, 1, MAX_SIZE)

    def _check_pyramid(self, size: int) -> None:
        """Pyramidal prior: 2-D, factors 1, 2, 4, ... whose largest divides the size, one probability each."""
        if self.dims != 2:
            raise ValueError("the pyramidal prior is 2-D only")
        probs = self.pyramid_probs or tuple(1 / len(self.pyramid) for _ in self.pyramid)
        if len(probs) != len(self.pyramid) or any(not (math.isfinite(p) and p >= 0) for p in probs) \
                or abs(sum(probs) - 1) > 1e-6:
            raise ValueError(f"--pyramid-probs needs one non-negative probability per factor {self.pyramid}, "
                             f"summing to 1; got {probs}")
        pairs = sorted(zip(self.pyramid, probs, strict=True))  # each probability stays with its factor
        self.pyramid = check_factors([f for f, _ in pairs], size)
        self.pyramid_probs = tuple(p for _, p in pairs)

    def _check_dims(self) -> None:
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 (slices) or 3 (volumes), got {self.dims}")
        if self.dims == 2 and not isinstance(self.size, int):
            raise ValueError(f"2-D training slices are square: size must be one int, got {self.size}")
        if self.dims == 3 and self.prior in ("wavelet", "blur", "noise-level"):
            raise ValueError(f"the {self.prior} prior is 2-D only: dims=3 needs --prior patch or whole")
        if self.dims == 3 and (self.noisy_data is not None or self.wavelet_denoiser):
            raise ValueError("noisy training data and the wavelet denoiser are 2-D only: not with dims=3")

    def _unet(self, in_channels: int, out_channels: int) -> UNetConfig:
        return UNetConfig(in_channels=in_channels, out_channels=out_channels, base_channels=self.base_channels,
                          channel_mult=self.channel_mult, num_blocks=self.num_blocks, attention=self.attention,
                          dropout=self.dropout, dims=self.dims)

    def prior_config(self, images: Tensor | None = None) -> PriorConfig | WaveletPriorConfig | BlurConfig | \
            NoiseLevelConfig:
        """The prior's config; a wavelet prior's needs the training ``images`` (S, 1, N, N) for its statistics."""
        if self.prior == "blur":
            return BlurConfig(unet=self._unet(1, 1), sigma_data=self.sigma_data, image_size=self.size,
                              window=self.window, modality=self.modality)
        if self.prior == "noise-level":
            return NoiseLevelConfig(channels=self.base_channels, image_size=self.size, window=self.window,
                                    modality=self.modality)
        if self.prior == "wavelet":
            if images is None:
                raise ValueError("a wavelet prior's config needs the training images (coefficient statistics)")
            stats = coefficient_stats(torch.cat([images, images.flip(-1)]) if self.flip else images, self.levels,
                                      self.wavelet)
            return WaveletPriorConfig(levels=self.levels, wavelet=self.wavelet, coarse_unet=self._unet(1, 1),
                                      detail_unet=self._unet(4, 3), sigma_data=self.sigma_data,
                                      image_size=self.size, window=self.window, modality=self.modality, **stats)
        patch = self.prior in ("patch", "pyramidal")
        unet = self._unet(1 + (self.dims if patch else 0), 1)
        return PriorConfig(kind="patch" if patch else self.prior, unet=unet, sigma_data=self.sigma_data,
                           image_size=self.size, patch_size=self.patch_size or self.size, window=self.window,
                           modality=self.modality, pyramid=self.pyramid if self.prior == "pyramidal" else None)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return from_known_fields(cls, d, "training options")


def check_resume_config(saved: TrainConfig, new: TrainConfig) -> None:
    """ValueError if ``new`` changes a field that fixes the architecture or the data of ``saved``."""
    changed = [f"{k} ({getattr(saved, k)!r} -> {getattr(new, k)!r})" for k in _FROZEN
               if getattr(saved, k) != getattr(new, k)]
    if changed:
        raise ValueError(f"cannot resume: the run in {new.out} was trained with different {', '.join(changed)}")


def read_saved_config(out: Path) -> TrainConfig:
    """The ``TrainConfig`` of the run in ``out`` (train_config.json); one-line ValueError if it is unreadable."""
    path = out / "train_config.json"
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise FileNotFoundError(f"cannot resume: {path} is missing; restore it or start a new run") from None
    except (json.JSONDecodeError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot resume: {path} is corrupt ({exc}); restore it or start a new run") from None
