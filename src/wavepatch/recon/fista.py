"""Proximal-gradient (FISTA) reconstructions: TV and L1-wavelet regularised least squares.

Objective: 0.5 ||A x - y||^2 / L + lam R(x), (A, y) the fidelity's least-squares form (``fidelity.quadratic()``:
count-weighted for post-log CT), with L = ||A||^2 estimated by power iteration, so the data
term's gradient has Lipschitz constant 1, the step is 1, and ``lam`` is in image-intensity units
whatever the operator's scaling.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from wavepatch.fidelity import DataFidelity
from wavepatch.recon.tv import tv_prox
from wavepatch.wavelets import wavelet_shrink

Tensor = torch.Tensor


def fista(fidelity: DataFidelity, prox: Callable[[Tensor, int], Tensor], x0: Tensor,
          n_iter: int = 100, nonnegative: bool = False, progress: bool = False, desc: str = "fista") -> Tensor:
    """FISTA (Beck & Teboulle 2009) on 0.5||Ax - y||^2 / L + R(x), with ``prox(v, k)`` the prox of R
    (step 1) at iteration k; (A, y) = ``fidelity.quadratic()``. Returns (B, C, H, W)."""
    op, y = fidelity.quadratic()
    lip = op.norm() ** 2
    x, z, t = x0.clone(), x0.clone(), 1.0
    for k in tqdm(range(n_iter), desc=desc, disable=not progress, leave=False):
        grad = op.A_adjoint(op.A(z) - y) / lip
        x_new = prox(z - grad, k)
        if nonnegative:
            x_new = x_new.clamp_min(0)
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return x


def fista_tv(fidelity: DataFidelity, lam: float = 1e-3, n_iter: int = 100, x0: Tensor | None = None,
             tv_iter: int = 20, nonnegative: bool = True, progress: bool = False) -> Tensor:
    """Isotropic-TV regularised least squares by FISTA; the TV prox is an inner FGP loop of ``tv_iter``."""
    x0 = _zeros(fidelity) if x0 is None else x0
    return fista(fidelity, lambda v, k: tv_prox(v, lam, n_iter=tv_iter), x0, n_iter, nonnegative, progress,
                 "fista-tv")


def l1_wavelet(fidelity: DataFidelity, lam: float = 1e-3, n_iter: int = 100, x0: Tensor | None = None,
               wavelet: str = "db4", levels: int = 3, cycle_spin: bool = True, seed: int = 0,
               nonnegative: bool = True, progress: bool = False) -> Tensor:
    """L1-wavelet regularised least squares by FISTA with an orthonormal periodized DWT.

    With ``cycle_spin`` a random circular shift is drawn at every iteration (Figueiredo & Nowak), which
    removes the block artefacts of a fixed wavelet grid. ``levels`` is capped at the number of times the image
    sides halve exactly (:func:`wavepatch.wavelets.wavelet_shrink`).
    """
    x0 = _zeros(fidelity) if x0 is None else x0
    g = torch.Generator().manual_seed(seed)
    span = 2**levels

    def prox(v: Tensor, k: int) -> Tensor:
        shift = tuple(int(s) for s in torch.randint(0, span, (2,), generator=g)) if cycle_spin else (0, 0)
        return wavelet_shrink(v, lam, wavelet, levels, shift)

    return fista(fidelity, prox, x0, n_iter, nonnegative, progress, "l1-wavelet")


def _zeros(fidelity: DataFidelity) -> Tensor:
    return fidelity.op.image_zeros(fidelity.y.shape[0], dtype=fidelity.y.real.dtype)
