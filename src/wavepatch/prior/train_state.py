"""What a prior training run keeps on disk besides the prior: the training state (raw and EMA weights, optimizer
moments, step; safetensors, never pickle) for ``--resume``, and the loss log with its curve."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from wavepatch.io.atomic import atomic_path, atomic_write_bytes
from wavepatch.prior.checkpoint import CheckpointError, check_state_matches
from wavepatch.prior.train_config import TrainConfig

Tensor = torch.Tensor


def save_train_state(path: Path, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
                     cfg: TrainConfig) -> None:
    """Write the weights, EMA weights, optimizer moments, ``step`` and ``cfg`` to ``path`` (atomic)."""
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


def _all_params(opt: torch.optim.Optimizer) -> list:
    return [p for group in opt.param_groups for p in group["params"]]


def write_log_and_plot(out: Path, rows: list[list]) -> None:
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


def read_log(out: Path, upto: int) -> list[list]:
    path = out / "train_log.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [[int(r[0]), float(r[1]), float(r[2]), float(r[3])] for r in rows if int(r[0]) <= upto]
