"""Scan-specific self-supervised 3-D Cartesian MRI reconstruction (after ZS-SSL: Yaman, Hosseini and Akçakaya,
"Zero-shot self-supervised learning for MRI reconstruction", ICLR 2022; its data split from SSDU, Yaman et al.,
MRM 2020).

``mri3d`` undersamples the two phase-encode axes (z, y) with one mask and samples the readout x fully. An inverse
DFT along x turns the volume's k-space into W independent 2-D problems, one per readout position: the (z, y)
plane of the volume at that x, measured on the same (z, y) mask. These W planes are the training set. A physics-
guided network (an unrolled variable splitting: a residual CNN ``R`` alternating with the exact data-consistency
step, weights shared over the unrolls) is trained on the scan's own data alone: the sampled points Ω are split at
random, every step, into Θ (the network's input and its data-consistency) and Λ (the loss: the network's k-space
on Λ against the measured Λ). A fixed part Γ of Ω is held out of training altogether; its error, with the network
run on Ω \\ Γ, picks the weights to keep (ZS-SSL's early stopping). The kept network is finally run on all of Ω.

The network starts from the zero-filled image, or from a given reconstruction of the same points (``start``; the
``zs-ssl`` method's default is 3-D ADMM-TV): it then learns a correction of that reconstruction which predicts
points the reconstruction did not see. A start must be computed from Θ alone, so with one the splits are a fixed
bank (ZS-SSL's own scheme) rather than a fresh draw every step.

Real images: the volume is real, so each plane's k-space is Hermitian. The data-consistency step solves the
real-constrained least squares exactly (:func:`real_dc`), and the splits keep every point together with its
mirror point (frequency (-z, -y)): a point of Λ whose mirror stayed in Θ would be given away by the real
constraint. The fully sampled centre block stays in Θ (SSDU keeps the calibration region in Θ).

Shapes: k-space ``y`` (1, 1, S, H, W) complex, masks (S, H) bool, planes (N, S, H) real, unit intensity scale.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from wavepatch.physics.mri import centre_block, mirror_index
from wavepatch.recon.zsr_selfsup import residual_cnn

Tensor = torch.Tensor
_PLANE = (-2, -1)


def plane_fft(p: Tensor) -> Tensor:
    """Centred unitary 2-D DFT over the last two axes (the operator's convention)."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(p, dim=_PLANE), norm="ortho"), dim=_PLANE)


def plane_ifft(k: Tensor) -> Tensor:
    """Inverse of :func:`plane_fft`."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=_PLANE), norm="ortho"), dim=_PLANE)


def readout_planes(y: Tensor) -> Tensor:
    """The mri3d k-space (1, 1, S, H, W) as W plane measurements (W, S, H): the centred unitary inverse DFT along
    the readout (W). Plane w is the (z, y) k-space of the volume's plane x = w."""
    k = y[0, 0]
    k = torch.fft.fftshift(torch.fft.ifft(torch.fft.ifftshift(k, dim=-1), dim=-1, norm="ortho"), dim=-1)
    return k.permute(2, 0, 1).contiguous()


def mirrored(k: Tensor) -> Tensor:
    """k(-f) for every centred frequency f of the last two axes."""
    s, h = k.shape[-2:]
    return k[..., mirror_index(s).to(k.device), :][..., mirror_index(h).to(k.device)]


def real_dc(d: Tensor, mask: Tensor, z: Tensor, mu: Tensor | float) -> Tensor:
    """argmin over real p of ||M (F p) - d||^2 + mu ||p - z||^2, in closed form: with D = (M + M(-f)) / 2 and
    the Hermitian part h(v) = (v + conj v(-f)) / 2, F p = (h(d) + mu F z) / (D + mu). d (N, S, H) complex, which
    must be zero off the mask (h(d) / mu would enter there), mask (S, H) bool or float, z (N, S, H) real, mu > 0;
    returns (N, S, H) real."""
    dbar, hd = _hermitian_parts(d, mask)
    return plane_ifft((hd + mu * plane_fft(z)) / (dbar + mu)).real


def _hermitian_parts(d: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(D, h(d)) of :func:`real_dc`: the mask's mean with its mirror (real) and the data's Hermitian part."""
    m = mask.to(d.real.dtype)
    return 0.5 * (m + mirrored(m)), 0.5 * (d + mirrored(d).conj())


def zero_filled(d: Tensor, mask: Tensor) -> Tensor:
    """The real-image pseudo-inverse of plane data d (N, S, H) on ``mask`` (S, H): F p = h(d) / D where D > 0."""
    dbar, hd = _hermitian_parts(d, mask)
    return plane_ifft(torch.where(dbar > 0, hd / dbar.clamp_min(1e-12), 0)).real


class UnrolledNet(nn.Module):
    """``unrolls`` alternations of the residual CNN ``R`` (shared weights) and :func:`real_dc` with a learned
    weight mu (log-parametrised), from ``start`` (planes (N, S, H); default the zero-filled image); plane data
    (N, S, H) on mask (S, H) -> planes (N, S, H)."""

    def __init__(self, unrolls: int, depth: int, width: int, mu: float = 0.05) -> None:
        super().__init__()
        self.unrolls = int(unrolls)
        self.cnn = residual_cnn(depth, width)
        self.log_mu = nn.Parameter(torch.tensor(math.log(mu)))

    def forward(self, d: Tensor, mask: Tensor, start: Tensor | None = None) -> Tensor:
        x = zero_filled(d, mask) if start is None else start
        mu = self.log_mu.exp()
        for _ in range(self.unrolls):
            x = real_dc(d, mask, self.cnn(x[:, None])[:, 0], mu)
        return x


def mirror_keys(mask: Tensor) -> Tensor:
    """One key per point of an (S, H) grid, equal for a point and its mirror point: min(flat index, mirror's)."""
    s, h = mask.shape
    flat = torch.arange(s * h).reshape(s, h)
    return torch.minimum(flat, mirrored(flat))


def split_mask(mask: Tensor, fraction: float, generator: torch.Generator,
               protected: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Split the sampled points of ``mask`` (S, H) into (kept, held): each mirror group (:func:`mirror_keys`)
    outside ``protected`` goes to ``held`` with probability ``fraction``; bool (S, H) each, disjoint, union mask."""
    keys = mirror_keys(mask)
    draw = torch.rand(mask.numel(), generator=generator).reshape(mask.shape)
    held = mask & (draw.flatten()[keys] < fraction)
    if protected is not None:
        held &= ~(protected | mirrored(protected))
    return mask & ~held, held


def _kspace_loss(p: Tensor, d: Tensor, held: Tensor) -> Tensor:
    """Normalised L1 + L2 error of the planes' k-space against d on ``held`` (SSDU's loss), over the batch."""
    r = (plane_fft(p) - d) * held
    ref = d * held
    return r.abs().pow(2).sum().sqrt() / ref.abs().pow(2).sum().sqrt().clamp_min(1e-12) + \
        r.abs().sum() / ref.abs().sum().clamp_min(1e-12)


def _run(net: nn.Module, d: Tensor, mask: Tensor, chunk: int, device, start: Tensor | None = None) -> Tensor:
    return torch.cat([net(d[i:i + chunk].to(device), mask.to(device),
                          None if start is None else start[i:i + chunk].to(device)).cpu()
                      for i in range(0, d.shape[0], chunk)])


def _as_planes(volume: Tensor) -> Tensor:
    """A volume (S, H, W) as the readout planes (W, S, H) of :func:`readout_planes`."""
    return volume.detach().float().cpu().permute(2, 0, 1).contiguous()


StartFn = Callable[[Tensor], Tensor]  # a phase-encode mask (S, H) bool -> a volume (S, H, W) from those points


def measured_planes(y: Tensor, mask: Tensor) -> Tensor:
    """The mri3d k-space y (1, 1, S, H, W) as complex64 plane data (W, S, H) on the CPU, zero off ``mask`` (S, H)
    bool: simulated noise off the mask is not data."""
    return readout_planes(y.detach().to(torch.complex64).cpu()) * mask


def train_mri3d_network(planes: Tensor, mask: Tensor, *, steps: int = 1000, batch: int = 4, unrolls: int = 5,
                        depth: int = 6, width: int = 32, lr: float = 1e-3, rho: float = 0.4,
                        validation: float = 0.2, check_every: int = 25, seed: int = 0,
                        start: StartFn | None = None, splits: int = 8,
                        device: str | torch.device = "cpu", progress: bool = False) -> tuple[UnrolledNet, dict]:
    """Train :class:`UnrolledNet` on the scan (module docstring): its plane data (:func:`measured_planes`),
    phase-encode mask (S, H) bool. Adam with cosine decay of ``lr``; each step ``batch`` random planes, a fresh
    Θ / Λ split of Ω \\ Γ with a share ``rho`` of the groups in Λ; every ``check_every`` steps the Γ error (the
    network on Ω \\ Γ, all planes) decides whether to keep the weights. Returns (the kept network, a report: the
    Γ errors at each check, the untrained network's (``start_error``: its start's, up to the data step), the
    best, and the step it was reached at; ``best_step`` 0 means the training did not beat the start).

    ``start``: the network starts from ``start(points)``, a reconstruction from those points alone (e.g. 3-D
    ADMM-TV), instead of the zero-filled image. The start of a split must see Θ only, so the splits are then a
    fixed bank of ``splits`` draws (ZS-SSL's own scheme), each start computed once; Γ is checked from
    ``start(Ω \\ Γ)``. With the zero-initialised head the untrained network returns its start (up to the data
    step), so Γ can always fall back to it."""
    generator = torch.Generator().manual_seed(seed)
    centre = centre_block(mask)
    train_mask, gamma = split_mask(mask, validation, generator, centre)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = UnrolledNet(unrolls, depth, width).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    d_train, d_gamma = planes * train_mask, planes * gamma
    bank, start_train = [], None
    if start is not None:
        if splits < 1:
            raise ValueError(f"zs-ssl needs at least one split with a start reconstruction, got {splits}")
        for _ in tqdm(range(splits), desc="zs-ssl: start of each split", disable=not progress, leave=False):
            theta, lam = split_mask(train_mask, rho, generator, centre)
            bank.append((theta, lam, _as_planes(start(theta))))
        start_train = _as_planes(start(train_mask))
    best, best_state, history = math.inf, copy.deepcopy(net.state_dict()), []

    def check(step: int) -> None:
        nonlocal best, best_state
        with torch.no_grad():
            err = float(_kspace_loss(_run(net, d_train, train_mask, 16, device, start_train), d_gamma, gamma))
        history.append((step, err))
        if err < best:
            best, best_state = err, copy.deepcopy(net.state_dict())

    check(0)
    bar = tqdm(range(1, steps + 1), desc="mri3d self-supervised training", disable=not progress, leave=False)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        idx = torch.randint(planes.shape[0], (batch,), generator=generator)
        if bank:
            theta, lam, starts = bank[int(torch.randint(len(bank), (1,), generator=generator))]
            x0 = starts[idx].to(device)
        else:
            (theta, lam), x0 = split_mask(train_mask, rho, generator, centre), None
        d = planes[idx].to(device)
        p = net(d * theta.to(device), theta.to(device), x0)
        loss = _kspace_loss(p, d, lam.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % check_every == 0 or step == steps:
            check(step)
            bar.set_postfix(loss=f"{loss.item():.4f}", gamma=f"{history[-1][1]:.4f}")
    net.load_state_dict(best_state)
    best_step, best_error = min(history, key=lambda t: t[1])
    return net.eval(), {"validation": "relative k-space error on the held-out points Γ, from Ω \\ Γ",
                        "validation_error": [e for _, e in history], "checked_at": [s for s, _ in history],
                        "start_error": history[0][1], "best_error": best_error, "best_step": best_step,
                        "steps": steps}


def mri3d_selfsup(y: Tensor, mask: Tensor, *, start: StartFn | None = None, progress: bool = False,
                  **train_kwargs) -> tuple[Tensor, dict]:
    """Reconstruct the volume (S, H, W) from mri3d k-space y (1, 1, S, H, W) on ``mask`` (S, H): the network
    trained on this scan (:func:`train_mri3d_network`) run plane by plane on all of Ω, from ``start(Ω)`` if a
    start is given. Returns (volume, report)."""
    mask = mask.detach().bool().cpu()
    planes = measured_planes(y, mask)
    net, report = train_mri3d_network(planes, mask, progress=progress, start=start, **train_kwargs)
    device = next(net.parameters()).device
    x0 = None if start is None else _as_planes(start(mask))
    with torch.inference_mode():
        out = _run(net, planes, mask, 16, device, x0)
    return out.permute(1, 2, 0).contiguous(), report
