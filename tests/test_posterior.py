"""Posterior samplers on an analytic problem: Gaussian prior N(mu, Sigma), dense linear operator, Gaussian noise.

The exact posterior is Gaussian with Sigma_p = (Sigma^-1 + A^T A / s^2)^-1 and
mu_p = Sigma_p (Sigma^-1 mu + A^T y / s^2) (noiseless: the prior conditioned on A x = y), and the exact
denoiser is the Wiener filter. Annealed Langevin samples it exactly in the limit; the others are
approximations, tested for what they promise (see each test). The data fidelities they receive are tested
against autograd and closed-form solutions.
"""

from __future__ import annotations

import math

import pytest
import torch

from wavepatch.fidelity import GaussianFidelity, GaussianNoise, PoissonFidelity, WeightedGaussianFidelity, make_fidelity
from wavepatch.physics.base import LinearOperator
from wavepatch.physics.ct import ParallelBeamCT
from wavepatch.physics.mri import SingleCoilMRI, uniform_1d_mask
from wavepatch.physics.noise import counts_to_line_integrals
from wavepatch.sampling import posterior as P
from wavepatch.sampling.unconditional import geometric_sigmas, karras_sigmas
from wavepatch.tasks import make_task

B = 2000


class Dense(LinearOperator):
    closed_form_dagger = True  # A_dagger is the exact pseudo-inverse: MCG / DDNM project onto A x = y exactly

    def __init__(self, m: torch.Tensor) -> None:
        self.m = m
        self.image_shape = (1, 3, 3)

    def A(self, x):  # noqa: N802
        return (x.reshape(x.shape[0], -1).to(self.m.dtype) @ self.m.T).reshape(x.shape[0], 1, -1)

    def A_adjoint(self, y):  # noqa: N802
        return (y.reshape(y.shape[0], -1) @ self.m).reshape(y.shape[0], 1, 3, 3)

    def A_dagger(self, y):  # noqa: N802
        return (y.reshape(y.shape[0], -1) @ torch.linalg.pinv(self.m).T).reshape(y.shape[0], 1, 3, 3)


def problem(noise_std: float, iso_std: float | None = None):
    """iso_std: the isotropic prior N(mu, iso_std^2 I) instead of the correlated one."""
    torch.manual_seed(0)
    idx = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij"), -1).reshape(-1, 2).double()
    cov = 0.04 * torch.exp(-torch.cdist(idx, idx) / 1.5) + 1e-3 * torch.eye(9, dtype=torch.float64)
    if iso_std is not None:
        cov = iso_std**2 * torch.eye(9, dtype=torch.float64)
    mu = torch.linspace(0.2, 0.8, 9, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(cov)

    def denoise(x, s):
        gain = evecs @ torch.diag(evals / (evals + float(s) ** 2)) @ evecs.T
        return (mu + (x.reshape(x.shape[0], -1).double() - mu) @ gain.T).reshape(x.shape).to(x.dtype)

    m = torch.randn(4, 9, dtype=torch.float64) / 3
    x_true = mu + torch.linalg.cholesky(cov) @ torch.randn(9, dtype=torch.float64)
    y1 = m @ x_true + noise_std * torch.randn(4, dtype=torch.float64)
    if noise_std > 0:
        cov_p = torch.linalg.inv(torch.linalg.inv(cov) + m.T @ m / noise_std**2)
        mu_p = cov_p @ (torch.linalg.solve(cov, mu) + m.T @ y1 / noise_std**2)
    else:
        gain = cov @ m.T @ torch.linalg.inv(m @ cov @ m.T)
        mu_p, cov_p = mu + gain @ (y1 - m @ mu), cov - gain @ m @ cov
    return denoise, Dense(m), y1.reshape(1, 1, 4).expand(B, 1, 4), mu, mu_p, cov_p


def errors(x, op, y, mu, mu_p, cov_p):
    f = x.reshape(B, -1).double()
    mean_err = float((f.mean(0) - mu_p).norm() / (mu - mu_p).norm())  # 1 = no better than the prior mean
    cov_err = float(torch.linalg.norm(torch.cov(f.T) - cov_p) / torch.linalg.norm(cov_p))
    resid = float((op.A(x) - y).flatten(1).norm(dim=1).mean())
    return mean_err, cov_err, resid


def start(sigma, gen):
    return sigma * torch.randn(B, 1, 3, 3, dtype=torch.float64, generator=gen)


@pytest.mark.parametrize("likelihood", ["pinv", "isotropic"])
@pytest.mark.parametrize("noise_std", [0.05, 0.0])
def test_annealed_langevin_samples_the_exact_posterior(noise_std, likelihood):
    # both noise-level likelihoods tend to the true one as sigma -> 0, so the chain ends on the exact posterior
    # (cg=5: A has rank 4, so the damped normal equations have 5 distinct eigenvalues and CGLS is exact)
    denoise, op, y, mu, mu_p, cov_p = problem(noise_std)
    gen = torch.Generator().manual_seed(1)
    x = P.langevin(denoise, GaussianFidelity(op, y, std=noise_std), start(20.0, gen),
                   geometric_sigmas(100, 0.002, 20.0), n_inner=10, likelihood=likelihood, cg=5, generator=gen)
    mean_err, cov_err, _ = errors(x, op, y, mu, mu_p, cov_p)
    assert mean_err < 0.15 and cov_err < 0.15


@pytest.mark.parametrize("noise_std", [0.05, 0.0])
def test_predictor_corrector_approximates_the_posterior(noise_std):
    denoise, op, y, mu, mu_p, cov_p = problem(noise_std)
    gen = torch.Generator().manual_seed(1)
    x = P.predictor_corrector(denoise, GaussianFidelity(op, y, std=noise_std), start(20.0, gen),
                              karras_sigmas(100, 0.002, 20.0), generator=gen)
    mean_err, cov_err, _ = errors(x, op, y, mu, mu_p, cov_p)
    assert mean_err < 0.3 and cov_err < 0.4


@pytest.mark.parametrize("name", ["dps", "dps-linesearch", "padis", "padis-pinv", "mcg", "mcg-gradient", "pigdm"])
def test_gradient_samplers_move_to_the_posterior_and_fit_the_data(name):
    # DPS-type samplers are approximations (the Tweedie-point likelihood ignores Cov[x0 | x_t]); they must get
    # the posterior mean far better than the prior mean and fit the noiseless data.
    denoise, op, y, mu, mu_p, cov_p = problem(0.0)
    gen = torch.Generator().manual_seed(1)
    fidelity = GaussianFidelity(op, y)
    if name == "dps":
        x = P.dps(denoise, fidelity, start(20.0, gen), karras_sigmas(100, 0.002, 20.0), step="normalized",
                  zeta=0.033, generator=gen)
    elif name == "dps-linesearch":  # the default step
        x = P.dps(denoise, fidelity, start(20.0, gen), karras_sigmas(100, 0.002, 20.0), generator=gen)
    elif name == "padis":
        x = P.padis(denoise, fidelity, start(20.0, gen), geometric_sigmas(30, 0.002, 20.0), n_inner=5, zeta=0.033,
                    guidance="gradient", eps=0.5, generator=gen)
    elif name == "padis-pinv":
        x = P.padis(denoise, fidelity, start(20.0, gen), geometric_sigmas(30, 0.002, 20.0), n_inner=5, generator=gen)
    elif name == "pigdm":
        x = P.pigdm(denoise, fidelity, start(20.0, gen), karras_sigmas(100, 0.002, 20.0), generator=gen)
    elif name == "mcg":
        x = P.mcg(denoise, fidelity, start(20.0, gen), karras_sigmas(100, 0.002, 20.0), generator=gen)
    else:
        x = P.mcg(denoise, fidelity, start(20.0, gen), karras_sigmas(100, 0.002, 20.0), zeta=0.033,
                  guidance="gradient", generator=gen)
    mean_err, cov_err, resid = errors(x, op, y, mu, mu_p, cov_p)
    # DPS' line search fits the data at every level (measured 0.165; the normalised step 0.10 with a 30x
    # larger residual)
    assert mean_err < (0.2 if name == "dps-linesearch" else 0.15) and cov_err < 0.6
    # MCG projects onto A x = y; PiGDM's last guided estimate is a pseudo-inverse step with J ~ I at sigma_min
    # (DPS' line search: one steepest-descent step per level, measured 0.0024 against the normalised step's 0.07)
    assert resid < (1e-6 if name.startswith("mcg") else 1e-3 if name in ("pigdm", "padis-pinv")
                    else 0.01 if name == "dps-linesearch" else 0.1)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dps_linesearch_on_noisy_data_stops_short_of_fitting_the_noise(seed):
    # the normalised step keeps moving by zeta per pixel and fits the noise; the line search is damped by the
    # estimate's uncertainty r(s) -> 0, so it lands closer to the posterior mean (seed 1 measured: 0.19 against 0.31)
    denoise, op, y, mu, mu_p, cov_p = problem(0.05)
    fidelity = GaussianFidelity(op, y, std=0.05)
    err, resid = {}, {}
    for step in ("normalized", "linesearch"):
        gen = torch.Generator().manual_seed(seed)
        x = P.dps(denoise, fidelity, start(20.0, gen), karras_sigmas(100, 0.002, 20.0), zeta=0.033, step=step,
                  generator=gen)
        err[step], _, resid[step] = errors(x, op, y, mu, mu_p, cov_p)
    assert err["linesearch"] < 0.3 and err["linesearch"] < err["normalized"]
    assert 0.01 < resid["linesearch"] < 0.2  # 4 entries of std 0.05: ||n|| ~ 0.1
    with pytest.raises(ValueError, match="step must be"):
        P.dps(denoise, fidelity, start(20.0, gen), karras_sigmas(3, 0.002, 20.0), step="exact")


def test_mcg_on_noisy_data_takes_map_steps_instead_of_copying_the_noise():
    # exact projections would put A x = y (noise included) on every sample; the MAP steps leave a residual of
    # the noise's size and land closer to the posterior mean (measured: 0.24 against 0.34 of the prior's distance)
    denoise, op, y, mu, mu_p, cov_p = problem(0.05)
    gen = torch.Generator().manual_seed(1)
    x = P.mcg(denoise, GaussianFidelity(op, y, std=0.05), start(20.0, gen), karras_sigmas(100, 0.002, 20.0), cg=5,
              generator=gen)
    mean_err, cov_err, resid = errors(x, op, y, mu, mu_p, cov_p)
    assert mean_err < 0.3 and cov_err < 0.3 and 0.01 < resid < 0.2  # 4 entries of std 0.05: ||n|| ~ 0.1


@pytest.mark.parametrize("noise_std", [0.0, 0.05])
def test_pigdm_samples_the_posterior_of_an_isotropic_gaussian_prior(noise_std):
    # Under N(mu, c^2 I) the denoiser's Jacobian is isotropic, x0 | x_s is exactly N(D(x_s), r^2 I), and the
    # guided estimate is the exact E[x0 | x_s, y] (the line search lands on PiGDM's weight); the ancestral chain
    # then samples the posterior up to its discretisation. A wrong r (c) misweights noisy data.
    c = 0.2
    denoise, op, y, mu, mu_p, cov_p = problem(noise_std, iso_std=c)
    gen = torch.Generator().manual_seed(1)
    fidelity = GaussianFidelity(op, y, std=noise_std)
    x = P.pigdm(denoise, fidelity, start(20.0, gen), karras_sigmas(200, 0.002, 20.0), c=c, cg=5, generator=gen)
    mean_err, cov_err, resid = errors(x, op, y, mu, mu_p, cov_p)
    assert mean_err < 0.05 and cov_err < 0.15
    if noise_std == 0:
        assert resid < 1e-6
    else:
        wrong = P.pigdm(denoise, fidelity, start(20.0, gen), karras_sigmas(200, 0.002, 20.0), c=0.02, cg=5,
                        generator=gen)
        assert errors(wrong, op, y, mu, mu_p, cov_p)[0] > 3 * mean_err


def test_ddnm_is_data_consistent_and_near_the_posterior():
    denoise, op, y, mu, mu_p, cov_p = problem(0.0)
    gen = torch.Generator().manual_seed(1)
    x = P.ddnm(denoise, GaussianFidelity(op, y), start(20.0, gen), karras_sigmas(100, 0.002, 20.0), generator=gen)
    mean_err, cov_err, resid = errors(x, op, y, mu, mu_p, cov_p)
    assert resid < 1e-6 and mean_err < 0.15 and cov_err < 0.4


def test_warm_start_adds_noise_at_the_requested_level():
    x = torch.full((4000, 1, 3, 3), 0.5)
    z = P.warm_start(x, 0.2, torch.Generator().manual_seed(0))
    assert abs(float((z - x).std()) - 0.2) < 0.01


def test_ddnm_with_the_map_data_step_does_not_fit_the_noise():
    # noisy data: the projection x0 - A^+(A x0 - y) fits y exactly (residual 0, i.e. the noise too); the MAP data
    # step fidelity.prox(x0, 1 / s^2) leaves the residual at the noise level and stays near the posterior mean
    noise = 0.05
    denoise, op, y, mu, mu_p, cov_p = problem(noise)
    gen = torch.Generator().manual_seed(1)
    sig = karras_sigmas(100, 0.002, 20.0)
    x = P.ddnm(denoise, GaussianFidelity(op, y, std=noise), start(20.0, gen), sig, eta=1.0, cg=20, generator=gen)
    mean_err, _, resid = errors(x, op, y, mu, mu_p, cov_p)
    hard = P.ddnm(denoise, GaussianFidelity(op, y), start(20.0, gen), sig, eta=1.0, generator=gen)
    mean_err_hard, _, resid_hard = errors(hard, op, y, mu, mu_p, cov_p)
    assert resid_hard < 1e-6
    assert 0.3 * noise * 2 < resid < 3 * noise * 2  # ||noise|| over 4 measurements is ~ 2 sigma
    assert mean_err < 0.15 < mean_err_hard  # 0.05 vs 0.34 here


# --- the data fidelities ------------------------------------------------------------------------------------------

def low_dose(gen):
    """Post-log CT data of a 16 x 16 image (float64): (op, x, y, counts, i0, mu)."""
    op = ParallelBeamCT(16, 12)
    x = (0.3 + 0.1 * torch.rand(1, 1, 16, 16, generator=gen)).double()
    i0, mu = 1e4, 0.05
    counts = torch.poisson(i0 * torch.exp(-mu * op.A(x)), generator=gen)
    return op, x, counts_to_line_integrals(counts, i0) / mu, counts, i0, mu


def test_noised_poisson_data_keep_the_measured_weights():
    # MCG's noised data y + s A z at s = 10 would give counts I0 exp(-mu y) of 0 or inf; noised() keeps the
    # measured weights mu^2 c and the prox is the weighted least-squares step toward the new y
    gen = torch.Generator().manual_seed(0)
    op, x, y, counts, i0, mu = low_dose(gen)
    fidelity = PoissonFidelity(op, y, i0, mu)
    y_t = y + 10.0 * op.A(torch.randn(x.shape, generator=gen, dtype=x.dtype))
    noised = fidelity.noised(y_t)
    assert type(noised) is WeightedGaussianFidelity and torch.equal(noised.y, y_t)
    assert torch.equal(noised.weights, fidelity.weights) and bool(torch.isfinite(noised.prox(x, 1.0)).all())
    assert torch.equal(GaussianFidelity(op, y, std=0.1).noised(y_t).y, y_t)


def test_poisson_nll_gradient_and_deviance():
    gen = torch.Generator().manual_seed(0)
    op, x, y, counts, i0, mu = low_dose(gen)
    fidelity = PoissonFidelity(op, y, i0, mu)
    assert torch.allclose(fidelity.counts, counts, rtol=1e-10)
    xg = (x + 0.01 * torch.randn(x.shape, generator=gen, dtype=x.dtype)).requires_grad_(True)
    (grad,) = torch.autograd.grad(fidelity.nll(xg).sum(), xg)
    lam = i0 * torch.exp(-mu * op.A(xg.detach()))
    assert torch.allclose(grad, mu * op.A_adjoint(counts - lam), rtol=1e-6, atol=1e-8)
    assert torch.allclose(grad, fidelity.grad(xg.detach()), rtol=1e-6, atol=1e-8)
    # residual = deviance = 2 (NLL - NLL at lambda = counts): constant offset from 2 NLL
    diffs = [float(fidelity.residual(v) - 2 * fidelity.nll(v)) for v in (xg.detach(), x)]
    assert abs(diffs[0] - diffs[1]) < 1e-6 * abs(diffs[0])


def _fidelity(kind: str, std: float, gen: torch.Generator):
    """A fidelity on a real CT-like operator, a complex MRI one, or post-log CT data (float64), and a test point."""
    if kind == "poisson":
        op, x, y, _, i0, mu = low_dose(gen)
        return PoissonFidelity(op, y, i0, mu), x + 0.01 * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    op = ParallelBeamCT(16, 12) if kind == "ct" else SingleCoilMRI(uniform_1d_mask(16, 2.0), (1, 16, 16))
    x = torch.rand(2, 1, 16, 16, generator=gen, dtype=torch.float64)
    ax = op.A(torch.rand(2, 1, 16, 16, generator=gen, dtype=torch.float64))
    noise = torch.randn(ax.shape, generator=gen, dtype=torch.float64)
    y = ax + 0.05 * (noise.to(ax.dtype) if not ax.is_complex() else torch.complex(noise, noise.flip(0)))
    if std == "weighted":  # a different std per entry
        stds = 0.02 + 0.1 * torch.rand(y.shape, generator=gen, dtype=torch.float64)
        fidelity = make_fidelity(op, y, GaussianNoise(stds))
        assert isinstance(fidelity, WeightedGaussianFidelity) and torch.allclose(fidelity.weights, stds**-2)
        return fidelity, x
    return GaussianFidelity(op, y, std=std), x


@pytest.mark.parametrize("kind,std", [("ct", 0.0), ("ct", 0.05), ("ct", "weighted"), ("mri", 0.0), ("mri", 0.05),
                                      ("mri", "weighted"), ("poisson", None)])
def test_grad_is_the_gradient_of_half_the_residual(kind, std):
    fidelity, x = _fidelity(kind, std, torch.Generator().manual_seed(3))
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad((fidelity.residual(xg) / 2).sum(), xg)
    g = fidelity.grad(x)
    assert g.shape == x.shape and not g.is_complex()
    assert torch.allclose(g, ref, rtol=1e-8, atol=1e-10 * float(ref.abs().max()))


@pytest.mark.parametrize("kind,std", [("ct", 0.0), ("ct", 0.05), ("ct", "weighted"), ("mri", 0.05),
                                      ("poisson", None)])
def test_newton_length_minimises_the_data_term_along_the_gradient(kind, std):
    # DPS' line search (step="linesearch") starts from this length: exact 1-D minimiser of a quadratic residual
    # (Gaussian), and the Newton step of the convex Poisson deviance (below half and twice its length)
    fidelity, x = _fidelity(kind, std, torch.Generator().manual_seed(4))
    g = fidelity.grad(x)
    t = P._newton_length(fidelity, x, g)
    assert t.shape == (x.shape[0],) + (1,) * (x.ndim - 1) and bool((t > 0).all())
    f = [fidelity.residual(x - k * t * g) for k in (0.0, 1.0, 0.5, 2.0, 0.95, 1.05)]
    assert bool((f[1] < f[0]).all() and (f[1] < f[2]).all() and (f[1] < f[3]).all())
    if kind != "poisson":
        assert bool((f[1] <= f[4]).all() and (f[1] <= f[5]).all())
    assert bool((P._newton_length(fidelity, x, torch.zeros_like(g)) == 0).all())


@pytest.mark.parametrize("kind", ["gaussian-noiseless", "gaussian", "weighted", "poisson"])
def test_prox_is_the_weighted_ridge_solution(kind):
    # argmin_x residual(x)/2 + weight/2 ||x - x0||^2, residual = (A x - y)^T W (A x - y): W = I / std^2 (std > 0),
    # I (noiseless), mu^2 counts (Poisson: the post-log weighted least-squares model)
    _, op, y, *_ = problem(0.05)
    gen = torch.Generator().manual_seed(2)
    x0 = torch.rand(3, 1, 3, 3, generator=gen, dtype=torch.float64)
    y3 = y[:3] + 0.1 * torch.randn(3, 1, 4, generator=gen, dtype=torch.float64)
    if kind == "poisson":
        fidelity = PoissonFidelity(op, y3, i0=10.0, mu=0.5)
        w = fidelity.weights
    elif kind == "weighted":
        w = 1.0 + 9.0 * torch.rand(y3.shape, generator=gen, dtype=torch.float64)
        fidelity = WeightedGaussianFidelity(op, y3, w)
    else:
        std = 0.05 if kind == "gaussian" else 0.0
        fidelity = GaussianFidelity(op, y3, std=std)
        w = torch.full_like(y3, 1 / std**2 if std else 1.0)
    weight = 0.3 / 0.05**2 if kind == "gaussian" else 0.3
    x = fidelity.prox(x0, weight, n_iter=50)
    for b in range(3):
        wm = torch.diag(w[b, 0])
        lhs = op.m.T @ wm @ op.m + weight * torch.eye(9, dtype=torch.float64)
        rhs = op.m.T @ wm @ y3[b, 0] + weight * x0[b].flatten()
        assert torch.allclose(x[b].flatten(), torch.linalg.solve(lhs, rhs), atol=1e-8)


@pytest.mark.parametrize("name", ["mri", "inpaint"])
def test_project_fits_the_data_exactly_and_is_idempotent(name):
    gen = torch.Generator().manual_seed(4)
    task = make_task(name, 32, generator=torch.Generator().manual_seed(0))
    y = task.op.A(torch.rand(1, 1, 32, 32, generator=gen, dtype=torch.float64))
    fidelity = task.fidelity(y)
    assert fidelity.noiseless
    x = fidelity.project(torch.rand(1, 1, 32, 32, generator=gen, dtype=torch.float64))
    assert float(fidelity.residual(x)) < 1e-20 * float(fidelity.residual(torch.zeros_like(x)))
    assert torch.allclose(fidelity.project(x), x, atol=1e-12)


def test_project_refuses_noisy_data_and_expand_repeats_the_measurement():
    gen = torch.Generator().manual_seed(5)
    op, x, y, _, i0, mu = low_dose(gen)
    for noisy in (GaussianFidelity(op, y, std=0.05), PoissonFidelity(op, y, i0, mu)):
        with pytest.raises(ValueError, match="noisy"):
            noisy.project(x)
        big = noisy.expand(3)
        assert type(big) is type(noisy) and big.y.shape == (3, *y.shape[1:]) and torch.equal(big.y[2], y[0])
        assert torch.allclose(big.residual(x.expand(3, -1, -1, -1)), noisy.residual(x).expand(3))
        assert big.expand(3) is big
        with pytest.raises(ValueError, match="cannot expand"):
            big.expand(4)
    assert GaussianFidelity(op, y, std=0.05).expand(3).std == 0.05


@pytest.mark.parametrize("noise_std", [0.0, 0.05])
def test_pinv_likelihood_gradient_is_that_of_the_noise_level_gaussian(noise_std):
    # (prox(x, 1/s^2) - x) / s^2 = A^T (V + s^2 A A^T)^-1 (y - A x): the gradient of log N(y; A x, V + s^2 A A^T)
    denoise, op, y, *_ = problem(noise_std)
    fidelity = GaussianFidelity(op, y[:3], std=noise_std)
    x = torch.randn(3, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    s, m = 0.3, op.m
    cov = noise_std**2 * torch.eye(4, dtype=torch.float64) + s**2 * m @ m.T
    want = (torch.linalg.solve(cov, (y[:3].reshape(3, 4) - x.reshape(3, 9) @ m.T).T).T @ m).reshape(x.shape)
    got = P._posterior_score(x, x, fidelity, s, "pinv", cg=50)  # denoised = x: the prior term is 0
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="likelihood"):
        P._posterior_score(x, x, fidelity, s, "bogus")


def test_poisson_weights_do_not_bias_the_weighted_fit():
    # PWLS on rays that all see the same line integral p (A = ones): the fit is the weighted mean of the post-log
    # data. Weighting each bin by its own count leans low by about 1 / lambda (a count that fluctuated up has a
    # low post-log value and a high weight); PoissonFidelity's weights, from the data averaged over 3 x 3 bins,
    # cut that bias below a fifth.
    lam, i0, mu = 20.0, 1e4, 1.0
    p = math.log(i0 / lam)
    gen = torch.Generator().manual_seed(0)
    counts = torch.poisson(torch.full((400, 1, 32, 32), lam, dtype=torch.float64), generator=gen)
    y = counts_to_line_integrals(counts, i0) / mu
    own = counts + 0.5
    bias_own = float((own * y).sum() / own.sum()) - p
    fidelity = PoissonFidelity(ParallelBeamCT(8, 4), y, i0, mu)
    bias = float((fidelity.weights * y).sum() / fidelity.weights.sum()) - p
    assert -1.2 / lam < bias_own < -0.8 / lam
    assert abs(bias) < 0.2 * abs(bias_own)
    assert float(y.mean()) - p == pytest.approx(0.0, abs=0.1 / lam)  # the unweighted mean: the log is unbiased
