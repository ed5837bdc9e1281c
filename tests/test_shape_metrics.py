"""Point-cloud set metrics (wavepatch.metrics.shapes): hand-worked values, brute force and POT as references."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

from wavepatch.metrics.shapes import (
    chamfer_distance,
    chamfer_matrix,
    coverage,
    emd_matrix,
    minimum_matching_distance,
    nearest_neighbours,
    one_nn_accuracy,
    set_metrics,
)


def _line(*xs: float) -> torch.Tensor:
    """Points on the x axis as a (P, 3) float64 cloud."""
    return torch.tensor([[x, 0.0, 0.0] for x in xs], dtype=torch.float64)


def _clouds(n: int, p: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """n random anisotropic Gaussian clouds (n, p, 3) float32: per-cloud random scales so the shapes differ."""
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.5, 1.5, size=(n, 1, 3))
    x = rng.standard_normal((n, p, 3)) * scales
    x[..., 0] += shift
    return torch.tensor(x, dtype=torch.float32)


def _brute_chamfer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((len(a), len(b)))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            d = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
            out[i, j] = d.min(1).mean() + d.min(0).mean()
    return out


def _pot_emd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((len(a), len(b)))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            w = np.full(len(x), 1.0 / len(x))
            out[i, j] = ot.emd2(w, w, ot.dist(x, y, metric="euclidean"))
    return out


# ---- distances between two clouds ------------------------------------------------------------------------------

def test_chamfer_by_hand():
    # X = {0, 1}, Y = {0, 3}: X -> Y nearest squared distances 0, 1 (mean 0.5); Y -> X: 0, (3 - 1)^2 = 4 (mean 2)
    # X = {0, 1, 2}, Y = {0.5}: X -> Y 0.25, 0.25, 2.25 (mean 2.75 / 3); Y -> X 0.25; CD = 7 / 6
    x = _line(0, 1)[None]
    assert chamfer_distance(x, _line(0, 3)[None]).item() == pytest.approx(2.5)
    assert chamfer_distance(_line(0, 1, 2)[None], _line(0.5)[None]).item() == pytest.approx(7 / 6)
    assert chamfer_matrix(_line(0, 1, 2)[None], _line(0.5)[None]).item() == pytest.approx(7 / 6)
    assert chamfer_distance(x, x).item() == 0.0


def test_emd_by_hand():
    # X = {0, 1}, Y = {0.5, 3}: 0 -> 0.5, 1 -> 3 costs 0.5 + 2 = 2.5 (the other bijection 3 + 0.5 = 3.5): EMD = 1.25
    assert emd_matrix(_line(0, 1)[None], _line(0.5, 3)[None]).item() == pytest.approx(1.25)
    # unit square's bottom edge {(0,0), (1,0)} vs top edge {(0,1), (1,1)}: straight up, 1 each (crossing: sqrt 2)
    x = torch.tensor([[[0.0, 0, 0], [1, 0, 0]]])
    y = torch.tensor([[[1.0, 1, 0], [0, 1, 0]]])
    assert emd_matrix(x, y).item() == pytest.approx(1.0)
    # {0, 1, 2} vs {1, 2, 3}: every bijection moves total mass >= 3 along the line, the shift by 1 achieves it
    assert emd_matrix(_line(0, 1, 2)[None], _line(1, 2, 3)[None]).item() == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk", [100, 2**21])  # row blocks smaller than one pair; several clouds per block
def test_chamfer_matrix_matches_brute_force(dtype, chunk):
    a, b = _clouds(5, 40, seed=1).to(dtype), _clouds(7, 23, seed=2).to(dtype)
    ref = _brute_chamfer(a.double().numpy(), b.double().numpy())
    got = chamfer_matrix(a, b, chunk=chunk)
    assert got.dtype == torch.float64 and got.shape == (5, 7)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(got.numpy(), ref, rtol=tol, atol=tol)
    # the symmetric path (b is a) and the aligned pairs agree with the brute force too
    np.testing.assert_allclose(chamfer_matrix(a, a, chunk=chunk).numpy(), _brute_chamfer(a.double().numpy(),
                               a.double().numpy()), rtol=tol, atol=tol)
    np.testing.assert_allclose(chamfer_distance(a, b[:5]).numpy(), np.diag(ref), rtol=tol, atol=tol)


def test_emd_matrix_matches_pot_and_bounds():
    a, b = _clouds(4, 30, seed=3).double(), _clouds(5, 30, seed=4, shift=0.5).double()
    got = emd_matrix(a, b)
    np.testing.assert_allclose(got.numpy(), _pot_emd(a.numpy(), b.numpy()), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(emd_matrix(b, a).numpy(), got.numpy().T, rtol=1e-12)
    # lower bounds: |mean x - phi(x)| <= mean |x - phi(x)| (so the centroid gap), and each point moves at least to
    # its nearest neighbour in the other cloud (so both one-sided mean nearest-neighbour distances)
    d = torch.cdist(a[:, None], b[None])  # (4, 5, P, P)
    nn = torch.maximum(d.amin(3).mean(2), d.amin(2).mean(2))
    gap = (a.mean(1)[:, None] - b.mean(1)[None]).norm(dim=-1)
    assert (got >= nn - 1e-12).all() and (got >= gap - 1e-12).all()
    self_d = emd_matrix(a, a)
    assert torch.equal(self_d, self_d.T) and (self_d.diagonal() == 0).all() and (self_d + torch.eye(4) > 0).all()


# ---- set metrics on hand-built matrices ------------------------------------------------------------------------

def test_cov_mmd_by_hand():
    # rows: generated, columns: reference. g0 -> r0, g1 -> r1, nobody -> r2: COV 2/3; column minima 1, 0.5, 7
    d_gr = torch.tensor([[1.0, 5.0, 9.0], [2.0, 0.5, 7.0]])
    assert nearest_neighbours(d_gr).tolist() == [0, 1]
    assert coverage(d_gr) == pytest.approx(2 / 3)
    assert minimum_matching_distance(d_gr) == pytest.approx(8.5 / 3)
    assert coverage(torch.ones(3, 2)) == 0.5  # all tied: every row picks the first reference


def test_one_nn_accuracy_by_hand():
    # union g0, g1, r0, r1. g0: g1 1, r0 3, r1 0.5 -> r1 (wrong); g1: g0 1, r0 2, r1 6 -> g0 (right);
    # r0: g0 3, g1 2, r1 4 -> g1 (wrong); r1: g0 0.5, g1 6, r0 4 -> g0 (wrong). Accuracy 1/4. Diagonals are ignored.
    d_gg = torch.tensor([[9.0, 1.0], [1.0, 9.0]])
    d_rr = torch.tensor([[0.0, 4.0], [4.0, 0.0]])
    d_gr = torch.tensor([[3.0, 0.5], [2.0, 6.0]])
    assert one_nn_accuracy(d_gg, d_rr, d_gr) == pytest.approx(0.25)
    # ties go to the generated neighbour (the union lists generated clouds first): 2 correct of 3 here
    # g0: g1 1 = r0 1 -> g1 (right); g1: g0 1, r0 2 -> g0 (right); r0: g0 1, g1 2 -> g0 (wrong)
    assert one_nn_accuracy(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.zeros(1, 1),
                           torch.tensor([[1.0], [2.0]])) == pytest.approx(2 / 3)


# ---- set metrics end to end ------------------------------------------------------------------------------------

def test_copies_of_reference_cover_everything():
    ref = _clouds(12, 64, seed=5)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    gen = ref[perm] + 1e-4 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    # EMD on all 64 points: independent random subsets of two copies would not be copies of each other
    m = set_metrics(gen, ref, emd_points=64)
    assert m["cov_cd"] == 1.0 and m["cov_emd"] == 1.0
    # true values ~1e-7 (CD) and ~2e-4 (EMD); float32 CD's expansion adds ~1e-7 * |point|^2
    assert m["mmd_cd"] < 1e-5 and m["mmd_emd"] < 1e-3
    # memorised copies: every cloud's nearest neighbour is its twin from the other set, so 1-NNA is 0
    assert m["nna_cd"] == 0.0 and m["nna_emd"] == 0.0
    assert (m["n_generated"], m["n_reference"], m["points_cd"], m["points_emd"]) == (12, 12, 64, 64)
    assert torch.equal(nearest_neighbours(chamfer_matrix(gen, ref)), perm)  # gen[g] is a copy of ref[perm[g]]


def test_separated_sets_are_fully_distinguishable():
    m = set_metrics(_clouds(10, 48, seed=6), _clouds(8, 48, seed=7, shift=20.0), emd_points=16)
    assert m["nna_cd"] == 1.0 and m["nna_emd"] == 1.0
    assert m["mmd_cd"] > 300 and m["mmd_emd"] > 15  # a shift of 20 dominates: CD ~ 2 * 20^2, EMD ~ 20
    assert all(0 <= m[k] <= 1 for k in ("cov_cd", "nna_cd", "cov_emd", "nna_emd"))


def test_same_distribution_is_indistinguishable():
    # 2 x 100 clouds from one distribution: 1-NNA is 0.5 up to a standard error of about 0.035; 0.15 is > 4 of them
    m = set_metrics(_clouds(100, 32, seed=8), _clouds(100, 32, seed=9), emd_points=None)
    assert abs(m["nna_cd"] - 0.5) < 0.15
    assert m["cov_emd"] is None and m["points_emd"] is None


def test_emd_subset_is_seeded():
    gen, ref = _clouds(4, 40, seed=10), _clouds(4, 40, seed=11)
    m1, m2 = set_metrics(gen, ref, emd_points=8, seed=3), set_metrics(gen, ref, emd_points=8, seed=3)
    assert m1 == m2
    assert set_metrics(gen, ref, emd_points=8, seed=4)["mmd_emd"] != m1["mmd_emd"]
    assert set_metrics(gen, ref, emd_points=40)["mmd_emd"] == pytest.approx(emd_matrix(gen, ref).amin(0).mean().item())


# ---- bad input -------------------------------------------------------------------------------------------------

def test_bad_input_raises():
    good = _clouds(3, 10, seed=12)
    with pytest.raises(ValueError, match=r"shape \(N, P, 3\)"):
        chamfer_matrix(good[..., :2], good)
    with pytest.raises(ValueError, match=r"shape \(N, P, 3\)"):
        emd_matrix(good[0], good)
    nan = good.clone()
    nan[1, 2, 0] = math.nan
    with pytest.raises(ValueError, match="finite"):
        chamfer_distance(nan, good)
    with pytest.raises(ValueError, match="finite"):
        set_metrics(good, nan)
    with pytest.raises(ValueError, match="equal point counts"):
        emd_matrix(good, _clouds(3, 11, seed=13))
    with pytest.raises(ValueError, match="empty set"):
        chamfer_matrix(good[:0], good)
    with pytest.raises(ValueError, match="empty set"):
        set_metrics(good, torch.zeros(2, 0, 3))
    with pytest.raises(ValueError, match="emd_points"):
        set_metrics(good, good, emd_points=11)
    with pytest.raises(ValueError, match="same points per cloud"):
        set_metrics(good, _clouds(3, 11, seed=13))
    with pytest.raises(ValueError, match="same number of clouds"):
        chamfer_distance(good, good[:2])
    with pytest.raises(ValueError, match=r"d_rr: expected shape \(2, 2\)"):
        one_nn_accuracy(torch.zeros(3, 3), torch.zeros(3, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="finite"):
        coverage(torch.tensor([[math.nan, 1.0]]))
    with pytest.raises(ValueError, match="non-empty 2-D"):
        minimum_matching_distance(torch.zeros(0, 3))


def test_reference_matrices_reused_give_the_same_metrics():
    from wavepatch.metrics.shapes import reference_matrices

    gen, ref = _clouds(6, 32, seed=10), _clouds(5, 32, seed=11, shift=0.3)
    cache = reference_matrices(ref, emd_points=8, seed=3)
    assert set_metrics(gen, ref, emd_points=8, seed=3, reference=cache) == set_metrics(gen, ref, emd_points=8, seed=3)
    with pytest.raises(ValueError, match="other reference clouds"):
        set_metrics(gen, ref, emd_points=8, seed=4, reference=cache)


def test_emd_matrix_in_worker_processes_equals_the_serial_one():
    a, b = _clouds(9, 16, seed=12), _clouds(7, 16, seed=13)
    assert torch.equal(emd_matrix(a, b, workers=2), emd_matrix(a, b))
    assert torch.equal(emd_matrix(a, a, workers=2), emd_matrix(a, a))
