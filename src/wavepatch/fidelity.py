"""Data fidelities: -log p(y | x) for a measurement y = A x + noise, the one interface between a measurement and
every posterior sampler and classical solver.

A task builds its fidelity from its operator and noise model (:func:`make_fidelity`); solvers see only this:

- ``residual(x)`` (B,): -2 log p(y | x) + const, >= 0 and 0 at a perfect fit. Gaussian noise of std s:
  ||A x - y||^2 / s^2 (s = 0, noiseless data: ||A x - y||^2, unit weight); weighted Gaussian (variance 1 / w
  per entry): sum w (A x - y)^2; post-log CT counts: the Poisson deviance. Differentiable (DPS differentiates
  it through the denoiser).
- ``grad(x)``: the gradient of residual / 2, i.e. -grad_x log p(y | x).
- ``prox(x0, weight)``: the MAP step argmin_x residual(x) / 2 + weight / 2 ||x - x0||^2, by ``n_iter`` CGLS
  iterations (exact in the limit for Gaussian noise; the count-weighted quadratic model for Poisson data).
- ``project(x)``: noiseless data only: x - A^+(A x - y), onto {A x = y} (exact where the operator has a
  closed-form pseudo-inverse, else ``n_iter`` CGLS iterations, whose early stopping keeps it stable).
- ``pinv(r)``: A^+ r, as used by ``project`` (MCG projects onto a noised measurement set with it).
- ``annealed_grad(x, sigma)``: grad_x log N(y; A x, V + sigma^2 ||A||^2 I), the likelihood of an estimate
  that carries noise of level sigma (annealed Langevin, predictor-corrector); V the noise variance per entry.
- ``quadratic()``: (A_w, y_w) with residual(x) = ||A_w x - y_w||^2 up to a constant factor (Gaussian) or its
  count-weighted quadratic model (Poisson, penalised weighted least squares): what the classical solvers
  minimise (they normalise by ||A_w||^2, so constant factors cancel).
- ``scale``: ||A_w|| / sqrt(n), n = pixels per image: a data step of size zeta / scale moves the image by about
  zeta per pixel whatever the operator's scale and the image size.
- ``noiseless``: whether ``project`` applies.

Shapes: x (B, *image_shape) of the operator, y (B, ...) as ``op.A`` returns. A fidelity built for one
measurement serves K posterior samples after ``expand(K)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wavepatch.linalg import cgls
from wavepatch.physics.base import LinearOperator
from wavepatch.physics.noise import line_integrals_to_counts

Tensor = torch.Tensor


@dataclass(frozen=True)
class GaussianNoise:
    """Gaussian noise of std ``std`` per entry (measurement units): a float (white; 0 for noiseless data) or a
    positive tensor shaped like the measurement (independent entries of different variance)."""

    std: float | Tensor = 0.0


@dataclass(frozen=True)
class PoissonNoise:
    """Post-log CT data y = log(I0 / (counts + 1/2)) / mu in operator units (line integrals / mu); counts ~
    Poisson(I0 exp(-mu A x)). i0: incident photons per bin; mu: attenuation per unit image value and pixel;
    weight_box: the side of the (views, bins) box the PWLS weights are smoothed over (:class:`PoissonFidelity`;
    1: each bin's own count)."""

    i0: float
    mu: float
    weight_box: int = 3


NoiseModel = GaussianNoise | PoissonNoise


class RowWeighted(LinearOperator):
    """diag(w) A for a weight tensor w that broadcasts against A's output."""

    def __init__(self, op: LinearOperator, weight: Tensor) -> None:
        self.op, self.weight, self.image_shape = op, weight, op.image_shape

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return self.weight * self.op.A(x)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return self.op.A_adjoint(self.weight * y)

    @property
    def device(self) -> torch.device:
        return self.op.device


def _pixels(op: LinearOperator) -> int:
    return math.prod(int(d) for d in op.image_shape)


def _abs2(v: Tensor) -> Tensor:
    """|v|^2 per entry (real for complex v)."""
    return v.abs() ** 2 if v.is_complex() else v**2


class DataFidelity:
    """Base: the operator-level pieces shared by every noise model (``pinv``, ``project``, ``expand``).
    Subclasses implement residual, grad, prox, annealed_grad, quadratic, scale and ``_with_y``."""

    op: LinearOperator
    y: Tensor
    noiseless: bool = False

    def pinv(self, r: Tensor, n_iter: int = 10) -> Tensor:
        """A^+ r: the operator's closed-form pseudo-inverse where it has one, else ``n_iter`` CGLS iterations."""
        if getattr(self.op, "closed_form_dagger", False):
            return self.op.A_dagger(r)
        return cgls(self.op, r, n_iter=n_iter)

    def project(self, x: Tensor, n_iter: int = 10) -> Tensor:
        """x - A^+(A x - y): onto the noiseless measurement set; refused for noisy data."""
        if not self.noiseless:
            raise ValueError(f"{type(self).__name__}: the measurement is noisy, there is no exact projection")
        return x - self.pinv(self.op.A(x) - self.y, n_iter)

    def expand(self, k: int) -> DataFidelity:
        """The same fidelity for a batch of k estimates of one measurement (y of batch 1 repeated)."""
        if self.y.shape[0] == k:
            return self
        if self.y.shape[0] != 1:
            raise ValueError(f"cannot expand a measurement batch of {self.y.shape[0]} to {k}")
        return self._with_y(self.y.expand(k, *self.y.shape[1:]))

    def _with_y(self, y: Tensor) -> DataFidelity:
        raise NotImplementedError

    def noised(self, y: Tensor) -> DataFidelity:
        """The quadratic model of this fidelity for another measurement ``y`` of the same noise: the measurement
        noised to a diffusion level (MCG's y + s A z), whose prox is the MAP step there."""
        return self._with_y(y)


class GaussianFidelity(DataFidelity):
    """y = A x + n, n ~ N(0, std^2) per entry (std 0: noiseless, unit weight)."""

    def __init__(self, op: LinearOperator, y: Tensor, std: float = 0.0) -> None:
        if std < 0 or not math.isfinite(std):
            raise ValueError(f"noise std must be finite and >= 0, got {std}")
        self.op, self.y, self.std = op, y, float(std)
        self.noiseless = self.std == 0
        self._w = 1.0 / self.std if self.std > 0 else 1.0  # whitening weight

    def residual(self, x: Tensor) -> Tensor:
        r = _abs2(self.op.A(x) - self.y).flatten(1).sum(dim=1)
        return r * self._w**2 if self._w != 1.0 else r

    def grad(self, x: Tensor) -> Tensor:
        return self.op.A_adjoint(self.op.A(x) - self.y) * self._w**2

    def prox(self, x0: Tensor, weight: float, n_iter: int = 10) -> Tensor:
        # argmin ||A x - y||^2 / s^2 + weight ||x - x0||^2 = argmin ||A x - y||^2 + s^2 weight ||x - x0||^2
        damping = weight / self._w**2
        return x0 + cgls(self.op, self.y - self.op.A(x0), n_iter=n_iter, damping=damping)

    def annealed_grad(self, x: Tensor, sigma: float) -> Tensor:
        return self.op.A_adjoint(self.y - self.op.A(x)) / (self.std**2 + sigma**2 * float(self.op.norm()) ** 2)

    def quadratic(self) -> tuple[LinearOperator, Tensor]:
        return self.op, self.y  # the whitening weight is a constant factor

    @property
    def scale(self) -> float:
        return float(self.op.norm()) * self._w / _pixels(self.op) ** 0.5

    def _with_y(self, y: Tensor) -> GaussianFidelity:
        return GaussianFidelity(self.op, y, self.std)


class WeightedGaussianFidelity(DataFidelity):
    """y = A x + n with independent Gaussian n of variance 1 / w per entry (``weights`` w > 0, shaped like y or
    broadcasting against it): residual = sum w (A x - y)^2. Penalised weighted least squares."""

    def __init__(self, op: LinearOperator, y: Tensor, weights: Tensor) -> None:
        if not bool((weights > 0).all()) or not bool(torch.isfinite(weights).all()):
            raise ValueError("Gaussian weights (inverse variances) must be positive and finite")
        self.op, self.y, self.weights = op, y, weights

    def residual(self, x: Tensor) -> Tensor:
        return (self.weights * _abs2(self.op.A(x) - self.y)).flatten(1).sum(dim=1)

    def grad(self, x: Tensor) -> Tensor:
        return self.op.A_adjoint(self.weights * (self.op.A(x) - self.y))

    def prox(self, x0: Tensor, weight: float, n_iter: int = 10) -> Tensor:
        sqrt_w = self.weights.sqrt()
        return x0 + cgls(RowWeighted(self.op, sqrt_w), sqrt_w * (self.y - self.op.A(x0)), n_iter=n_iter,
                         damping=weight)

    def annealed_grad(self, x: Tensor, sigma: float) -> Tensor:
        variance = 1.0 / self.weights + sigma**2 * float(self.op.norm()) ** 2
        return self.op.A_adjoint((self.y - self.op.A(x)) / variance)

    def quadratic(self) -> tuple[LinearOperator, Tensor]:
        sqrt_w = (self.weights / self.weights.mean()).sqrt()  # normalised: only relative weights matter
        return RowWeighted(self.op, sqrt_w), sqrt_w * self.y

    @property
    def scale(self) -> float:
        # ||W^(1/2) A|| approximated by ||A|| sqrt(mean w), which needs no power iteration per measurement
        return float(self.op.norm()) * float(self.weights.mean().sqrt()) / _pixels(self.op) ** 0.5

    def _with_y(self, y: Tensor) -> WeightedGaussianFidelity:
        return WeightedGaussianFidelity(self.op, y, self.weights.expand_as(y))

    def noised(self, y: Tensor) -> WeightedGaussianFidelity:
        # the measured weights, also for Poisson data (whose _with_y rebuilds counts from y: a noised y would
        # over- or underflow them)
        return WeightedGaussianFidelity._with_y(self, y)


def _box_mean(y: Tensor, k: int) -> Tensor:
    """The mean of y over a k x k box of its last two axes (edges replicated), shaped like y; y as is if it has
    fewer than two axes."""
    if y.ndim < 2 or k <= 1:
        return y
    flat = y.reshape(-1, 1, *y.shape[-2:])
    padded = F.pad(flat, (k // 2, k // 2, k // 2, k // 2), mode="replicate")
    return F.avg_pool2d(padded, k, stride=1).reshape(y.shape)


class PoissonFidelity(WeightedGaussianFidelity):
    """Low-dose CT from post-log data y (operator units; the bias-corrected log of
    :mod:`wavepatch.physics.noise`): counts c = I0 exp(-mu y) - 1/2, expected counts lambda(x) = I0 exp(-mu A x);
    residual = deviance 2 sum(lambda - c + c log(c / lambda)), the exact Poisson negative log-likelihood (times 2)
    up to a constant, and ``grad`` its gradient (unbiased: linear in the counts).

    The quadratic model (prox, annealed_grad, quadratic, scale) is the weighted Gaussian one of post-log data
    (PWLS): y has variance about 1 / (mu^2 lambda) per bin, so w = mu^2 lambda_hat. lambda_hat comes from y
    averaged over a k x k box of (views, detector bins), the last two axes (k = ``weight_box``, default 3). A
    bin's own count as its weight (k = 1) would make the weighted fit biased: a bin whose count fluctuated up has
    a low post-log value and a high weight, so the fit leans low by about 1 / lambda per ray (-4.7 HU in soft
    tissue for ADMM-TV at I0 = 2.5e3 on training slices; with the 3 x 3 box -0.2 HU for 0.03 dB,
    docs/results.md section 18.4)."""

    def __init__(self, op: LinearOperator, y: Tensor, i0: float, mu: float, weight_box: int = 3) -> None:
        if not (i0 > 0 and mu > 0 and weight_box >= 1):
            raise ValueError(f"Poisson fidelity needs I0 > 0, mu > 0 and a weight box >= 1, got {i0}, {mu}, "
                             f"{weight_box}")
        self.i0, self.mu, self.weight_box = float(i0), float(mu), int(weight_box)
        self.counts = line_integrals_to_counts(self.mu * y, self.i0)
        expected = self.i0 * torch.exp(-self.mu * _box_mean(y, self.weight_box))
        super().__init__(op, y, self.mu**2 * expected)

    def _log_lambda(self, x: Tensor) -> Tensor:
        return math.log(self.i0) - self.mu * self.op.A(x)

    def residual(self, x: Tensor) -> Tensor:
        log_lam = self._log_lambda(x)
        c = self.counts
        dev = 2 * (log_lam.exp() - c + c * (torch.log(c.clamp_min(1e-12)) - log_lam))
        return dev.flatten(1).sum(dim=1).clamp_min(0)

    def nll(self, x: Tensor) -> Tensor:
        """-log p(counts | x) up to a constant: sum(lambda - c log lambda); (B,)."""
        log_lam = self._log_lambda(x)
        return (log_lam.exp() - self.counts * log_lam).flatten(1).sum(dim=1)

    def grad(self, x: Tensor) -> Tensor:
        # d(-log p)/d(A x) = mu (c - lambda)
        return self.op.A_adjoint(self.mu * (self.counts - self._log_lambda(x).exp()))

    def _with_y(self, y: Tensor) -> PoissonFidelity:
        return PoissonFidelity(self.op, y, self.i0, self.mu, self.weight_box)


class MagnitudeFidelity(DataFidelity):
    """y = |A(x)| + n for a nonlinear magnitude operator (phase retrieval), n ~ N(0, std^2) per entry: residual =
    ||A(x) - y||^2 / std^2 (std 0: unit weight), ``grad`` by autograd. What needs a linear operator (prox,
    projection, annealed likelihood, the classical quadratic) is refused in one line."""

    def __init__(self, op, y: Tensor, std: float = 0.0) -> None:
        if std < 0 or not math.isfinite(std):
            raise ValueError(f"noise std must be finite and >= 0, got {std}")
        self.op, self.y, self.std = op, y, float(std)
        self._w = 1.0 / self.std if self.std > 0 else 1.0

    def residual(self, x: Tensor) -> Tensor:
        return (self.op.A(x) - self.y).pow(2).flatten(1).sum(dim=1) * self._w**2

    def grad(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(0.5 * self.residual(xg).sum(), xg)
        return g

    def _linear_only(self, what: str):
        raise ValueError(f"{what} needs a linear forward model; phase retrieval is nonlinear (use hio or dps)")

    def prox(self, x0: Tensor, weight: float, n_iter: int = 10) -> Tensor:
        self._linear_only("the data-fidelity proximal step")

    def annealed_grad(self, x: Tensor, sigma: float) -> Tensor:
        self._linear_only("the annealed likelihood (Langevin / predictor-corrector)")

    def quadratic(self):
        self._linear_only("this classical solver")

    def pinv(self, r: Tensor, n_iter: int = 10) -> Tensor:
        self._linear_only("the pseudo-inverse (MCG, DDNM)")

    def project(self, x: Tensor, n_iter: int = 10) -> Tensor:
        self._linear_only("the projection onto the measurement set")

    @property
    def scale(self) -> float:
        return float(self.op.norm()) * self._w / _pixels(self.op) ** 0.5

    def _with_y(self, y: Tensor) -> MagnitudeFidelity:
        return MagnitudeFidelity(self.op, y, self.std)


def make_fidelity(op: LinearOperator, y: Tensor, noise: NoiseModel) -> DataFidelity:
    """The fidelity of measurement y of ``op`` under ``noise`` (:class:`GaussianNoise` with a scalar std: white;
    with a tensor std (shaped like y): weighted; or :class:`PoissonNoise`); a nonlinear ``op`` (``linear`` False:
    phase retrieval) gets :class:`MagnitudeFidelity` (white Gaussian noise only)."""
    if not getattr(op, "linear", True):
        if not (isinstance(noise, GaussianNoise) and not torch.is_tensor(noise.std)):
            raise ValueError("a nonlinear (magnitude) operator takes white Gaussian noise only")
        return MagnitudeFidelity(op, y, noise.std)
    if isinstance(noise, GaussianNoise) and torch.is_tensor(noise.std):
        return WeightedGaussianFidelity(op, y, noise.std.to(y.real.dtype) ** -2)
    if isinstance(noise, GaussianNoise):
        return GaussianFidelity(op, y, noise.std)
    if isinstance(noise, PoissonNoise):
        return PoissonFidelity(op, y, noise.i0, noise.mu, noise.weight_box)
    raise TypeError(f"unknown noise model {noise!r}")
