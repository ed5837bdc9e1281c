"""Small linear-algebra helpers shared by operators, data fidelities and solvers (real inner products, CG, CGLS,
power method, soft threshold). Operators are duck-typed here (anything with ``A``, ``A_adjoint``, ``image_zeros``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

Tensor = torch.Tensor


def inner(a: Tensor, b: Tensor) -> Tensor:
    """Real inner product Re <a, b> = Re sum(conj(a) * b) over all but the batch dimension -> (B,).

    Each item is summed by the same fixed pairwise tree (its row zero-padded to a power of two, then halves added
    until one entry is left), with elementwise additions only, so an item's value does not depend on the batch it
    is in: a batched row reduction picks its summation order by the batch's shape, and conjugate gradients amplify
    that last-bit difference, while a slab of a volume computed by one process of a torchrun job must match the
    whole volume's. Vectorised over the batch (a Python loop over items cost minutes at B = 2000)."""
    if a.is_complex() or b.is_complex():
        # Re(conj(a) b) = a.re b.re + a.im b.im as real products: a complex multiply rounds differently in its
        # vector and scalar paths (fused multiply-add), which would make the result depend on the batch again
        dtype = torch.promote_types(a.dtype, b.dtype)
        a, b = torch.view_as_real(a.to(dtype)), torch.view_as_real(b.to(dtype))
    prod = a * b
    rows = prod.reshape(prod.shape[0], -1)
    n = rows.shape[1]
    width = 1 << max(n - 1, 0).bit_length()
    if width != n:
        rows = torch.nn.functional.pad(rows, (0, width - n))
    while rows.shape[1] > 1:
        half = rows.shape[1] // 2
        rows = rows[:, :half] + rows[:, half:]
    return rows[:, 0]


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def soft_threshold(x: Tensor, t: float | Tensor) -> Tensor:
    """Elementwise soft threshold sign(x) max(|x| - t, 0), the prox of t |.|_1 (differentiable in x and t almost
    everywhere). t: a float, a (B,) tensor (one threshold per item of x (B, ...)) or a tensor broadcastable
    against x; it is taken in x's dtype and device."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 1 and x.dim() > 1:
        t = _bcast(t, x)
    return torch.sign(x) * torch.relu(x.abs() - t)


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


def cgls(op, y: Tensor, n_iter: int = 30, x0: Tensor | None = None, damping: float = 0.0,
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
