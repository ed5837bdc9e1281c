"""Prior checkpoints: safetensors weights with the JSON config in the file's own metadata (no pickle, ever).

``save_prior`` writes ``NAME.safetensors`` (weights + config in the header) and a readable copy of the config
as ``NAME.json``; both atomically. ``load_prior`` reads only the safetensors file and refuses, in one line,
anything that is not a wavepatch prior or whose tensors do not match the architecture its config declares.
Wavelet (WSGM) priors share the format (``config.kind == 'wavelet'``, a ``WaveletPriorConfig``) but are loaded by
``load_wavelet_prior``, and so do 3-D shape priors (``'shape'``, ``load_shape_prior``); each loader refuses the
others' kinds in one line (``prior_kind`` tells them apart).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from wavepatch.io.atomic import PathLike, atomic_path, atomic_write_bytes
from wavepatch.prior.blur import BlurConfig, BlurDiffusion
from wavepatch.prior.ldct import LDCTConfig, Translator
from wavepatch.prior.model import PriorConfig, build_prior
from wavepatch.prior.noise_level import NoiseLevelClassifier, NoiseLevelConfig
from wavepatch.prior.precond import EDMDenoiser
from wavepatch.prior.shape_wavelet import ShapePrior, ShapePriorConfig
from wavepatch.prior.wavelet import WaveletPrior, WaveletPriorConfig

FORMAT = "wavepatch-prior"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable wavepatch prior checkpoint."""


def save_prior(path: PathLike, model: nn.Module, config: PriorConfig | WaveletPriorConfig | ShapePriorConfig,
               extra: dict | None = None, half: bool = False) -> Path:
    """Write ``model``'s weights and ``config`` (plus ``extra`` info: training summary) to ``path``.

    half: store weights as float16 (half the size; ``load_prior`` returns float32 weights either way; rounding
    changes denoiser outputs by about 1e-4 relative, far below the denoising error)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"prior checkpoints end in .safetensors, got {path.name}")
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "config": config.to_dict(), "info": extra or {}}
    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"wavepatch": json.dumps(meta)})
    atomic_write_bytes(path.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
    return path


def read_prior_metadata(path: PathLike) -> dict:
    """The metadata dict of a prior checkpoint (format, version, config, info); CheckpointError if not one."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"prior checkpoint {path} is a folder; give the prior's .safetensors file "
                              "(e.g. RUN/prior.safetensors)")
    if not path.is_file():
        raise CheckpointError(f"prior checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a safetensors file ({exc})") from None
    if "wavepatch" not in meta:
        raise CheckpointError(f"{path} is a safetensors file but not a wavepatch prior (no wavepatch metadata)")
    try:
        info = json.loads(meta["wavepatch"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: wavepatch metadata is not valid JSON") from None
    if info.get("format") != FORMAT:
        raise CheckpointError(f"{path} holds a {info.get('format')!r} file, not a wavepatch prior")
    if info.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has prior format version {info.get('version')}, this wavepatch reads "
                              f"{FORMAT_VERSION}")
    return info


def prior_kind(path: PathLike) -> str:
    """The kind ('whole', 'patch', 'wavelet') a prior checkpoint declares; CheckpointError if it is none."""
    config = read_prior_metadata(path).get("config")
    if not isinstance(config, dict) or not isinstance(config.get("kind", "patch"), str):
        raise CheckpointError(f"{path}: invalid prior config (not a JSON object with a kind)")
    return config.get("kind", "patch")


def load_prior(path: PathLike, device: str | torch.device = "cpu",
               expect_kind: str | None = None) -> tuple[EDMDenoiser, PriorConfig]:
    """(model in eval mode on ``device``, config) from a checkpoint written by ``save_prior``."""
    kind = prior_kind(path)
    if kind in _NOT_DENOISERS:
        what = _NOT_DENOISERS[kind]
        raise CheckpointError(f"{path} is {what}, not one denoiser; a {expect_kind or 'whole or patch'}"
                              " prior is needed here")
    config = _parse_config(PriorConfig, path)
    if expect_kind is not None and config.kind != expect_kind:
        raise CheckpointError(f"{path} is a {config.kind} prior; a {expect_kind} prior is needed here")
    return _load_weights(path, build_prior, config, device), config


_NOT_DENOISERS = {"wavelet": "a wavelet (WSGM) prior", "shape": "a 3-D shape prior",
                  "ldct": "a low-dose CT translator (for --method ldct-metric)",
                  "blur": "a blur-diffusion prior (wavepatch sample generates from it)",
                  "noise-level": "a noise-level classifier (for wavepatch sample --sampler dlg --classifier)"}


def load_blur_prior(path: PathLike, device: str | torch.device = "cpu") -> tuple[BlurDiffusion, BlurConfig]:
    """(blur-diffusion network in eval mode on ``device``, config) from a blur prior checkpoint."""
    return _load_of_kind(path, "blur", BlurConfig, BlurDiffusion, device, "a blur-diffusion prior")


def load_noise_classifier(path: PathLike, device: str | torch.device = "cpu") -> tuple[NoiseLevelClassifier,
                                                                                      NoiseLevelConfig]:
    """(noise-level classifier in eval mode on ``device``, config) from its checkpoint."""
    return _load_of_kind(path, "noise-level", NoiseLevelConfig, NoiseLevelClassifier, device,
                         "a noise-level classifier (wavepatch train --prior noise-level)")


def load_wavelet_prior(path: PathLike, device: str | torch.device = "cpu") -> tuple[WaveletPrior, WaveletPriorConfig]:
    """(WSGM networks in eval mode on ``device``, config) from a wavelet prior checkpoint."""
    return _load_of_kind(path, "wavelet", WaveletPriorConfig, WaveletPrior, device, "a wavelet (WSGM) prior")


def _load_of_kind(path: PathLike, kind: str, config_cls, build, device, what: str):
    """(model, config) of a checkpoint that must be of ``kind``; CheckpointError naming ``what`` otherwise."""
    found = prior_kind(path)
    if found != kind:
        raise CheckpointError(f"{path} is a {found} prior; {what} is needed here")
    config = _parse_config(config_cls, path)
    return _load_weights(path, build, config, device), config


def save_shape_prior(path: PathLike, model: ShapePrior, config: ShapePriorConfig, extra: dict | None = None) -> Path:
    """A shape prior (generator + detail predictor, float16 weights) in the prior format; see ``save_prior``."""
    return save_prior(path, model, config, extra, half=True)


def load_shape_prior(path: PathLike, device: str | torch.device = "cpu") -> tuple[ShapePrior, ShapePriorConfig]:
    """(shape prior networks in eval mode on ``device``, config) from a file written by ``save_shape_prior``."""
    kind = prior_kind(path)
    if kind != "shape":
        raise CheckpointError(f"{path} is a {kind} image prior; a 3-D shape prior (wavepatch train --prior "
                              "shape-wavelet) is needed here")
    config = _parse_config(ShapePriorConfig, path)
    return _load_weights(path, ShapePrior, config, device), config


def save_translator(path: PathLike, translator: Translator, config: LDCTConfig, extra: dict | None = None) -> Path:
    """The translator alone (float16 weights, the inference part of a training run's checkpoint)."""
    return save_prior(path, translator, config, extra, half=True)


def load_translator(path: PathLike, device: str | torch.device = "cpu") -> tuple[Translator, LDCTConfig, dict]:
    """(translator in eval mode on ``device``, config, training info) from a translator file or a training run's
    ldct.safetensors (which also holds the raw translator, discriminator and projection head: its EMA translator
    is the one loaded)."""
    kind = prior_kind(path)
    if kind != "ldct":
        raise CheckpointError(f"{path} is a {kind} prior, not a low-dose CT translator (train one with "
                              "wavepatch train --prior ldct-metric)")
    config = _parse_config(LDCTConfig, path)
    prefix = "ema." if any(k.startswith("ema.") for k in tensor_shapes(path)) else ""
    model = _load_weights(path, Translator, config, device, prefix)
    return model, config, read_prior_metadata(path).get("info", {})


def _parse_config(cls, path: PathLike):
    try:
        return cls.from_dict(read_prior_metadata(path)["config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: invalid prior config ({exc})") from None


def _load_weights(path: PathLike, build, config, device: str | torch.device, prefix: str = ""):
    """``build(config)`` with the weights of ``path`` (those named PREFIX..., prefix stripped; others ignored),
    in eval mode on ``device``.

    The architecture is first built on the meta device (no memory) and its tensor shapes compared with the
    file's header, so a small file whose config declares a huge network is refused before anything is allocated."""
    try:
        with torch.device("meta"):
            skeleton = build(config)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: invalid prior config ({exc})") from None
    found = {k[len(prefix):]: v for k, v in tensor_shapes(path).items() if k.startswith(prefix)}
    check_state_matches(skeleton.state_dict(), found, str(path))
    del skeleton
    model = build(config)
    model.load_state_dict(read_weights(path, prefix))
    return model.to(device).eval()


def read_weights(path: PathLike, prefix: str = "") -> dict[str, torch.Tensor]:
    """The float32 tensors of ``path`` named PREFIX... (prefix stripped); CheckpointError if the file is corrupt.
    Check the names and shapes first (``tensor_shapes``, ``check_state_matches``): this reads the whole file."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is corrupt or truncated ({exc})") from None
    return {k[len(prefix):]: v.float() for k, v in tensors.items() if k.startswith(prefix)}


def tensor_shapes(path: PathLike) -> dict[str, torch.Size]:
    """Name -> shape of every tensor in a safetensors file, read from its header only (no tensor data loaded)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: torch.Size(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt or truncated ({exc})") from None


def check_state_matches(expected: dict, found: dict, what: str) -> None:
    """CheckpointError naming the first missing, unexpected or mis-shaped tensor of ``found``."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{what} does not match its architecture: {len(missing)} missing tensors"
            f"{' (e.g. ' + missing[0] + ')' if missing else ''}, {len(unexpected)} unexpected"
            f"{' (e.g. ' + unexpected[0] + ')' if unexpected else ''}"
        )
    for key, value in expected.items():
        if tuple(_shape(found[key])) != tuple(value.shape):
            raise CheckpointError(f"{what} does not match its architecture: {key} has shape "
                                  f"{tuple(_shape(found[key]))}, expected {tuple(value.shape)}")


def _shape(value) -> tuple[int, ...]:
    """A tensor's shape, or ``value`` itself when it already is one (``tensor_shapes``)."""
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)
