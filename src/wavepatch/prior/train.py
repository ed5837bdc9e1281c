"""Training a score prior by denoising score matching (EDM loss), resumable, optionally multi-process (DDP).

One run writes into its output folder:
    prior.safetensors / prior.json   the EMA weights + config: what ``wavepatch sample`` and the samplers load;
    train_state.safetensors          raw weights, EMA weights and optimizer moments (for ``--resume``);
    train_config.json                the ``TrainConfig`` of the run;
    train_log.csv, loss.png          loss per logged step and its curve.
All writes are atomic, so a run killed at any moment leaves the last complete checkpoint. Random streams are
re-seeded from (seed, rank, step) at every checkpoint, so a resumed run continues exactly as an uninterrupted one
would have.

Priors of 3-D volumes (``dims=3``, patch or whole) train on a ``VolumeDataset`` of whole volumes, with 3-D
patches and 3 position channels; the wavelet prior and the noisy-data options are 2-D only.

Multi-process: launch with ``torchrun --nproc_per_node N -m wavepatch.cli train ...``; each process draws its own
batches, gradients are averaged by DistributedDataParallel (NCCL on GPUs, gloo on CPU); rank 0 writes files.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from wavepatch.io.atomic import atomic_path, atomic_write_bytes
from wavepatch.io.dataset import SliceDataset, VolumeDataset, random_patches
from wavepatch.prior.blur import BlurConfig, BlurDiffusion, blur_loss
from wavepatch.prior.checkpoint import (
    CheckpointError,
    check_state_matches,
    read_prior_metadata,
    read_weights,
    save_prior,
    tensor_shapes,
)
from wavepatch.prior.model import PriorConfig, build_prior
from wavepatch.prior.noise_level import NoiseLevelClassifier, NoiseLevelConfig, noise_level_loss
from wavepatch.prior.noisy_data import default_level, noise_report, noise_sampler, noisy_training_set
from wavepatch.prior.patches import position_channels
from wavepatch.prior.precond import edm_loss
from wavepatch.prior.pyramidal import check_factors, pyramid_levels
from wavepatch.prior.unet import UNetConfig
from wavepatch.prior.wavelet import WaveletPrior, WaveletPriorConfig, coefficient_stats, wsgm_loss
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


@dataclass
class InMemoryImages:
    """Training images held in memory: images (S, 1, *size) float32, already scaled as the prior expects."""

    images: Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


def draw_batch(data: SliceDataset | VolumeDataset, cfg: TrainConfig, generator: torch.Generator,
               levels: list[Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
    """One training batch on the CPU: (images or patches (B, 1, *S), position channels (B, d, *S) or None).

    S: the image (volume) size, or the patch size drawn for this step, on each of the d = 2 or 3 spatial axes.
    levels: a pyramidal prior's training images at each of its resolutions (``pyramid_levels``); the step's
    level is drawn first, and its patches carry coordinates over that level's image.
    """
    if cfg.prior == "pyramidal":
        return _patch_batch(levels[_draw_index(cfg.pyramid_probs, generator)], cfg, generator)
    if cfg.prior in ("whole", "wavelet", "blur", "noise-level"):
        idx = torch.randint(0, len(data), (cfg.batch,), generator=generator)
        x = data.images[idx]
        if cfg.flip:
            lr = torch.rand(cfg.batch, generator=generator) < 0.5
            x = torch.where(lr.reshape(-1, *[1] * (x.ndim - 1)), x.flip(-1), x)
        return x, None
    return _patch_batch(data.images, cfg, generator)


def _draw_index(probs: tuple[float, ...], generator: torch.Generator) -> int:
    """An index drawn with probabilities ``probs`` (the step's patch size, or a pyramidal prior's level)."""
    return int(torch.multinomial(torch.tensor(probs), 1, generator=generator).item())


def _patch_batch(images: Tensor, cfg: TrainConfig, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Patches of ``images`` (S, 1, *size) and their position channels, as ``draw_batch`` returns them."""
    d = images.ndim - 2
    p = cfg.patch_sizes[_draw_index(cfg.patch_probs, generator)]
    shape = (cfg.patch_depth, p, p) if cfg.patch_depth else (p,) * d  # a fixed depth scales the in-plane axes only
    n = max(1, round(cfg.batch * (max(cfg.patch_sizes) / p) ** (2 if cfg.patch_depth else d)))
    patches, positions = random_patches(images, n, shape, generator=generator, pad=cfg.pad, flip=False)
    pos = position_channels([positions[:, i, None] - cfg.pad + torch.arange(shape[i]) for i in range(d)],
                            images.shape[2:])
    if cfg.flip:
        # flip patch and position channels together: the patch as cut from the mirrored image, with mirrored
        # content and the mirrored image's last-axis coordinates (pixel j shows original column q, at -c_q there)
        f_lr = (torch.rand(n, generator=generator) < 0.5).reshape(n, *[1] * (d + 1))
        patches = torch.where(f_lr, patches.flip(-1), patches)
        sign = torch.ones(d)
        sign[-1] = -1.0
        mirrored = pos.flip(-1) * sign.reshape(1, d, *[1] * d)
        pos = torch.where(f_lr, mirrored, pos)
    return patches, pos


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> this process's GPU if there is one, else the CPU; a bare 'cuda' under DDP -> this rank's GPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and ":" not in name and dist.is_initialized():
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def _stream(seed: int, rank: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + rank * 7_919 + step) % (2**63))


def save_train_state(path: Path, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
                cfg: TrainConfig) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    tensors.update(optimizer_tensors(opt, "opt"))
    meta = {"step": str(step), "config": json.dumps(asdict(cfg))}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_train_state(path: Path, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    """Load the weights, EMA weights and optimizer moments of ``path`` into the given objects; -> the step."""
    meta, tensors = read_state_file(path)
    for prefix, module in (("model.", model), ("ema.", ema)):
        part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        check_state_matches(module.state_dict(), part, str(path))
        module.load_state_dict(part)
    load_optimizer_tensors(opt, tensors, "opt")
    return int(meta["step"])


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> dict[str, Tensor]:
    """An optimizer's per-parameter state (Adam moments, step) as flat tensors named PREFIX.I.NAME."""
    return {f"{prefix}.{i}.{name}": torch.as_tensor(value).detach().cpu().contiguous()
            for i, p in enumerate(_all_params(opt)) for name, value in opt.state.get(p, {}).items()}


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], prefix: str) -> None:
    """Inverse of :func:`optimizer_tensors` (tensors moved to each parameter's device, except the step)."""
    for i, p in enumerate(_all_params(opt)):
        state = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"{prefix}.{i}.")}
        if state:
            opt.state[p] = {k: (v.to(p.device) if k != "step" else v) for k, v in state.items()}


def read_state_file(path: Path) -> tuple[dict, dict[str, Tensor]]:
    """(metadata, tensors) of a training state file; one-line CheckpointError if it is unreadable or not one."""
    from safetensors import SafetensorError, safe_open

    fix = "delete it to start over, or restore it"
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path)) if "step" in meta else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"training state {path} is corrupt or truncated ({reason}); {fix}") from None
    if "step" not in meta or not str(meta["step"]).isdigit():
        raise CheckpointError(f"{path} is not a wavepatch training state; {fix}")
    return meta, tensors


def _read_saved_config(out: Path) -> TrainConfig:
    """The ``TrainConfig`` of the run in ``out`` (train_config.json); one-line ValueError if it is unreadable."""
    path = out / "train_config.json"
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise FileNotFoundError(f"cannot resume: {path} is missing; restore it or start a new run") from None
    except (json.JSONDecodeError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot resume: {path} is corrupt ({exc}); restore it or start a new run") from None


def _all_params(opt: torch.optim.Optimizer) -> list:
    return [p for group in opt.param_groups for p in group["params"]]


def _write_log_and_plot(out: Path, rows: list[list]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["step", "loss", "lr", "seconds"])
    writer.writerows(rows)
    atomic_write_bytes(out / "train_log.csv", buf.getvalue().encode())
    if len(rows) < 2:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r[0] for r in rows]
    losses = [r[1] for r in rows]
    smooth, acc = [], losses[0]
    for v in losses:
        acc = 0.95 * acc + 0.05 * v
        smooth.append(acc)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, losses, lw=0.5, alpha=0.4, label="loss")
    ax.plot(steps, smooth, lw=1.5, label="smoothed")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("EDM loss")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "loss.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _read_log(out: Path, upto: int) -> list[list]:
    path = out / "train_log.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [[int(r[0]), float(r[1]), float(r[2]), float(r[3])] for r in rows if int(r[0]) <= upto]


def check_resume_config(saved: TrainConfig, new: TrainConfig) -> None:
    """ValueError if ``new`` changes a field that fixes the architecture or the data of ``saved``."""
    changed = [f"{k} ({getattr(saved, k)!r} -> {getattr(new, k)!r})" for k in _FROZEN
               if getattr(saved, k) != getattr(new, k)]
    if changed:
        raise ValueError(f"cannot resume: the run in {new.out} was trained with different {', '.join(changed)}")


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, dataset=None) -> Path:
    """Train a prior as ``cfg`` says; returns the path of prior.safetensors. See the module docstring.

    dataset: None (read ``cfg.data`` with ``SliceDataset`` / ``VolumeDataset``), or an object with ``images``
    (S, 1, *size) already in the prior's value range and ``len()`` (e.g. ``InMemoryImages``: coefficient volumes
    of the shape priors); ``cfg.data`` is then only recorded."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    out = Path(cfg.out)
    state_path = out / "train_state.safetensors"
    if resume:
        if not state_path.exists():
            raise FileNotFoundError(f"nothing to resume: {state_path} does not exist")
        saved = _read_saved_config(out)
        check_resume_config(saved, cfg)
        if cfg.init is None:
            cfg.init = saved.init  # the record of where the run started stays in train_config.json
        elif cfg.init != saved.init:
            raise ValueError(f"cannot resume: the run in {out} started from --init {saved.init}, not {cfg.init}")
    elif state_path.exists():
        raise FileExistsError(f"{out} already holds a training run; pass --resume or choose another --out")

    if dataset is None:
        reader = VolumeDataset if cfg.dims == 3 else SliceDataset
        data = reader(cfg.data, size=cfg.size, window=cfg.window, axis=cfg.axis)
    else:
        data = dataset
        if tuple(data.images.shape[2:]) != per_axis(cfg.size, cfg.dims, "size"):
            raise ValueError(f"training images of size {tuple(data.images.shape[2:])} do not match size {cfg.size}")
    extra_info = {}
    if cfg.noisy_data is not None:
        clean = data.images
        data.images = noisy_training_set(clean, cfg.noisy_data, cfg.noise_level, cfg.window, cfg.seed)
        extra_info["noisy_data"] = {"kind": cfg.noisy_data, "level": cfg.noise_level,
                                    **noise_report(data.images, clean)}
    prior_cfg = cfg.prior_config(data.images)
    levels = pyramid_levels(data.images, cfg.pyramid) if cfg.prior == "pyramidal" else None
    build, loss_fn = {"wavelet": (WaveletPrior, functools.partial(wsgm_loss, crop=cfg.detail_crop)),
                      "blur": (BlurDiffusion, blur_loss),
                      "noise-level": (NoiseLevelClassifier, noise_level_loss)}.get(cfg.prior, (build_prior, edm_loss))
    if cfg.wavelet_denoiser:
        build, loss_fn = _joint_builder(cfg)
    torch.manual_seed(cfg.seed)
    model = build(prior_cfg).to(device)
    ema = build(prior_cfg).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr, betas=(0.9, 0.999),
                            weight_decay=cfg.weight_decay)
    if cfg.init and not resume:
        _load_init(cfg.init, model, ema, device, cfg)
    start = load_train_state(state_path, model, ema, opt) if resume else 0
    rows = _read_log(out, start) if rank == 0 else []
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "train_config.json", (json.dumps(asdict(cfg), indent=2) + "\n").encode())
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                    else None) if world > 1 else model
    ema_decay = 0.5 ** (1.0 / cfg.ema_halflife)
    n_params = sum(p.numel() for p in model.parameters())
    t0 = time.time()
    elapsed_before = rows[-1][3] if rows else 0.0
    gen = _stream(cfg.seed, rank, start)
    torch.manual_seed(cfg.seed + 17 * rank + start)
    items = "volumes" if cfg.dims == 3 else "slices"
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not progress or rank != 0,
               desc=f"train {cfg.prior} prior ({n_params / 1e6:.2f} M params, {len(data)} {items}, {device})")
    model.train()
    for step in bar:
        lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        x0, pos = draw_batch(data, cfg, gen, levels)
        loss = loss_fn(net, x0.to(device), gen, cfg.p_mean, cfg.p_std, None if pos is None else pos.to(device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - ema_decay)
            for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
                be.copy_(bm)
        done = step + 1
        if rank == 0 and (done % cfg.log_every == 0 or done == cfg.steps):
            rows.append([done, float(loss.item()), lr, round(elapsed_before + time.time() - t0, 2)])
            bar.set_postfix(loss=f"{rows[-1][1]:.4f}")
        out_of_time = _out_of_time(cfg.minutes, t0, world, device)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps or out_of_time:
            if rank == 0:
                _checkpoint(out, model, ema, opt, done, cfg, prior_cfg, rows, n_params, extra_info,
                            round(elapsed_before + time.time() - t0, 2))
            if world > 1:
                dist.barrier()
            gen = _stream(cfg.seed, rank, done)
            torch.manual_seed(cfg.seed + 17 * rank + done)
            if out_of_time:
                break
    bar.close()
    if world > 1:
        dist.destroy_process_group()
    return out / "prior.safetensors"


def _load_init(path: str, model: torch.nn.Module, ema: torch.nn.Module, device: torch.device,
               cfg: TrainConfig) -> None:
    """Start ``model`` and ``ema`` from the weights of the prior checkpoint ``path`` (fine-tuning); CheckpointError
    unless its tensors match this architecture exactly (name and shape) and it was trained on the same data
    units (window, EDM sigma_data)."""
    source = read_prior_metadata(path).get("config", {})  # refuses anything that is not a wavepatch checkpoint
    window = tuple(map(float, source["window"])) if source.get("window") is not None else None
    if "window" in source and window != cfg.window:
        raise CheckpointError(f"--init {path} was trained on window {window}, this run uses {cfg.window}")
    if "sigma_data" in source and float(source["sigma_data"]) != cfg.sigma_data:
        raise CheckpointError(f"--init {path} has sigma_data {source['sigma_data']}, this run {cfg.sigma_data}")
    check_state_matches(model.state_dict(), tensor_shapes(path), f"--init {path}")
    weights = read_weights(path)
    model.load_state_dict(weights)
    ema.load_state_dict(weights)


def _out_of_time(minutes: float | None, t0: float, world: int, device: torch.device) -> bool:
    """Whether the ``--minutes`` budget is spent; with several processes rank 0 decides for all, so every rank
    stops after the same step (clocks differ; a rank that stopped alone would hang the others)."""
    if minutes is None:
        return False
    flag = torch.tensor([float(time.time() - t0 > 60 * minutes)], device=device)
    if world > 1:
        dist.broadcast(flag, src=0)
    return bool(flag.item())


def _joint_builder(cfg: TrainConfig):
    """(build, loss) of a whole-image prior trained jointly with a wavelet denoiser (see TrainConfig)."""
    from wavepatch.prior.noisy_training import JointNoisyPrior, joint_loss
    from wavepatch.prior.wavelet_denoiser import WaveletDenoiser

    noise = noise_sampler(cfg.noisy_data, cfg.noise_level, cfg.size, cfg.window)

    def build(prior_cfg: PriorConfig) -> JointNoisyPrior:
        return JointNoisyPrior(build_prior(prior_cfg), WaveletDenoiser(cfg.levels, cfg.wavelet, shifts=4), noise,
                               feedback=cfg.feedback, feedback_after=cfg.feedback_after)

    return build, joint_loss


def _param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """One AdamW group, or two for a joint prior: its few sub-network parameters learn at ``denoiser_lr``."""
    cleaner = getattr(model, "cleaner", None)
    if cleaner is None:
        return [{"params": list(model.parameters())}]
    return [{"params": list(model.score.parameters())},
            {"params": list(cleaner.parameters()), "lr_scale": cfg.denoiser_lr / cfg.lr}]


def _checkpoint(out: Path, model, ema, opt, step: int, cfg: TrainConfig,
                prior_cfg: PriorConfig | WaveletPriorConfig, rows, n_params: int, extra_info: dict,
                seconds: float) -> None:
    """Write the training state, the prior (EMA weights) and the log; ``seconds``: training wall time so far
    (resumed runs included), also when the ``--minutes`` budget ends a run before its first logged step."""
    save_train_state(out / "train_state.safetensors", model, ema, opt, step, cfg)
    recent = [r[1] for r in rows[-50:]]
    info = {
        "step": step,
        "params": n_params,
        "train_seconds": seconds,
        "final_loss_mean_last_50_logged": (sum(recent) / len(recent)) if recent else None,
        "data": [str(d) for d in cfg.data],
        "train_config": asdict(cfg),
        **extra_info,
    }
    if hasattr(ema, "cleaner"):  # joint training: the checkpoint is the score model alone, a plain whole prior
        info["wavelet_denoiser"] = ema.cleaner.info()
        info["wavelet_denoiser_losses"] = model.last_losses
        ema = ema.score
    save_prior(out / "prior.safetensors", ema, prior_cfg, extra=info, half=True)
    _write_log_and_plot(out, rows)
