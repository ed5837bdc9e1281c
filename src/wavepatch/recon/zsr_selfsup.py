"""Self-supervised z super-resolution of a thick-slice volume (after SMORE: Zhao, Dewey, Carass et al., "SMORE:
a self-supervised anti-aliasing and super-resolution algorithm for MRI using deep learning", IEEE TMI 2021).

A thick-slice acquisition (:class:`~wavepatch.physics.volume_ops.ThickSliceZ`) keeps the full in-plane
resolution of every thick slice; only z is coarse. So the measurement itself holds training pairs: degrade a
thick slice *in-plane*, along one axis, exactly as z was degraded (the mean of F consecutive samples, then the
cubic-z baseline's interpolation back), and learn to undo it. The network, trained on this one volume and
nothing else, is then applied to the coronal (z, x) and sagittal (z, y) planes of the cubic-z baseline, where z
is the degraded axis; the two estimates are averaged and, for noiseless data, projected exactly onto the
measured thick slices (each group of F thin slices shifted to its thick slice's mean).

Spacing: the z samples are ``1 / z_weight`` in-plane pixels apart (``z_weight`` = in-plane pixel / slice
spacing). Before degrading, each in-plane training image is resampled along the degraded axis to the slice
spacing, so the network learns the blur of an F-slice box at the scale it meets along z (SMORE does the
same). Needs no training data, no prior and no ground truth: it generalises to any scan by construction, and it
is as good as what the in-plane anatomy says about the through-plane one (isotropic structure).

Shapes: ``thick`` (S', H, W), volumes (S, 1, H, W) with S = F S', unit intensity scale.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from wavepatch.physics.volume_ops import box_mean_along, cubic_along

Tensor = torch.Tensor


class ResidualCNN(nn.Module):
    """``body`` (N, 1, h, w) -> (N, 1, h, w) as a correction: forward(x) = x + body(x)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def residual_cnn(depth: int, width: int) -> ResidualCNN:
    """A plain residual CNN (VDSR-style): ``depth`` 3 x 3 convolutions of ``width`` channels, the last one
    predicting the correction that is added to the input, zero at the start (the network starts as the identity,
    i.e. as cubic interpolation); (N, 1, h, w) -> (N, 1, h, w). Leaky ReLU: with plain ReLU the layer before the
    zero-initialised output died within 30 Adam steps on one seed of three (every unit negative for good), and
    the network never left the identity."""
    layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.LeakyReLU(0.1)]
    for _ in range(depth - 2):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.1)]
    layers.append(nn.Conv2d(width, 1, 3, padding=1))
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return ResidualCNN(nn.Sequential(*layers))


def degrade_rows(images: Tensor, factor: int) -> Tensor:
    """The thick-slice degradation along the rows (dim -2) of ``images`` (..., h, w), h a multiple of
    ``factor``: the box mean of ``factor`` rows, then cubic interpolation back to h rows (the cubic-z
    baseline's)."""
    return cubic_along(box_mean_along(images, factor, -2), factor, -2)


def training_images(thick: Tensor, z_weight: float) -> list[Tensor]:
    """The thick slices (S', H, W) in both in-plane orientations, each resampled along its rows (the axis that
    will be degraded) from the in-plane pixel to the slice spacing: [(S', H', W), (S', W', H)], H' = round(H
    z_weight)."""
    out = []
    for img in (thick, thick.transpose(1, 2)):
        rows = max(1, round(img.shape[1] * z_weight))
        if rows != img.shape[1]:
            img = F.interpolate(img[:, None], size=(rows, img.shape[2]), mode="bicubic", align_corners=False,
                                antialias=rows < img.shape[1])[:, 0]
        out.append(img.contiguous())
    return out


def sample_pairs(images: list[Tensor], factor: int, patch: int, batch: int,
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``batch`` random (degraded, clean) patch pairs (batch, 1, p, q) from ``images`` (either orientation),
    p <= ``patch`` a multiple of ``factor``, q <= ``patch``; random flips along both axes."""
    shapes = [img.shape for img in images]
    p = min(patch, min(s[1] for s in shapes)) // factor * factor
    q = min(patch, min(s[2] for s in shapes))
    if p < 2 * factor:
        raise ValueError(f"the thick slices are too small to train on ({min(s[1] for s in shapes)} rows at the "
                         f"slice spacing; need at least {2 * factor})")
    crops = []
    for _ in range(batch):
        img = images[int(torch.randint(len(images), (1,), generator=generator))]
        k = int(torch.randint(img.shape[0], (1,), generator=generator))
        r = int(torch.randint(img.shape[1] - p + 1, (1,), generator=generator))
        c = int(torch.randint(img.shape[2] - q + 1, (1,), generator=generator))
        crop = img[k, r:r + p, c:c + q]
        flips = [d for d, f in zip((0, 1), torch.rand(2, generator=generator), strict=True) if f < 0.5]
        crops.append(crop.flip(flips) if flips else crop)
    clean = torch.stack(crops)[:, None]
    return degrade_rows(clean, factor), clean


def train_zsr_network(thick: Tensor, factor: int, z_weight: float = 1.0, *, steps: int = 1000, patch: int = 48,
                      batch: int = 16, depth: int = 8, width: int = 64, lr: float = 1e-3, seed: int = 0,
                      device: str | torch.device = "cpu", progress: bool = False) -> tuple[nn.Module, dict]:
    """Train the network on the thick slices (S', H, W) alone (module docstring): L1 loss, Adam, cosine decay
    of ``lr`` over ``steps``, on ``device``; the weights and the patches are drawn (on the CPU) from ``seed``.
    Returns (the network, a report): the training loss of the first and of the last ``min(50, steps)`` steps
    (unit scale; the untrained network returns its degraded input, so ``l1_first`` is about the input's own
    error, and ``l1_last`` near it means the network learned little)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = residual_cnn(depth, width).to(device)
    images = training_images(thick.detach().float().cpu(), z_weight)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    bar = tqdm(range(steps), desc="zsr self-supervised training", disable=not progress, leave=False)
    losses = []
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        degraded, clean = (t.to(device) for t in sample_pairs(images, factor, patch, batch, generator))
        loss = (net(degraded) - clean).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(l1=f"{losses[-1]:.4f}")
    n = min(50, steps)
    return net.eval(), {"objective": "L1 of in-plane degraded patches of the thick slices, unit scale",
                        "steps": steps, "l1_first": sum(losses[:n]) / n, "l1_last": sum(losses[-n:]) / n}


@torch.inference_mode()
def apply_through_plane(net: nn.Module, volume: Tensor, chunk: int = 16) -> Tensor:
    """The network on the coronal (z, x) and sagittal (z, y) planes of ``volume`` (S, H, W), z as the rows (the
    degraded axis); the mean of the two estimates, (S, H, W), on ``volume``'s device (the network runs on its
    own, ``chunk`` planes at a time)."""
    device = next(net.parameters()).device

    def planes(v: Tensor) -> Tensor:  # (N, S, M) -> the network's output, plane by plane
        return torch.cat([net(v[i:i + chunk, None].to(device))[:, 0].to(v.device)
                          for i in range(0, v.shape[0], chunk)])

    coronal = planes(volume.permute(1, 0, 2).contiguous()).permute(1, 0, 2)
    sagittal = planes(volume.permute(2, 0, 1).contiguous()).permute(1, 2, 0)
    return 0.5 * (coronal + sagittal)


def zsr_selfsup(thick: Tensor, factor: int, z_weight: float = 1.0, *, start: Tensor | None = None,
                progress: bool = False, **train_kwargs) -> tuple[Tensor, dict]:  # train_zsr_network's kwargs
    """z super-resolution of thick slices (S', H, W) by ``factor``: the network trained on them
    (:func:`train_zsr_network`) applied through the plane to ``start`` (S' factor, H, W), the cubic-z
    interpolation of ``thick`` (computed when None: pass the task's baseline to reuse it). Returns
    ((S' factor, H, W) before any data projection, the training report)."""
    net, report = train_zsr_network(thick, factor, z_weight, progress=progress, **train_kwargs)
    start = cubic_along(thick.float(), factor, 0) if start is None else start.float()
    return apply_through_plane(net, start).to(thick.dtype), report
