"""Regularisation by denoising (RED, Romano, Elad & Milanfar 2017) with any denoiser."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from wavepatch.fidelity import DataFidelity

Tensor = torch.Tensor


def red(fidelity: DataFidelity, denoiser: Callable[[Tensor, float], Tensor], sigma: float = 0.05,
        lam: float = 0.5, n_iter: int = 50, x0: Tensor | None = None, progress: bool = False) -> Tensor:
    """Accelerated gradient descent on 0.5||Ax - y||^2 / L + (lam/2) x^T (x - D(x, sigma)).

    Uses RED's gradient rule grad = A^T(Ax - y)/L + lam (x - D(x)), step 1 / (1 + lam), with Nesterov
    momentum. ``lam`` sets the prior's weight; ``sigma`` the denoiser's strength. (A, y) = ``fidelity.quadratic()``."""
    op, y = fidelity.quadratic()
    lip = op.norm() ** 2
    x = op.image_zeros(y.shape[0], dtype=y.real.dtype) if x0 is None else x0.clone()
    z, t = x.clone(), 1.0
    step = 1.0 / (1.0 + lam)
    for _ in tqdm(range(n_iter), desc="red", disable=not progress, leave=False):
        grad = op.A_adjoint(op.A(z) - y) / lip + lam * (z - denoiser(z, sigma))
        x_new = z - step * grad
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return x
