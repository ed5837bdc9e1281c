"""Matrix-free CT projector: the same linear maps as the sparse matrix (forward, adjoint, FBP), exact adjoint,
autograd, batches, the automatic choice by memory budget, and the clinical geometry that the matrix cannot hold.
Each check runs with both CPU kernels: the compiled one (numba, the default) and ``grid_sample`` (the path
other devices take)."""

from __future__ import annotations

import pytest
import torch

from wavepatch.physics import ray_free
from wavepatch.physics.base import adjoint_mismatch
from wavepatch.physics.ct import FanBeamCT, ParallelBeamCT, choose_projector, estimated_matrix_mb

GEOMETRIES = [(ParallelBeamCT, {"n_views": 17}), (ParallelBeamCT, {"n_views": 8, "n_detectors": 40}),
              (FanBeamCT, {"n_views": 15})]


@pytest.fixture(params=[True, False], ids=["compiled", "grid_sample"])
def kernel(request, monkeypatch):
    monkeypatch.setattr(ray_free, "COMPILED_CPU", request.param)
    return request.param


@pytest.mark.parametrize("cls, kw", GEOMETRIES)
def test_matrix_free_equals_matrix(cls, kw, kernel):
    """Same discretisation: relative difference ~1e-8 in float64 (the matrix stores float32 weights)."""
    n = 40
    dense, free = cls(n, projector="matrix", **kw), cls(n, projector="matrix-free", **kw)
    assert (dense.projector, free.projector, free.matrix) == ("matrix", "matrix-free", None)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, n, n, generator=g, dtype=torch.float64)
    y = dense.A(x)
    for a, b in ((y, free.A(x)), (dense.A_adjoint(y), free.A_adjoint(y)), (dense.fbp(y), free.fbp(y))):
        assert float((a - b).norm() / a.norm()) < 1e-6


@pytest.mark.parametrize("cls, kw", GEOMETRIES)
def test_matrix_free_adjoint_is_exact(cls, kw, kernel):
    op = cls(40, projector="matrix-free", **kw)
    assert adjoint_mismatch(op, dtype=torch.float64) < 1e-12
    assert adjoint_mismatch(op, dtype=torch.float32) < 1e-5


@pytest.mark.parametrize("cls, kw", GEOMETRIES)
def test_compiled_kernel_equals_grid_sample_in_float32(cls, kw, monkeypatch):
    """The two CPU kernels agree on float32 data to float32 rounding (positions: float64 against float32)."""
    op = cls(64, projector="matrix-free", **kw)
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    out = {}
    for compiled in (True, False):
        monkeypatch.setattr(ray_free, "COMPILED_CPU", compiled)
        y = op.A(x)
        out[compiled] = (y, op.A_adjoint(y))
    for a, b in zip(out[True], out[False], strict=True):
        assert a.dtype == b.dtype == torch.float32
        assert float((a - b).norm() / b.norm()) < 2e-5


def test_matrix_free_autograd_and_second_order(kernel):
    op = ParallelBeamCT(24, n_views=7, projector="matrix-free")
    x = torch.rand(2, 1, 24, 24, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 1, 7, op.n_detectors, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: op.A(v), (x,), eps=1e-6, atol=1e-7)
    loss = 0.5 * (op.A(x) - y).pow(2).sum()
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    assert torch.allclose(grad, op.A_adjoint(op.A(x) - y), atol=1e-10)
    (hvp,) = torch.autograd.grad(grad, x, torch.ones_like(x))  # A^T A 1: through the adjoint's own backward
    assert torch.allclose(hvp, op.A_adjoint(op.A(torch.ones_like(x))), atol=1e-10)
    # FBP stays differentiable (a sinogram that needs a gradient takes the torch path) and equals the kernel's
    sino = op.A(x).detach().requires_grad_(True)
    recon = op.fbp(sino)
    (g,) = torch.autograd.grad(recon.pow(2).sum(), sino)
    assert g.shape == sino.shape and torch.isfinite(g).all()
    assert torch.allclose(recon.detach(), op.fbp(sino.detach()), atol=1e-10)


def test_projector_choice_by_budget(monkeypatch):
    assert estimated_matrix_mb(512, 720) > 8000  # the AAPM geometry: ~9 GB of matrices
    assert choose_projector("auto", 512, 720) == "matrix-free"
    assert choose_projector("auto", 256, 60) == "matrix"
    monkeypatch.setenv("WAVEPATCH_RAY_MATRIX_MB", "1")
    assert ParallelBeamCT(64, n_views=10).projector == "matrix-free"
    assert choose_projector("matrix", 512, 720) == "matrix"
    with pytest.raises(ValueError, match="projector must be one of"):
        choose_projector("astra", 64, 10)


def test_clinical_geometry_builds_and_applies():
    """ParallelBeamCT(512, n_views=720) (the seeds' AAPM geometry) builds at once and applies on this machine."""
    op = ParallelBeamCT(512, n_views=720)
    assert op.projector == "matrix-free"
    x = torch.zeros(1, 1, 512, 512)
    x[..., 200:300, 150:400] = 1.0
    y = op.A(x)
    assert y.shape == (1, 1, 720, op.n_detectors)
    # a 100 x 250 rectangle: at 0 degrees the rays along rows cross 100 pixels of it
    assert float(y[0, 0, 0].max()) == pytest.approx(100.0, rel=0.02)
    back = op.A_adjoint(y)
    assert back.shape == x.shape and float(back.min()) >= 0
