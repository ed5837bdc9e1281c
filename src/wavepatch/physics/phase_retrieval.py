"""Fourier phase retrieval: measurements are the magnitudes of the oversampled Fourier transform of the image.

``FourierMagnitude`` maps an image (B, 1, H, W) to |F(pad(x))| (B, 1, M, N), with M = ceil(s H), N = ceil(s W)
for the oversampling s >= 1: the image is zero-padded at the bottom and right (its support is the top-left
H x W box) and F is the orthonormal 2-D DFT, so ||A x|| = ||x||. The map is **nonlinear** (``linear = False``):
it has no adjoint; samplers differentiate it with autograd (:class:`wavepatch.fidelity.MagnitudeFidelity`).

Trivial ambiguities (every one gives the same measurement): circular translation on the M x N grid, and the
"twin" x(-r) (the image rotated by 180 degrees, then translated). :func:`resolve_ambiguities` aligns an estimate
with a reference over both before it is scored; real nonnegative images have no global-phase ambiguity.
:func:`hio` is the classical reconstruction (the task's baseline, and the ``hio`` method).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from wavepatch.physics.blur import gaussian_lowpass

Tensor = torch.Tensor


class FourierMagnitude:
    """x (B, 1, H, W) -> |F(pad(x))| (B, 1, M, N); see the module docstring."""

    linear = False
    closed_form_dagger = False

    def __init__(self, image_shape: tuple[int, int, int], oversampling: float = 2.0) -> None:
        if not (math.isfinite(oversampling) and oversampling >= 1):
            raise ValueError(f"--oversampling must be a finite number >= 1, got {oversampling}")
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape}")
        self.image_shape = tuple(image_shape)
        self.oversampling = float(oversampling)
        h, w = image_shape[1:]
        self.padded = (math.ceil(oversampling * h), math.ceil(oversampling * w))

    def pad(self, x: Tensor) -> Tensor:
        h, w = self.image_shape[1:]
        return F.pad(x, (0, self.padded[1] - w, 0, self.padded[0] - h))

    def crop(self, z: Tensor) -> Tensor:
        return z[..., : self.image_shape[1], : self.image_shape[2]]

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return torch.fft.fft2(self.pad(x), norm="ortho").abs()

    def __call__(self, x: Tensor) -> Tensor:
        return self.A(x)

    def norm(self) -> float:
        """The Jacobian's spectral norm is at most 1 (orthonormal DFT, |.| is 1-Lipschitz), and 1 at generic x."""
        return 1.0

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def image_zeros(self, batch: int = 1, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.zeros((batch,) + self.image_shape, dtype=dtype)


def resolve_ambiguities(x: Tensor, ref: Tensor, op: FourierMagnitude) -> Tensor:
    """x (B, 1, H, W) moved to its equivalent (same measurement) that best matches ref (1 or B, 1, H, W): the best
    circular shift on the padded grid of x and of its twin x(-r), by maximal cross-correlation with ref."""
    zr = torch.fft.fft2(op.pad(ref.expand_as(x).double()))
    best, best_score = None, None
    for cand in (x, x.flip(-2, -1)):
        z = op.pad(cand.double())
        corr = torch.fft.ifft2(zr * torch.fft.fft2(z).conj()).real  # corr[s] = sum_r ref(r + s) cand(r)
        flat = corr.flatten(1).max(dim=1)
        shift = torch.stack([flat.indices // corr.shape[-1], flat.indices % corr.shape[-1]], 1)
        moved = torch.stack([torch.roll(z[b], (int(shift[b, 0]), int(shift[b, 1])), dims=(-2, -1))
                             for b in range(len(z))])
        if best is None:
            best, best_score = moved, flat.values
        else:
            take = (flat.values > best_score).reshape(-1, 1, 1, 1)
            best, best_score = torch.where(take, moved, best), torch.maximum(flat.values, best_score)
    return op.crop(best).to(x.dtype)


def _shrinkwrap(g: Tensor, box: Tensor, sigma: float, threshold: float) -> Tensor:
    """Support update (Marchesini et al., Phys. Rev. B 68, 2003): where the estimate blurred by a Gaussian of std
    ``sigma`` px exceeds ``threshold`` of its maximum, inside the original box."""
    blurred = gaussian_lowpass(g.clamp_min(0), sigma, padding="zeros")
    peak = blurred.flatten(1).amax(1).reshape(-1, 1, 1, 1)
    return box & (blurred > threshold * peak)


def hio(op: FourierMagnitude, y: Tensor, *, n_iter: int = 1000, beta: float = 0.9, restarts: int = 4,
        er_iter: int = 50, shrinkwrap: bool = True, seed: int = 0, progress: bool = False) -> Tensor:
    """Fienup's hybrid input-output + error reduction from ``restarts`` random starts on magnitudes y
    (B, 1, M, N); -> (B, 1, H, W).

    On the padded grid, each iteration replaces the Fourier magnitude of the estimate g by the measured one, keeps
    the phase, and returns to the image domain (g'); where g' satisfies the constraints (inside the support box,
    nonnegative) g <- g', elsewhere g <- g - beta g' (Fienup, Appl. Opt. 21, 1982). After ``n_iter`` HIO
    iterations, ``er_iter`` error-reduction iterations (g <- g' inside the constraints, 0 outside) polish it.
    The start whose magnitudes fit y best (least squares) is returned. Noisy magnitudes are clipped at 0.
    ``shrinkwrap``: every 20 HIO iterations after the first 50, the support shrinks to where the blurred estimate
    exceeds 4 % of its maximum (blur std 3 px decreasing to 1 px), within the box. The defaults (1000
    iterations, shrink-wrap at 4 %) were chosen on three training CT slices by ``benchmarks/tune_hio.py``.
    """
    if not isinstance(op, FourierMagnitude):
        raise ValueError("hio applies to phase retrieval (--task phase-retrieval) only")
    dtype = y.dtype
    y = y.clamp_min(0).double()
    b = y.shape[0]
    box = op.pad(torch.ones((1,) + op.image_shape, dtype=torch.bool)).bool()
    gen = torch.Generator().manual_seed(seed)
    best, best_err = None, torch.full((b,), float("inf"), dtype=torch.float64)
    bar = tqdm(total=restarts * (n_iter + er_iter), desc="hio", disable=not progress)
    for _ in range(restarts):
        g = op.pad(torch.rand((b,) + op.image_shape, generator=gen, dtype=torch.float64))
        support = box.expand_as(g)
        for it in range(n_iter + er_iter):
            if shrinkwrap and 50 <= it < n_iter and it % 20 == 0:
                support = _shrinkwrap(g, box, max(1.0, 3.0 - 2.0 * it / n_iter), 0.04)
            spec = torch.fft.fft2(g, norm="ortho")
            gp = torch.fft.ifft2(y * torch.exp(1j * spec.angle()), norm="ortho").real
            ok = support & (gp >= 0)
            g = torch.where(ok, gp, g - beta * gp) if it < n_iter else torch.where(ok, gp, torch.zeros_like(gp))
            bar.update(1)
        err = (torch.fft.fft2(g, norm="ortho").abs() - y).pow(2).flatten(1).sum(1)
        take = err < best_err
        best = g if best is None else torch.where(take.reshape(-1, 1, 1, 1), g, best)
        best_err = torch.minimum(err, best_err)
    bar.close()
    return op.crop(best).to(dtype)
