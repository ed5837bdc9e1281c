"""The linear-operator interface every forward model implements: ``A``, ``A_adjoint``, ``A_dagger``.

Convention: images are tensors ``(B, C, H, W)``; measurements have an operator-specific shape documented
by each operator. Inner products are real (``Re <u, v>``), so an operator from real images to complex
k-space has the adjoint ``Re(A^H y)``.
"""

from __future__ import annotations

import torch

from wavepatch.linalg import conjugate_gradient, inner, power_iteration

Tensor = torch.Tensor


class LinearOperator:
    """Base for forward models y = A x. Subclasses implement :meth:`A` and :meth:`A_adjoint`.

    ``image_shape`` is the per-item image shape ``(C, H, W)`` (or ``(C, D, H, W)``) the operator expects;
    ``closed_form_dagger``: whether :meth:`A_dagger` is an exact pseudo-inverse in closed form (not iterative).
    """

    image_shape: tuple[int, ...] = ()
    closed_form_dagger: bool = False

    def A(self, x: Tensor) -> Tensor:  # noqa: N802 - the operator's usual symbol
        raise NotImplementedError

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        raise NotImplementedError

    def __call__(self, x: Tensor) -> Tensor:
        return self.A(x)

    def normal(self, x: Tensor) -> Tensor:
        """A^H A x."""
        return self.A_adjoint(self.A(x))

    def A_dagger(self, y: Tensor, n_iter: int = 100, tol: float = 1e-6) -> Tensor:  # noqa: N802
        """Least-squares solution argmin_x ||A x - y||^2 by conjugate gradients on the normal equations,
        started at 0 (so it converges to the minimum-norm solution). Operators with a closed-form
        pseudo-inverse override this."""
        return conjugate_gradient(self.normal, self.A_adjoint(y), n_iter=n_iter, tol=tol)

    def norm(self, n_iter: int = 50, seed: int = 0) -> float:
        """Spectral norm ||A||_2 by power iteration on A^H A (cached per operator)."""
        cached = getattr(self, "_norm_cache", None)
        if cached is not None:
            return cached
        g = torch.Generator().manual_seed(seed)
        x0 = torch.randn((1,) + tuple(self.image_shape), generator=g).to(self.device)
        value = float(power_iteration(self.normal, x0, n_iter)) ** 0.5
        self._norm_cache = value
        return value

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def image_zeros(self, batch: int = 1, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.zeros((batch,) + tuple(self.image_shape), dtype=dtype, device=self.device)


def adjoint_mismatch(op: LinearOperator, batch: int = 2, seed: int = 0, dtype=torch.float64) -> float:
    """Dot-product test |<A u, v> - <u, A^H v>| / (||A u|| ||v||) for random u, v.

    Normalised by the norms rather than by |<A u, v>|, which can be small by chance for random v.

    Runs in ``dtype`` (float64 by default) where the operator supports it.
    """
    g = torch.Generator().manual_seed(seed)
    u = torch.randn((batch,) + tuple(op.image_shape), generator=g, dtype=dtype).to(op.device)
    Au = op.A(u)
    if Au.is_complex():
        v = torch.complex(torch.randn(Au.shape, generator=g, dtype=dtype),
                          torch.randn(Au.shape, generator=g, dtype=dtype)).to(Au.dtype).to(op.device)
    else:
        v = torch.randn(Au.shape, generator=g, dtype=dtype).to(Au.dtype).to(op.device)
    lhs = inner(Au, v).sum()
    rhs = inner(u, op.A_adjoint(v)).sum()
    scale = Au.abs().pow(2).sum().sqrt() * v.abs().pow(2).sum().sqrt()
    return float((lhs - rhs).abs() / scale.clamp_min(1e-30))
