"""Small linear-algebra helpers shared by operators and solvers (real inner products, CG, power method)."""

from __future__ import annotations

from collections.abc import Callable

import torch

Tensor = torch.Tensor


def inner(a: Tensor, b: Tensor) -> Tensor:
    """Real inner product Re <a, b> = Re sum(conj(a) * b) over all but the batch dimension -> (B,)."""
    prod = torch.conj(a) * b if a.is_complex() or b.is_complex() else a * b
    return prod.real.reshape(prod.shape[0], -1).sum(dim=1)


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def conjugate_gradient(
    normal_op: Callable[[Tensor], Tensor],
    rhs: Tensor,
    x0: Tensor | None = None,
    n_iter: int = 50,
    tol: float = 1e-6,
) -> Tensor:
    """Solve M x = rhs for a symmetric positive (semi-)definite M given as ``normal_op``.

    Each batch item is solved independently (its own step sizes). Stops early when every item's residual
    norm falls below ``tol`` times the norm of its right-hand side.
    """
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - normal_op(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rs = inner(r, r)
    stop = (tol**2) * inner(rhs, rhs).clamp_min(1e-30)
    for _ in range(n_iter):
        if bool((rs <= stop).all()):
            break
        Mp = normal_op(p)
        alpha = rs / inner(p, Mp).clamp_min(1e-30)
        x = x + _bcast(alpha, x) * p
        r = r - _bcast(alpha, r) * Mp
        rs_new = inner(r, r)
        p = r + _bcast(rs_new / rs.clamp_min(1e-30), p) * p
        rs = rs_new
    return x


def power_iteration(op: Callable[[Tensor], Tensor], x0: Tensor, n_iter: int = 50) -> float:
    """Largest eigenvalue of a symmetric positive semi-definite ``op`` (e.g. A^H A), estimated from ``x0``."""
    x = x0 / x0.norm()
    lam = 0.0
    for _ in range(n_iter):
        y = op(x)
        lam = float(inner(x, y).sum())
        n = y.norm()
        if float(n) == 0.0:
            return 0.0
        x = y / n
    return lam
