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

import functools
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from wavepatch.io.atomic import atomic_write_bytes
from wavepatch.io.dataset import SliceDataset, VolumeDataset, random_patches
from wavepatch.prior.blur import BlurDiffusion, blur_loss
from wavepatch.prior.checkpoint import (
    CheckpointError,
    check_state_matches,
    read_prior_metadata,
    read_weights,
    save_prior,
    tensor_shapes,
)
from wavepatch.prior.model import PriorConfig, build_prior
from wavepatch.prior.noise_level import NoiseLevelClassifier, noise_level_loss
from wavepatch.prior.noisy_data import noise_report, noise_sampler, noisy_training_set
from wavepatch.prior.patches import position_channels
from wavepatch.prior.precond import edm_loss
from wavepatch.prior.pyramidal import pyramid_levels
from wavepatch.prior.train_config import TrainConfig, check_resume_config, read_saved_config
from wavepatch.prior.train_state import load_train_state, read_log, save_train_state, write_log_and_plot
from wavepatch.prior.wavelet import WaveletPrior, WaveletPriorConfig, wsgm_loss
from wavepatch.shapes import per_axis

Tensor = torch.Tensor

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
        saved = read_saved_config(out)
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
    rows = read_log(out, start) if rank == 0 else []
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
    write_log_and_plot(out, rows)
