"""Training of the low-dose CT translator (:mod:`wavepatch.prior.ldct`) on unit-scale images.

Objectives (``LDCTConfig.objective``):
- 'metric' (Jung et al. 2022): LSGAN (weight ``gan_weight``) + identity L1 on normal-dose images (G(n) = n,
  ``identity_weight``) + the patch-wise metric loss (``metric_weight``, temperature ``temperature``,
  ``patches`` locations per feature layer). Unpaired: low-dose and normal-dose crops come from different slices.
- 'gan': the same with ``metric_weight = 0`` (the ablation the issue asks for).
- 'supervised': mean squared error on pairs (low-dose FBP, normal-dose image of the same slice): the upper reference.

Random ``crop`` x ``crop`` crops of whole images; the wavelet low band is computed once on the whole images (so a
crop's split equals the whole image's split there). Adam (lr 2e-4, betas 0.5 / 0.999 as the official code), the
rate decays linearly to 0 over the second half of ``steps``; the translator used afterwards is the exponential
moving average of its weights (half-life ``ema_halflife`` steps). The run folder holds ``ldct.safetensors`` (+ .json:
translator, discriminator and head with the config), ``train_state.safetensors`` (both optimizers' moments, for
``resume``), ``train_config.json`` and ``log.csv``.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from wavepatch.io.atomic import atomic_path, atomic_write_bytes
from wavepatch.prior.checkpoint import check_state_matches, save_prior
from wavepatch.prior.ldct import LDCTConfig, LDCTModel
from wavepatch.prior.ldct_losses import gather, lsgan_d_loss, lsgan_g_loss, patch_metric_loss, sample_locations
from wavepatch.prior.train_state import load_optimizer_tensors, optimizer_tensors, read_state_file

Tensor = torch.Tensor
CHECKPOINT = "ldct.safetensors"


@dataclass
class LDCTTrainConfig:
    """Optimisation settings of one run (saved as train_config.json; ``resume`` needs the same ones)."""

    steps: int = 2500
    batch: int = 8
    crop: int = 64
    lr: float = 2e-4
    gan_weight: float = 1.0
    identity_weight: float = 5.0
    metric_weight: float = 0.1
    temperature: float = 0.15
    patches: int = 128
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 25
    ema_halflife: float = 100.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "crop", "patches", "checkpoint_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.crop % 4:
            raise ValueError(f"--crop must be a multiple of 4, got {self.crop}")
        for name in ("lr", "temperature", "ema_halflife"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("gan_weight", "identity_weight", "metric_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict) -> LDCTTrainConfig:
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})


def _crops(images: list[Tensor], index: Tensor, crop: int, gen: torch.Generator) -> list[Tensor]:
    """The same random crop windows (one per index) cut from each of ``images`` (S, 1, N, N)."""
    n_h, n_w = images[0].shape[-2:]
    tops = torch.randint(0, n_h - crop + 1, (len(index),), generator=gen).tolist()
    lefts = torch.randint(0, n_w - crop + 1, (len(index),), generator=gen).tolist()
    return [torch.stack([img[i, :, t:t + crop, l:l + crop] for i, t, l in zip(index.tolist(), tops, lefts,
                                                                              strict=True)])
            for img in images]


def _lr_factor(step: int, steps: int) -> float:
    half = steps // 2
    return 1.0 if step < half else max(0.0, 1.0 - (step - half) / max(steps - half, 1))


def generator_step(model: LDCTModel, low: tuple[Tensor, Tensor], normal: tuple[Tensor, Tensor],
                   cfg: LDCTTrainConfig, gen: torch.Generator) -> tuple[Tensor, dict, Tensor]:
    """Generator loss of the unpaired objective for crops low = (L, H) of low-dose and normal = (L, H) of
    normal-dose images; -> (loss, parts, fake image)."""
    g = model.translator
    fake_high = g.translate_band(low[1])
    fake = low[0] + fake_high
    parts = {"gan": lsgan_g_loss(model.discriminator(fake))}
    loss = cfg.gan_weight * parts["gan"]
    if cfg.identity_weight > 0:
        same = normal[0] + g.translate_band(normal[1])
        parts["identity"] = (same - (normal[0] + normal[1])).abs().mean()
        loss = loss + cfg.identity_weight * parts["identity"]
    if cfg.metric_weight > 0:
        feats_in, feats_out = g.encode(low[1]), g.encode(fake_high)
        idx = [sample_locations(f, cfg.patches, gen) for f in feats_in]
        p_in = model.head([gather(f, i) for f, i in zip(feats_in, idx, strict=True)])
        p_out = model.head([gather(f, i) for f, i in zip(feats_out, idx, strict=True)])
        metric = sum(patch_metric_loss(a, b, cfg.temperature) for a, b in zip(p_in, p_out, strict=True))
        parts["metric"] = metric / len(feats_in)
        loss = loss + cfg.metric_weight * parts["metric"]
    return loss, parts, fake


def train_ldct(low: Tensor, normal: Tensor, model_cfg: LDCTConfig, cfg: LDCTTrainConfig, out: str | Path,
               resume: bool = False, progress: bool = True, minutes: float | None = None,
               extra: dict | None = None) -> Path:
    """Train on low-dose images ``low`` (S, 1, N, N) and normal-dose images ``normal`` (S', 1, N, N), unit
    scale; for the 'supervised' objective ``normal[i]`` is the pair of ``low[i]``. ``minutes``: stop (with a
    checkpoint) after this much wall time. Returns the checkpoint path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paired = model_cfg.objective == "supervised"
    if paired and low.shape != normal.shape:
        raise ValueError(f"supervised training needs pairs: {tuple(low.shape)} vs {tuple(normal.shape)}")
    if min(low.shape[-1], low.shape[-2], normal.shape[-1], normal.shape[-2]) < cfg.crop:
        raise ValueError(f"--crop {cfg.crop} is larger than the training images")
    if model_cfg.objective == "gan":
        cfg.metric_weight = 0.0
    torch.manual_seed(cfg.seed)
    model = LDCTModel(model_cfg)
    opt_g = torch.optim.Adam([*model.translator.parameters(), *model.head.parameters()], lr=cfg.lr,
                             betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    state_path, log_path = out / "train_state.safetensors", out / "log.csv"
    start = 0
    if resume and state_path.exists():
        saved = json.loads((out / "train_config.json").read_text())
        if LDCTConfig.from_dict(saved.get("model", {})) != model_cfg:
            raise ValueError(f"cannot resume {out}: it was trained with another architecture or objective")
        start = _load_state(state_path, model, opt_g, opt_d)
    elif any(p.exists() for p in (state_path, out / CHECKPOINT)):
        raise ValueError(f"{out} already holds an LDCT run; use --resume to continue it or choose another --out")
    atomic_write_bytes(out / "train_config.json", (json.dumps({"train": asdict(cfg), "model": model_cfg.to_dict()},
                                                              indent=2) + "\n").encode())
    with torch.no_grad():
        low_split, normal_split = model.translator.split(low), model.translator.split(normal)
    rows = _read_log(log_path, start) if resume else []
    t0 = time.time()
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc=f"ldct-{model_cfg.objective}")
    for step in range(start, cfg.steps):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _lr_factor(step, cfg.steps)
        i_low = torch.randint(0, low.shape[0], (cfg.batch,), generator=gen)
        i_norm = i_low if paired else torch.randint(0, normal.shape[0], (cfg.batch,), generator=gen)
        if paired:
            l_low, h_low, target = _crops([*low_split, normal], i_low, cfg.crop, gen)
            pred = l_low + model.translator.translate_band(h_low)
            loss = (pred - target).pow(2).mean()
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            parts = {"mse": loss.detach()}
        else:
            l_low, h_low = _crops(list(low_split), i_low, cfg.crop, gen)
            l_nd, h_nd = _crops(list(normal_split), i_norm, cfg.crop, gen)
            loss, parts, fake = generator_step(model, (l_low, h_low), (l_nd, h_nd), cfg, gen)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            d_loss = lsgan_d_loss(model.discriminator(l_nd + h_nd), model.discriminator(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            parts["d"] = d_loss.detach()
        model.update_ema(cfg.ema_halflife)
        bar.update(1)
        if (step + 1) % cfg.log_every == 0:
            values = [float(parts[k].detach()) if k in parts else 0.0 for k in LOG_HEADER[2:]]
            rows.append([step + 1, round(time.time() - t0, 1), *(round(v, 6) for v in values)])
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        done = step + 1 == cfg.steps or (minutes is not None and time.time() - t0 > 60 * minutes)
        if (step + 1) % cfg.checkpoint_every == 0 or done:
            _checkpoint(out, model, opt_g, opt_d, step + 1, model_cfg, cfg, rows, extra)
        if done:
            break
    bar.close()  # a finished run resumed does nothing: its checkpoint is already written
    return out / CHECKPOINT


LOG_HEADER = ["step", "seconds", "mse", "gan", "identity", "metric", "d"]


def _read_log(path: Path, upto: int) -> list[list]:
    if not path.exists():
        return []
    with path.open() as f:
        return [[float(v) for v in row] for row in list(csv.reader(f))[1:] if row and float(row[0]) <= upto]


def _checkpoint(out: Path, model: LDCTModel, opt_g, opt_d, step: int, model_cfg: LDCTConfig,
                cfg: LDCTTrainConfig, rows: list[list], extra: dict | None) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({**optimizer_tensors(opt_g, "opt_g"), **optimizer_tensors(opt_d, "opt_d")})
    with atomic_path(out / "train_state.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"step": str(step)})
    info = {"step": step, "objective": model_cfg.objective, "train": asdict(cfg), **(extra or {})}
    if rows:
        info["last_log"] = dict(zip(LOG_HEADER, rows[-1], strict=True))
    save_prior(out / CHECKPOINT, model, model_cfg, info)
    text = ",".join(LOG_HEADER) + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows)
    atomic_write_bytes(out / "log.csv", text.encode())


def _load_state(path: Path, model: LDCTModel, opt_g, opt_d) -> int:
    meta, tensors = read_state_file(path)
    part = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    check_state_matches(model.state_dict(), part, str(path))
    model.load_state_dict(part)
    load_optimizer_tensors(opt_g, tensors, "opt_g")
    load_optimizer_tensors(opt_d, tensors, "opt_d")
    return int(meta["step"])
