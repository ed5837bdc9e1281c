"""Least squares: conjugate gradients on the normal equations (CGLS), optionally Tikhonov-regularised."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from wavepatch.linalg import inner
from wavepatch.physics.base import LinearOperator

Tensor = torch.Tensor


def cgls(op: LinearOperator, y: Tensor, n_iter: int = 30, x0: Tensor | None = None, damping: float = 0.0,
         rtol: float | None = None, progress: bool = False) -> Tensor:
    """argmin_x ||A x - y||^2 + damping ||x||^2 by CGLS (Paige & Saunders' stable form of CG on A^T A).

    Stopped after ``n_iter`` iterations, which regularises by itself (semi-convergence): few iterations
    give smooth images, many give noisy ones. ``x0`` defaults to zero. Shapes: y as ``op.A`` returns,
    result (B, C, H, W). An item stops once ||A^T r - damping x|| <= rtol times its initial value (default:
    100 machine epsilons of y's real dtype): iterating past convergence in float32 divides rounding noise by
    rounding noise and blows up along the null space of A (MRI masks, inpainting).
    """
    x = op.image_zeros(y.shape[0], dtype=y.real.dtype) if x0 is None else x0.clone()
    r = y - op.A(x)
    s = op.A_adjoint(r) - damping * x
    p = s.clone()
    gamma = inner(s, s)
    active = gamma > 1e-30
    if rtol is None:
        rtol = 100 * torch.finfo(y.real.dtype).eps
    threshold = rtol**2 * gamma
    for _ in tqdm(range(n_iter), desc="cgls", disable=not progress, leave=False):
        if not bool(active.any()):
            break
        q = op.A(p)
        denom = inner(q, q) + damping * inner(p, p)
        alpha = torch.where(active, gamma / denom.clamp_min(1e-30), torch.zeros_like(gamma))
        x = x + _b(alpha, x) * p
        r = r - _b(alpha, r) * q
        s = op.A_adjoint(r) - damping * x
        gamma_new = inner(s, s)
        active = active & (gamma_new > threshold)
        beta = torch.where(active, gamma_new / gamma.clamp_min(1e-30), torch.zeros_like(gamma))
        p = s + _b(beta, p) * p
        gamma = gamma_new
    return x


def _b(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape((-1,) + (1,) * (like.dim() - 1)).to(like.dtype if not like.is_complex() else v.dtype)
