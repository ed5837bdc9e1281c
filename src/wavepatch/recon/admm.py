"""ADMM reconstructions: TV (split z = grad x) and plug-and-play with any denoiser.

Data term 0.5 ||A_w x - y_w||^2 / L with (A_w, y_w) = ``fidelity.quadratic()`` (the measurement's least-squares
form: A, y for Gaussian noise; count-weighted for post-log CT) and L = ||A_w||^2 (see fista.py), so penalties are
operator-independent.
The x-update is a linear solve done by a few warm-started conjugate-gradient iterations.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from wavepatch.fidelity import DataFidelity
from wavepatch.linalg import conjugate_gradient
from wavepatch.recon.tv import div2d, div_stack, grad2d, grad_stack, shrink_isotropic
from wavepatch.types import Denoiser

Tensor = torch.Tensor


def admm_tv(fidelity: DataFidelity, lam: float = 1e-3, rho: float = 0.05, n_iter: int = 50,
            x0: Tensor | None = None, cg_iter: int = 10, nonnegative: bool = True,
            progress: bool = False, z_weight: float | None = None) -> Tensor:
    """min_x 0.5||A_w x - y_w||^2 / L + lam ||grad x||_{2,1} by ADMM with z = grad x (isotropic TV).

    ``z_weight``: None for 2-D TV per image; a number for 3-D TV over the batch as a slice stack (S, C, H, W)
    (:func:`~wavepatch.recon.tv.grad_stack`, z differences scaled by in-plane pixel / slice spacing)."""
    if z_weight is None:
        grad_op, div_op = grad2d, div2d
    else:
        def grad_op(v: Tensor) -> Tensor:
            return grad_stack(v, z_weight)

        def div_op(p: Tensor) -> Tensor:
            return div_stack(p, z_weight)
    op, y = fidelity.quadratic()
    lip = op.norm() ** 2
    x = op.image_zeros(y.shape[0], dtype=y.real.dtype) if x0 is None else x0.clone()
    z = grad_op(x)
    u = torch.zeros_like(z)
    aty = op.A_adjoint(y) / lip

    def normal(v: Tensor) -> Tensor:
        return op.normal(v) / lip - rho * div_op(grad_op(v))

    def solve(rhs: Tensor, start: Tensor) -> Tensor:
        if z_weight is None:  # independent images: CG per batch item
            return conjugate_gradient(normal, rhs, x0=start, n_iter=cg_iter)
        shape = rhs.shape  # a coupled stack: one CG over the whole volume (the batch made one item)
        one = (1, -1, *shape[2:])
        flat = conjugate_gradient(lambda v: normal(v.reshape(shape)).reshape(one), rhs.reshape(one),
                                  x0=start.reshape(one), n_iter=cg_iter)
        return flat.reshape(shape)

    for _ in tqdm(range(n_iter), desc="admm-tv", disable=not progress, leave=False):
        x = solve(aty - rho * div_op(z - u), x)
        if nonnegative:
            x = x.clamp_min(0)
        gx = grad_op(x)
        z = shrink_isotropic(gx + u, lam / rho)
        u = u + gx - z
    return x


def pnp_admm(fidelity: DataFidelity, denoiser: Denoiser, sigma: float = 0.05, rho: float = 1.0,
             n_iter: int = 30, x0: Tensor | None = None, cg_iter: int = 10, progress: bool = False) -> Tensor:
    """Plug-and-play ADMM (Venkatakrishnan et al. 2013): the prox of the prior is replaced by
    ``denoiser(v, sigma)``; ``rho`` weighs the coupling ||x - (z - u)||^2 against the data term.
    Returns the denoised iterate z (B, C, H, W)."""
    op, y = fidelity.quadratic()
    lip = op.norm() ** 2
    x = op.image_zeros(y.shape[0], dtype=y.real.dtype) if x0 is None else x0.clone()
    z, u = x.clone(), torch.zeros_like(x)
    aty = op.A_adjoint(y) / lip

    def normal(v: Tensor) -> Tensor:
        return op.normal(v) / lip + rho * v

    for _ in tqdm(range(n_iter), desc="pnp-admm", disable=not progress, leave=False):
        x = conjugate_gradient(normal, aty + rho * (z - u), x0=x, n_iter=cg_iter)
        z = denoiser(x + u, sigma)
        u = u + x - z
    return z
