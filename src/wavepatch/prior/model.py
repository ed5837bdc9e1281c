"""Score priors: their config, construction, and the denoiser callables the samplers use.

A prior is an ``EDMDenoiser`` (preconditioned UNet) plus a ``PriorConfig`` saying what kind it is:
- ``whole``: the network sees the whole image (size a multiple of the UNet divisor; other sizes are zero-padded);
- ``patch``: the network sees patches and d position channels (PaDIS); any image size works.
``make_denoiser`` turns it into ``denoise(x, sigma) -> x_hat`` for x of shape (B, 1, H, W) (2-D priors) or
(B, 1, D, H, W) (3-D priors, ``unet.dims == 3``) in [0, 1] data units.
The third kind, ``wavelet`` (WSGM: one network per wavelet scale), has its own config and module in
:mod:`wavepatch.prior.wavelet` and is no single denoiser; ``load_prior`` refuses it.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from wavepatch.prior.patches import Draw, denoise_fixed_grid, denoise_overlapping, denoise_random_shift
from wavepatch.prior.precond import EDMDenoiser
from wavepatch.prior.unet import UNet, UNetConfig
from wavepatch.shapes import Size, per_axis
from wavepatch.types import Denoiser, JsonConfig

Tensor = torch.Tensor

PRIOR_KINDS = ("whole", "patch")
PATCH_MODES = ("padis", "stitch", "average")
PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively (CPU: AVX512-BF16 or AMX; CUDA: bf16 support)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type == "cpu":
        checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None),
                  getattr(torch.cpu, "_is_amx_tile_supported", None))
        return any(bool(f()) for f in checks if f is not None)
    return False


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """'fp32' or 'bf16' for the network's convolutions and matrix products: ``auto`` is bf16 where the device
    has native bfloat16 arithmetic (1.8-2.1x faster on an AVX512-BF16 CPU; relative output change ~2e-4),
    fp32 elsewhere (emulated bf16 is slower)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def inference_network(model: EDMDenoiser, precision: str) -> EDMDenoiser:
    """The model to evaluate at ``precision`` ('fp32' or 'bf16', already resolved).

    'fp32' is ``model`` itself. 'bf16' on the CPU for a 2-D network is a copy with bfloat16 weights stored
    channels-last: oneDNN's bfloat16 convolutions are ~7x faster channels-last than NCHW on an AMX CPU (0.48 vs
    3.5 ms for 25x64x28x28, 3x3), whose NCHW path spends its time reordering. The noise embedding's sinusoids, the
    GroupNorm statistics, the EDM skip path and the output stay float32 (``unet.norm_act``). Other devices and 3-D
    networks keep float32 weights under bf16 autocast. The copy is made once per model (again after its weights
    change in place).
    """
    if precision == "fp32":
        return model
    version = sum(p._version for p in model.parameters())  # in-place updates (an optimizer step) bump it
    cached = _INFERENCE_COPIES.get(model)
    if cached is not None and cached[0] == version:
        return cached[1]
    param = next(model.parameters())
    if param.device.type == "cpu" and model.net.conv_in.weight.ndim == 4:
        fast = copy.deepcopy(model).to(torch.bfloat16).to(memory_format=torch.channels_last)
        fast.requires_grad_(False)  # an input gradient (DPS) still flows; the weights stay fixed
    else:
        fast = _Autocast(model, param.device.type)
    fast.eval()
    _INFERENCE_COPIES[model] = (version, fast)
    return fast


class _Autocast(torch.nn.Module):
    """``model`` under bf16 autocast (convolutions and matrix products in bfloat16), output float32."""

    def __init__(self, model: torch.nn.Module, device_type: str) -> None:
        super().__init__()
        self.model, self.device_type = model, device_type

    def forward(self, *args):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.model(*args)
        return out.float()


_INFERENCE_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class PriorConfig(JsonConfig):
    """What a checkpoint holds besides weights.

    kind: 'whole' or 'patch'. unet: the architecture; its dims (2 or 3) is the prior's (in_channels includes the
    dims position channels of a patch prior). sigma_data: EDM's data standard deviation (data in [0, 1]).
    image_size: size of the training images (the size a whole-image prior generates by default), an int (the
    same on every axis) or one per axis. patch_size: default inference patch size of a patch prior, an int or
    one per axis. window: (lo, hi) window the training data were mapped to [0, 1] with (HU for CT), or None
    (the percentile normalisation of ``io.normalize_volume``; the MNI-template MRI prior of earlier releases
    used min-max). modality: 'ct', 'mri' or 'other'; None (older checkpoints) means CT when the window
    reaches below -500 (an HU window), else 'other'. Only CT priors write samples in HU (NIfTI, DICOM).
    """

    kind: str = "patch"
    unet: UNetConfig = field(default_factory=UNetConfig)
    sigma_data: float = 0.5
    image_size: int | tuple[int, ...] = 128
    patch_size: int | tuple[int, ...] = 32
    window: tuple[float, float] | None = (-1000.0, 1000.0)
    modality: str | None = None
    pyramid: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.modality not in (None, "ct", "mri", "other"):
            raise ValueError(f"modality must be ct, mri or other, got {self.modality!r}")
        if isinstance(self.unet, dict):
            self.unet = UNetConfig(**self.unet)
        if self.pyramid is not None:
            self.pyramid = tuple(int(f) for f in self.pyramid)
            if self.kind != "patch" or self.dims != 2 or 1 not in self.pyramid:
                raise ValueError(f"pyramid factors {self.pyramid} need a 2-D patch prior and must include 1")
        if self.window is not None:
            self.window = (float(self.window[0]), float(self.window[1]))
        if self.kind not in PRIOR_KINDS:
            raise ValueError(f"prior kind must be one of {PRIOR_KINDS}, got {self.kind!r}")
        self.image_size, self.patch_size = _size(self.image_size), _size(self.patch_size)
        per_axis(self.image_size, self.dims, "image_size")  # a tuple must have one entry per axis
        patch = per_axis(self.patch_size, self.dims, "patch_size")
        expected_in = self.unet.out_channels + (self.dims if self.kind == "patch" else 0)
        if self.unet.in_channels != expected_in:
            raise ValueError(f"a {self.dims}-D {self.kind} prior needs unet.in_channels = {expected_in}, got "
                             f"{self.unet.in_channels}")
        if self.kind == "patch" and any(q % self.unet.divisor for q in patch):
            raise ValueError(f"patch_size {self.patch_size} must be a multiple of {self.unet.divisor}")

    @property
    def dims(self) -> int:
        """Spatial dimensions: 2 (images) or 3 (volumes)."""
        return self.unet.dims

    @property
    def is_ct(self) -> bool:
        return modality_is_ct(self.modality, self.window)


def _size(value: Size) -> int | tuple[int, ...]:
    """An int stays an int; a sequence (a JSON list) becomes a tuple of ints."""
    return int(value) if isinstance(value, (int, float)) else tuple(int(v) for v in value)


def _check_input(x: Tensor, dims: int) -> None:
    if x.ndim != dims + 2:
        raise ValueError(f"this is a {dims}-D prior: it denoises (B, C, {'D, ' if dims == 3 else ''}H, W) input, got "
                         f"shape {tuple(x.shape)}")


def modality_is_ct(modality: str | None, window: tuple[float, float] | None) -> bool:
    """Whether a prior is a CT prior: its modality says so, or (modality None, older checkpoints) its window
    reaches below -500 (an HU window)."""
    if modality is not None:
        return modality == "ct"
    return window is not None and window[0] <= -500


def build_prior(config: PriorConfig) -> EDMDenoiser:
    """A freshly initialised preconditioned network for ``config``."""
    return EDMDenoiser(UNet(config.unet), sigma_data=config.sigma_data)


def make_denoiser(model: EDMDenoiser, config: PriorConfig, mode: str = "padis", patch_size: Size | None = None,
                  generator: torch.Generator | None = None, chunk: int | None = 256,
                  precision: str = "fp32", draw: Draw | None = None) -> Denoiser:
    """``denoise(x, sigma)`` for x (B, 1, H, W) (2-D prior) or (B, 1, D, H, W) (3-D prior), any size per axis;
    sigma a float, 0-d or (B,) tensor. Returns the denoised x, same shape.

    For a patch prior ``mode`` picks how patches make the image: 'padis' (random grid shift per call),
    'stitch' (fixed grid) or 'average' (overlapping patches averaged, overlap a quarter patch per axis);
    ``patch_size`` (an int or one per axis) overrides the config's; ``generator`` drives the shifts and the border
    noise; ``chunk`` caps patches per network call; ``draw`` makes the border noise (``patches.sliced_draw``: a
    shard of a batch gets the whole batch's numbers). A whole-image prior ignores these.
    ``precision``: 'fp32', 'bf16' (:func:`inference_network`) or 'auto' (:func:`resolve_precision` for the
    model's device).
    """
    dims = config.dims
    device_type = next(model.parameters()).device.type
    precision = resolve_precision(precision, device_type)
    network = inference_network(model, precision)

    def run_model(x: Tensor, sigma: Tensor | float, *extra: Tensor) -> Tensor:
        return network(x, sigma, *extra).float()
    if config.kind == "whole":
        def denoise_whole(x: Tensor, sigma: Tensor | float) -> Tensor:
            _check_input(x, dims)
            spatial = x.shape[2:]
            pads = [(-s) % config.unet.divisor for s in spatial]
            if any(pads):  # zero (air) padding to a size the UNet takes; cropped back after
                out = run_model(F.pad(x, [v for q in reversed(pads) for v in (0, q)]), sigma)
                return out[(..., *[slice(0, s) for s in spatial])]
            return run_model(x, sigma)
        return denoise_whole

    p = per_axis(patch_size or config.patch_size, dims, "patch size")
    if any(q % config.unet.divisor for q in p):
        raise ValueError(f"patch size {p} must be a multiple of {config.unet.divisor} for this prior")
    if mode not in PATCH_MODES:
        raise ValueError(f"patch mode must be one of {PATCH_MODES}, got {mode!r}")

    def net(patches: Tensor, sigma: Tensor, pos: Tensor) -> Tensor:
        return run_model(patches, sigma, pos)

    def denoise_patches(x: Tensor, sigma: Tensor | float) -> Tensor:
        _check_input(x, dims)
        if mode == "padis":
            return denoise_random_shift(net, x, sigma, p, generator, chunk, draw)
        if mode == "stitch":
            return denoise_fixed_grid(net, x, sigma, p, generator, chunk, draw)
        return denoise_overlapping(net, x, sigma, p, overlap=tuple(max(1, q // 4) for q in p), generator=generator,
                                   chunk=chunk, draw=draw)

    return denoise_patches
