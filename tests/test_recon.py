"""Classical solvers: exact least squares, agreement of two algorithms on one objective, and gains over
the baseline on small problems."""

import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from wavepatch.fidelity import GaussianFidelity
from wavepatch.linalg import cgls
from wavepatch.methods import get_method, names
from wavepatch.metrics import psnr
from wavepatch.physics.ct import ParallelBeamCT
from wavepatch.recon.admm import admm_tv, pnp_admm
from wavepatch.recon.denoisers import tv_denoiser, wavelet_denoiser
from wavepatch.recon.fista import fista_tv, l1_wavelet
from wavepatch.recon.red import red
from wavepatch.recon.tv import tv_norm
from wavepatch.run import reconstruct
from wavepatch.tasks import TaskOptions, make_task
from wavepatch.volume_tasks import VOLUME_TASKS
from wavepatch.wavelets import wavelet_shrink


def phantom(n):
    return torch.from_numpy(resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)).float()[None, None]


def dense_matrix(op, n):
    eye = torch.eye(n * n, dtype=torch.float64).reshape(n * n, 1, n, n)
    return op.A(eye).reshape(n * n, -1).T


def test_cgls_is_least_squares():
    n = 8
    op = ParallelBeamCT(n, 12)
    a = dense_matrix(op, n)
    y = torch.randn(1, 1, 12, op.n_detectors, dtype=torch.float64)
    x = cgls(op, y, n_iter=200)
    ref = torch.linalg.lstsq(a, y.reshape(-1, 1), driver="gelsd").solution
    assert torch.allclose(x.reshape(-1), ref.reshape(-1), atol=1e-6)


def objective(op, y, x, lam):
    lip = op.norm() ** 2
    return float(0.5 * ((op.A(x) - y) ** 2).sum() / lip + lam * tv_norm(x).sum())


def test_fista_tv_and_admm_tv_minimise_the_same_objective():
    n, lam = 32, 2e-3
    op = ParallelBeamCT(n, 12)
    y = op.A(phantom(n).double())
    x0 = op.fbp(y)
    fidelity = GaussianFidelity(op, y)
    a = fista_tv(fidelity, lam=lam, n_iter=400, x0=x0, tv_iter=50, nonnegative=False)
    b = admm_tv(fidelity, lam=lam, rho=0.05, n_iter=300, x0=x0, cg_iter=20, nonnegative=False)
    fa, fb, f0 = objective(op, y, a, lam), objective(op, y, b, lam), objective(op, y, x0, lam)
    assert fa < f0 and fb < f0
    assert abs(fa - fb) / fa < 0.02, (fa, fb)
    assert float((a - b).abs().mean()) < 0.01


def test_tv_methods_beat_fbp_on_sparse_view_ct():
    n = 64
    op = ParallelBeamCT(n, 12)
    x = phantom(n)
    y = op.A(x)
    base = float(psnr(op.fbp(y, "hann").clamp(0, 1), x))
    fidelity = GaussianFidelity(op, y)
    for rec in (fista_tv(fidelity, lam=1e-4, n_iter=100, x0=op.fbp(y)),
                admm_tv(fidelity, lam=1e-4, n_iter=50, x0=op.fbp(y))):
        assert float(psnr(rec.clamp(0, 1), x)) > base + 5


def test_wavelet_shrink_with_zero_threshold_is_identity():
    v = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    assert torch.equal(wavelet_shrink(v, 0.0, "db4", shift=(3, 5)), v)
    assert torch.allclose(wavelet_shrink(v, 1e-12, "db4", shift=(3, 5)), v, atol=1e-10)  # perfect reconstruction


def test_l1_wavelet_inpainting_improves_on_masked_image():
    n = 64
    task = make_task("inpaint", n, TaskOptions(keep=0.5))
    x = phantom(n)
    y = task.simulate(x, torch.Generator().manual_seed(0))
    rec = l1_wavelet(task.fidelity(y), lam=3e-3, n_iter=100, x0=task.baseline(y))
    assert float(psnr(rec.clamp(0, 1), x)) > float(psnr(task.baseline(y), x)) + 5


@pytest.mark.parametrize("denoiser", [tv_denoiser, wavelet_denoiser])
def test_pnp_and_red_improve_deblurring(denoiser):
    n = 64
    task = make_task("deblur", n, TaskOptions(kernel="gaussian", noise=0.01))
    x = phantom(n)
    y = task.simulate(x, torch.Generator().manual_seed(0))
    base = float(psnr(y.clamp(0, 1), x))
    fidelity = task.fidelity(y)
    a = pnp_admm(fidelity, denoiser, sigma=0.005, rho=0.1, n_iter=20, x0=y)
    b = red(fidelity, denoiser, sigma=0.005, lam=0.1, n_iter=40, x0=y)
    assert float(psnr(a.clamp(0, 1), x)) > base + 1.5
    assert float(psnr(b.clamp(0, 1), x)) > base + 1.5


def test_resolve_applies_task_defaults_and_overrides():
    admm = get_method("admm-tv")
    assert admm.resolve("ct-parallel")["lam"] == 1e-4 and admm.resolve("mri")["lam"] == 3e-4
    p = admm.resolve("ct-parallel", {"lam": "0.01", "n_iter": "7"})
    assert p["lam"] == 0.01 and p["n_iter"] == 7 and p["rho"] == 0.05
    assert get_method("pnp-admm").resolve("ct-parallel", {"denoiser": "learned"})["sigma"] == 0.03  # its variant


BAD = {"unknown": {"bogus": "1"}, "type": {"n_iter": "many", "lam": "small", "rho": "x", "sigma": "y",
                                             "denoiser": "bm3d", "beta": "big", "restarts": "2.5", "er_iter": "x",
                                             "shrinkwrap": "yes", "guard": "wide", "steps": "many", "patch": "x",
                                             "batch": "2.5", "depth": "deep", "width": "wide", "lr": "fast",
                                             "unrolls": "many", "validation": "half", "start": "tv",
                                             "splits": "few"},
       "range": {"n_iter": "-3", "lam": "-1", "rho": "0", "sigma": "0", "denoiser": "tv2", "beta": "0",
                 "restarts": "0", "er_iter": "-1", "shrinkwrap": "maybe", "guard": "17", "steps": "0", "patch": "4",
                 "batch": "0", "depth": "1", "width": "0", "lr": "0", "unrolls": "0", "validation": "0.6",
                 "start": "fbp", "splits": "0"}}


@pytest.mark.parametrize("method", names("classical"))
def test_bad_parameters_are_refused_naming_the_parameter(method):
    entry = get_method(method)
    task = entry.tasks[0] if entry.tasks else "ct-parallel"
    with pytest.raises(ValueError, match="no parameter 'bogus'"):
        entry.resolve(task, BAD["unknown"])
    params = [p.name for p in entry.params]
    if not params:  # fbp / adjoint: any --param is refused
        with pytest.raises(ValueError, match=f"{method!r} has no parameter 'n_iter'"):
            entry.resolve(task, {"n_iter": "3"})
    for name in params:
        for kind in ("type", "range"):
            with pytest.raises(ValueError, match=f"{method} parameter {name} must be"):
                entry.resolve(task, {name: BAD[kind][name]})
    if "n_iter" in params:
        with pytest.raises(ValueError, match="n_iter must be int"):
            entry.resolve("ct-parallel", {"n_iter": "2.5"})


@pytest.mark.parametrize("method", [m for m in names("classical")  # smore (zsr): tests/test_zsr_selfsup.py
                                    if not (get_method(m).tasks and set(get_method(m).tasks) <= set(VOLUME_TASKS))])
def test_every_method_runs_on_every_task_family(method):
    n = 32
    x = phantom(n)
    families = ("phase-retrieval",) if method == "hio" else ("ct-parallel", "mri", "inpaint")  # hio: nonlinear only
    entry = get_method(method)
    for name in entry.tasks or families:  # ldct-metric: low-dose CT only
        task = make_task(name, n, TaskOptions(views=10))
        y = task.simulate(x, torch.Generator().manual_seed(0))
        small = {"n_iter": "3"} if any(p.name == "n_iter" for p in entry.params) else None
        rec = reconstruct(task, y, method, small)
        assert rec.shape == x.shape and torch.isfinite(rec).all()


def test_cgls_stays_stable_past_convergence_on_a_rank_deficient_mri_operator():
    # 1-D undersampling leaves a null space; float32 CGLS iterated long past convergence used to blow up in it.
    gen = torch.Generator().manual_seed(0)
    task = make_task("mri", 64, TaskOptions(), gen)
    x = phantom(64).float()
    y = task.op.A(x)
    x_ls = cgls(task.op, y, n_iter=200)
    assert torch.allclose(x_ls, task.op.A_dagger(y), atol=1e-4)
