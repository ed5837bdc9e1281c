"""Training of the shape priors: the wavelet-domain generator + detail predictor, the voxel-space ablation, PCA.

``train_shape_prior`` runs, in ``out``:
1. signed distances of the training shapes (:func:`wavepatch.geometry.shape_data.load_tsdfs`), their codes
   (:func:`wavepatch.prior.shape_wavelet.encode`) and per-channel statistics;
2. the generator: the project's EDM training (:func:`wavepatch.prior.train.train`, a whole-volume 3-D prior,
   sigma_data = 1 on unit-variance codes, no flips: left and right glands differ) in ``out/generator``;
3. the detail predictor (wavelet space only): a 3-D UNet regressing the normalised coarsest detail bands from the
   normalised ground-truth coarse channel, mean squared error, AdamW, EMA weights, in ``out/detail``;
4. ``out/prior.safetensors``: both networks, the code and its statistics (:func:`save_shape_prior`).
Every stage checkpoints and resumes (``resume=True``); ``minutes`` bounds the wall time of one call.

``fit_pca_model`` is the classical reference: PCA of the flattened training TSDFs, Gaussian coefficients.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from wavepatch.geometry.shape_data import load_tsdfs
from wavepatch.io.atomic import atomic_path, atomic_write_bytes
from wavepatch.io.shape_files import ShapeFileError
from wavepatch.prior.checkpoint import load_prior, save_shape_prior
from wavepatch.prior.shape_wavelet import (
    DETAIL_BANDS,
    ShapeCodeConfig,
    ShapePrior,
    ShapePriorConfig,
    code_stats,
    encode,
)
from wavepatch.prior.train import InMemoryImages, resolve_device, train
from wavepatch.prior.train_config import TrainConfig
from wavepatch.prior.train_state import load_train_state, read_state_file, save_train_state
from wavepatch.prior.unet import UNet, UNetConfig
from wavepatch.types import from_known_fields

Tensor = torch.Tensor


@dataclass
class ShapeTrainConfig:
    """data: .npz/.npy masks or a mesh folder; split 'train' is used (val for the detail predictor's held-out loss).
    space: 'wavelet' (coarse generator + detail predictor) or 'voxel' (generator on the whole TSDF).
    truncation (voxels; None: 0.1 of the grid side), wavelet, levels, grid (meshes only): the code.
    base_channels, channel_mult, num_blocks, attention: both UNets. batch, steps, lr: generator (its learning-rate
    warm-up is 200 steps or steps / 30, whichever is fewer);
    detail_batch, detail_steps, detail_lr: detail predictor. minutes: wall-time bound of one call (resume after)."""

    data: str = ""
    out: str = "runs/shape"
    space: str = "wavelet"
    truncation: float | None = None
    wavelet: str = "bior6.8"
    levels: int = 2
    grid: int | None = None
    base_channels: int = 16
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_blocks: int = 1
    attention: bool = True
    batch: int = 16
    steps: int = 6000
    lr: float = 2e-4
    detail_batch: int = 16
    detail_steps: int = 1500
    detail_lr: float = 5e-4
    ema_halflife: float = 250.0
    checkpoint_every: int = 250
    minutes: float | None = None
    seed: int = 0
    device: str = "auto"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        for name in ("steps", "detail_steps", "batch", "detail_batch", "checkpoint_every", "base_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.detail_lr > 0):
            raise ValueError("learning rates must be positive")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"minutes must be positive, got {self.minutes}")

    def code(self, grid: int) -> ShapeCodeConfig:
        truncation = self.truncation if self.truncation is not None else 0.1 * grid
        return ShapeCodeConfig(grid=grid, truncation=truncation, space=self.space, wavelet=self.wavelet,
                               levels=self.levels)

    def unet(self, in_channels: int, out_channels: int) -> UNetConfig:
        return UNetConfig(in_channels=in_channels, out_channels=out_channels, base_channels=self.base_channels,
                          channel_mult=self.channel_mult, num_blocks=self.num_blocks, attention=self.attention,
                          dims=3)

    @classmethod
    def from_dict(cls, d: dict) -> ShapeTrainConfig:
        return from_known_fields(cls, d, "shape training options")


_FROZEN = ("data", "space", "truncation", "wavelet", "levels", "grid", "base_channels", "channel_mult", "num_blocks",
           "attention")


def _check_resume(out: Path, cfg: ShapeTrainConfig, resume: bool) -> None:
    path = out / "shape_train_config.json"
    if not resume:
        if path.exists():
            raise FileExistsError(f"{out} already holds a shape training run; pass --resume or choose another --out")
        return
    if not path.exists():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist")
    try:
        saved = ShapeTrainConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"cannot resume: {path} is corrupt ({exc})") from None
    changed = [k for k in _FROZEN if getattr(saved, k) != getattr(cfg, k)]
    if changed:
        raise ValueError(f"cannot resume: the run in {out} was trained with different {', '.join(changed)}")


def training_codes(cfg: ShapeTrainConfig, split: str = "train", progress: bool = True) -> tuple[Tensor,
                                                                                             ShapeCodeConfig]:
    """(codes (N, C, s, s, s) in TSDF units, the code config) of a split of ``cfg.data``."""
    tsdf = load_tsdfs(cfg.data, split, cfg.truncation, cfg.grid, progress)  # None: 0.1 of the grid side
    code = cfg.code(tsdf.shape[1])
    return encode(torch.from_numpy(tsdf)[:, None], code), code


CODE_CACHE = "codes_train.safetensors"  # wavelet space: the training codes in float16 (78 MB for 1,188 shapes)


def cached_training_codes(cfg: ShapeTrainConfig, out: Path, progress: bool = True) -> tuple[Tensor, ShapeCodeConfig]:
    """``training_codes`` of the train split, computed once per run: wavelet-space codes are rounded to float16 and
    kept in ``out`` so a resumed run skips the signed distances (minutes for a thousand shapes); every call, the
    first included, trains on the rounded codes (relative error 5e-4, far below the diffusion noise)."""
    from safetensors.torch import load_file, save_file

    path = out / CODE_CACHE
    if cfg.space == "wavelet" and path.exists():
        tensors = load_file(str(path))
        code = ShapeCodeConfig(**json.loads((out / "code_config.json").read_text()))
        return tensors["codes"].float(), code
    codes, code = training_codes(cfg, "train", progress)
    if cfg.space == "wavelet":
        codes = codes.half()
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "code_config.json", (json.dumps(asdict(code)) + "\n").encode())
        with atomic_path(path) as tmp:
            save_file({"codes": codes.contiguous()}, str(tmp))
        codes = codes.float()
    return codes, code


def train_shape_prior(cfg: ShapeTrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train a shape prior as ``cfg`` says (see the module docstring); returns out/prior.safetensors."""
    t0 = time.time()
    out = Path(cfg.out)
    _check_resume(out, cfg, resume)
    codes, code = cached_training_codes(cfg, out, progress)
    mean, std = code_stats(codes)
    side = code.side
    gen_cfg = TrainConfig(data=[cfg.data], out=str(out / "generator"), prior="whole", dims=3, size=side, window=None,
                          modality="other", base_channels=cfg.base_channels, channel_mult=cfg.channel_mult,
                          num_blocks=cfg.num_blocks, attention=cfg.attention, sigma_data=1.0, batch=cfg.batch,
                          steps=cfg.steps, lr=cfg.lr, warmup=min(200, max(1, cfg.steps // 30)),
                          ema_halflife=cfg.ema_halflife, flip=False, seed=cfg.seed,
                          checkpoint_every=cfg.checkpoint_every, device=cfg.device, minutes=cfg.minutes)
    detail_unet = cfg.unet(1, DETAIL_BANDS) if code.space == "wavelet" else None
    prior_cfg = ShapePriorConfig(code=code, generator=gen_cfg.prior_config(), detail=detail_unet, mean=mean, std=std)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "shape_train_config.json", (json.dumps(asdict(cfg), indent=2) + "\n").encode())
    norm = prior_cfg.normalise(codes)
    gen_state = out / "generator" / "train_state.safetensors"
    if read_train_progress(gen_state) < cfg.steps:
        train(gen_cfg, resume=gen_state.exists(), progress=progress, dataset=InMemoryImages(norm[:, :1].contiguous()))
    info: dict = {"train_shapes": int(codes.shape[0]), "generator_steps": read_train_progress(gen_state)}
    if detail_unet is not None and read_train_progress(gen_state) >= cfg.steps:
        remaining = None if cfg.minutes is None else cfg.minutes - (time.time() - t0) / 60
        if remaining is None or remaining > 0:
            val = _val_codes(cfg, prior_cfg, progress)
            info.update(train_detail(norm, val, detail_unet, cfg, out / "detail", remaining, progress))
    return pack_shape_prior(out, prior_cfg, cfg, info)


def _val_codes(cfg: ShapeTrainConfig, prior_cfg: ShapePriorConfig, progress: bool) -> Tensor | None:
    """Normalised codes of the val split (None when the data has none: a mesh folder or a single array)."""
    if Path(cfg.data).is_dir():
        return None
    try:
        tsdf = load_tsdfs(cfg.data, "val", prior_cfg.code.truncation, None, progress)
    except ShapeFileError:
        return None
    return prior_cfg.normalise(encode(torch.from_numpy(tsdf)[:, None], prior_cfg.code))


def train_detail(codes: Tensor, val: Tensor | None, unet: UNetConfig, cfg: ShapeTrainConfig, out: Path,
                 minutes: float | None, progress: bool) -> dict:
    """Train (or resume) the detail predictor on normalised codes (N, 8, s, s, s); -> info (losses, steps)."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed + 1)
    model, ema = UNet(unet).to(device), UNet(unet).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.detail_lr)
    state = out / "train_state.safetensors"
    start = load_train_state(state, model, ema, opt) if state.exists() else 0
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + start)
    decay = 0.5 ** (1.0 / cfg.ema_halflife)
    t0, loss = time.time(), torch.tensor(float("nan"))
    bar = tqdm(range(start, cfg.detail_steps), initial=start, total=cfg.detail_steps, disable=not progress,
               desc="train detail predictor")
    done = start
    for step in bar:
        idx = torch.randint(0, codes.shape[0], (cfg.detail_batch,), generator=gen)
        batch = codes[idx].to(device)
        pred = model(batch[:, :1], batch.new_zeros(batch.shape[0]))
        loss = torch.nn.functional.mse_loss(pred, batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        done = step + 1
        bar.set_postfix(loss=f"{loss.item():.4f}")
        late = minutes is not None and time.time() - t0 > minutes * 60
        if done % cfg.checkpoint_every == 0 or done == cfg.detail_steps or late:
            save_train_state(state, model, ema, opt, done, cfg)
            if late:
                break
    bar.close()
    before = 0.0
    if (out / "detail_info.json").exists():
        before = float(json.loads((out / "detail_info.json").read_text()).get("detail_train_seconds", 0.0))
    info = {"detail_steps": done, "detail_train_loss": float(loss.item()),
            "detail_train_seconds": round(before + time.time() - t0, 2)}
    if val is not None:
        with torch.no_grad():
            v = val.to(device)
            info["detail_val_loss"] = float(torch.nn.functional.mse_loss(ema(v[:, :1], v.new_zeros(len(v))),
                                                                         v[:, 1:]).item())
    atomic_write_bytes(out / "detail_info.json", (json.dumps(info, indent=2) + "\n").encode())
    return info


def pack_shape_prior(out: Path, prior_cfg: ShapePriorConfig, cfg: ShapeTrainConfig, info: dict) -> Path:
    """Write out/prior.safetensors from the stages' EMA weights (the detail network only if it has trained)."""
    generator, _ = load_prior(out / "generator" / "prior.safetensors", expect_kind="whole")
    model = ShapePrior(prior_cfg)
    model.generator.load_state_dict(generator.state_dict())
    detail_state = out / "detail" / "train_state.safetensors"
    if prior_cfg.detail is not None:
        if not detail_state.exists():
            raise RuntimeError(f"the generator has not finished (steps {info.get('generator_steps')} of "
                               f"{cfg.steps}); run again with --resume")
        _, tensors = read_state_file(detail_state)
        model.detail.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    gen_info = json.loads((out / "generator" / "prior.json").read_text()).get("info", {})
    info = {**info, "generator_train_seconds": gen_info.get("train_seconds"),
            "params": sum(p.numel() for p in model.parameters()), "shape_train_config": asdict(cfg)}
    return save_shape_prior(out / "prior.safetensors", model, prior_cfg, info)


def read_train_progress(state: Path) -> int:
    """Steps done by the training run whose state file is ``state`` (0 when there is none yet)."""
    return int(read_state_file(state)[0]["step"]) if state.exists() else 0


def fit_pca_model(tsdf: Tensor, variance: float = 0.95) -> tuple[Tensor, Tensor, Tensor]:
    """PCA shape model of training TSDFs (N, ...): (mean (V,), basis (K, V) orthonormal rows, std (K,)).

    K is the smallest number of components explaining ``variance`` of the training variance. Computed from the
    N x N Gram matrix (N << V voxels), in float64."""
    if not 0 < variance <= 1:
        raise ValueError(f"variance must be in (0, 1], got {variance}")
    x = tsdf.reshape(tsdf.shape[0], -1).double()
    mean = x.mean(0)
    x = x - mean
    evals, evecs = torch.linalg.eigh(x @ x.T)
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    k = int((torch.cumsum(evals, 0) / evals.sum() < variance).sum()) + 1
    basis = (evecs[:, :k].T @ x) / evals[:k].sqrt()[:, None]
    return mean.float(), basis.float(), (evals[:k] / max(1, x.shape[0] - 1)).sqrt().float()


def sample_pca_model(mean: Tensor, basis: Tensor, std: Tensor, n: int, seed: int = 0) -> Tensor:
    """(n, V) draws mean + sum_k z_k std_k basis_k with z ~ N(0, I) (the Gaussian shape model)."""
    z = torch.randn(n, std.shape[0], generator=torch.Generator().manual_seed(seed))
    return mean + (z * std) @ basis
