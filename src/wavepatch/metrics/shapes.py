"""Set metrics for 3-D shape generators on point clouds (PointFlow protocol, Yang et al. 2019; Table 1 of Hui et al.
2022, "Neural wavelet-domain diffusion for 3D shape generation").

A point cloud X is a (P, 3) tensor; a set of N clouds is (N, P, 3). Distances between two clouds:

- Chamfer distance, squared Euclidean as in PointFlow (point counts may differ)::

      CD(X, Y) = mean_{x in X} min_{y in Y} |x - y|^2 + mean_{y in Y} min_{x in X} |x - y|^2

- Earth mover's distance, Euclidean (not squared), exact, for equal point counts::

      EMD(X, Y) = min over bijections phi: X -> Y of mean_{x in X} |x - phi(x)|

  solved per pair with ``scipy.optimize.linear_sum_assignment`` (O(P^3): subsample the clouds first).

For generated clouds S_g (N_g) and reference clouds S_r (N_r), with distance matrices D_gr (N_g, N_r),
D_gg (N_g, N_g) and D_rr (N_r, N_r):

- COV = |{argmin_r D_gr[g, r] : g in S_g}| / N_r, the fraction of reference clouds that are the nearest neighbour
  of some generated cloud (higher is better);
- MMD = mean_r min_g D_gr[g, r], how well each reference cloud is matched by its closest generated one (lower is
  better);
- 1-NNA = accuracy of the leave-one-out 1-nearest-neighbour classifier (generated vs reference) on S_g u S_r: each
  cloud is labelled by its nearest neighbour among all *other* clouds of the union. 0.5 means the two sets cannot
  be told apart, 1.0 that they are fully separable; memorised copies of S_r score 0.

Ties are broken towards the lowest index (``argmin`` returns the first minimum); for 1-NNA the union is ordered
generated clouds first, then reference clouds, so a tie between a generated and a reference neighbour picks the
generated one. All fractions are floats in [0, 1]; distances are raw (no x 1e3 scaling, the caller scales tables).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

Tensor = torch.Tensor

CHUNK = 2**21  # distance entries per block: 8 MiB in float32, the fastest block measured on a 2-core CPU


def _check_clouds(x, name: str) -> Tensor:
    """``x`` as a floating (N, P, 3) tensor with N, P >= 1 and finite values, else a ValueError naming it."""
    x = torch.as_tensor(x)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"{name}: expected point clouds of shape (N, P, 3), got {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: empty set, got shape {tuple(x.shape)} (need at least one cloud of one point)")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: point coordinates must be finite (found NaN or inf)")
    return x


def _check_matrix(d, name: str, shape: tuple[int, int] | None = None) -> Tensor:
    """``d`` as a float64 2-D non-empty finite tensor (of ``shape`` when given), else a ValueError naming it."""
    d = torch.as_tensor(d).double()
    if d.ndim != 2 or d.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D distance matrix, got shape {tuple(d.shape)}")
    if shape is not None and tuple(d.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(d.shape)}")
    if not torch.isfinite(d).all():
        raise ValueError(f"{name}: distances must be finite (found NaN or inf)")
    return d


def _augment(x: Tensor, left: bool) -> Tensor:
    """(..., P, 3) -> (..., P, 5) so that left(x) . right(y) = |x|^2 - 2 x.y + |y|^2 = |x - y|^2."""
    n = x.square().sum(-1, keepdim=True)
    one = torch.ones_like(n)
    return torch.cat([x, n, one], -1) if left else torch.cat([-2 * x, one, n], -1)


def _chamfer_one_to_many(x: Tensor, y: Tensor, q: int, rows: int, buf: Tensor) -> Tensor:
    """CD of one cloud against c clouds of q points each.

    x: (P, 5) left-augmented cloud; y: (5, c * q) right-augmented clouds side by side (fastest as the transposed
    view of a contiguous (c * q, 5) block); buf: at least rows * c * q scratch entries, reused so that no block is
    allocated per call. Returns (c,). Blocks of ``rows`` points of x keep a running column minimum, so memory is
    rows * c * q entries whatever P is.
    """
    c = y.shape[1] // q
    row_sum = torch.zeros(c, dtype=x.dtype, device=x.device)
    col_min = None
    for s in range(0, x.shape[0], rows):
        xs = x[s:s + rows]
        d = torch.mm(xs, y, out=buf[: xs.shape[0] * y.shape[1]].view(xs.shape[0], y.shape[1])).view(-1, c, q)
        row_sum += d.amin(2).clamp_(min=0).sum(0)  # the expansion can round a true 0 to a tiny negative
        m = d.amin(0)
        col_min = m if col_min is None else torch.minimum(col_min, m, out=col_min)
    return row_sum / x.shape[0] + col_min.clamp_(min=0).mean(1)


def _block_sizes(p: int, q: int, chunk: int) -> tuple[int, int]:
    """(rows of a cloud of p points, clouds of q points) per block of at most ``chunk`` entries (at least 1 x q)."""
    if chunk >= p * q:
        return p, chunk // (p * q)
    return max(1, chunk // q), 1


def chamfer_distance(x: Tensor, y: Tensor) -> Tensor:
    """Chamfer distance (squared Euclidean, see module docstring) between aligned pairs: x (B, P, 3), y (B, Q, 3)
    -> (B,) float64, CD(x[i], y[i])."""
    x, y = _check_clouds(x, "x"), _check_clouds(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same number of clouds, got {x.shape[0]} and {y.shape[0]}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    xa, ya = _augment(x.to(dtype), True), _augment(y.to(y.device, dtype), False)
    rows, _ = _block_sizes(x.shape[1], y.shape[1], CHUNK)
    buf = torch.empty(rows * y.shape[1], dtype=dtype, device=x.device)
    out = [_chamfer_one_to_many(xa[i], ya[i].T, y.shape[1], rows, buf) for i in range(x.shape[0])]
    return torch.cat(out).to("cpu", torch.float64)


def chamfer_matrix(a: Tensor, b: Tensor, *, chunk: int = CHUNK, progress: bool = False) -> Tensor:
    """All-pairs Chamfer distance: a (Na, P, 3), b (Nb, Q, 3) -> (Na, Nb) float64 on the CPU, [i, j] = CD(a[i], b[j]).

    Computed in the inputs' dtype (float32 clouds: absolute error about 1e-7 * max |point|^2) on their device, with
    the expansion |x|^2 - 2 x.y + |y|^2 as one matrix product per block, the way torch.cdist does it for large
    clouds but without its square root (which CD would square again) and into a reused buffer: 2-3x faster than
    torch.cdist on a 2-core CPU. Memory: ``chunk`` distance entries (default 2**21, 8 MiB in float32) plus 5 / 3 of
    the inputs' size. When ``b is a`` only the upper triangle is computed and the diagonal is exactly 0.
    """
    a = _check_clouds(a, "a")
    same = b is a
    b = a if same else _check_clouds(b, "b")
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of entries, got {chunk}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    na, p, _ = a.shape
    nb, q, _ = b.shape
    xa = _augment(a.to(dtype), True)
    yb = _augment(b.to(a.device, dtype), False).reshape(nb * q, 5)  # row-major: each block of clouds contiguous
    rows, clouds = _block_sizes(p, q, chunk)
    buf = torch.empty(rows * clouds * q, dtype=dtype, device=a.device)
    out = torch.zeros(na, nb, dtype=dtype, device=a.device)
    bar = tqdm(total=na, desc="chamfer", disable=not progress)
    for i in range(na):
        for j in range(i + 1 if same else 0, nb, clouds):
            k = min(j + clouds, nb)
            out[i, j:k] = _chamfer_one_to_many(xa[i], yb[j * q:k * q].T, q, rows, buf)
        bar.update()
    bar.close()
    if same:
        out = out + out.T
    return out.to("cpu", torch.float64)


def _emd_pair(cost: np.ndarray) -> float:
    """Mean cost of the optimal assignment for a (P, P) cost matrix."""
    from scipy.optimize import linear_sum_assignment  # lazily: 0.1 s of start-up

    r, c = linear_sum_assignment(cost)
    return float(cost[r, c].mean())


def _emd_rows(job: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """EMD of clouds a_rows (k, P, 3) against b (Nb, P, 3), row r from column starts[r] on; (k, Nb) float64."""
    a_rows, b, starts = job
    out = np.zeros((len(a_rows), len(b)))
    for r, (x, j0) in enumerate(zip(a_rows, starts, strict=True)):
        for j in range(int(j0), len(b)):
            out[r, j] = _emd_pair(np.sqrt(((x[:, None, :] - b[j][None, :, :]) ** 2).sum(-1)))
    return out


def emd_matrix(a: Tensor, b: Tensor, *, progress: bool = False, workers: int = 1) -> Tensor:
    """All-pairs exact EMD (Euclidean, see module docstring): a (Na, P, 3), b (Nb, P, 3) -> (Na, Nb) float64 on the
    CPU. Costs are computed in float64 with direct differences (no expansion); one assignment per pair, O(P^3)
    (about 0.7 ms at 128 points and 3.5 ms at 256 on one core). When ``b is a`` only i < j is solved (diagonal 0).
    ``workers`` > 1 solves rows in that many processes (the assignment solver is single-threaded).
    """
    a = _check_clouds(a, "a")
    same = b is a
    b = a if same else _check_clouds(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"EMD needs equal point counts per cloud, got {a.shape[1]} (a) and {b.shape[1]} (b)")
    a64, b64 = (x.detach().to("cpu", torch.float64).numpy() for x in (a, b))
    na, nb = a.shape[0], b.shape[0]
    starts = np.arange(na) + 1 if same else np.zeros(na, dtype=np.int64)
    chunks = [np.arange(k, na, max(1, workers) * 4) for k in range(max(1, workers) * 4)]  # interleaved: balanced
    chunks = [c for c in chunks if len(c)]
    jobs = [(a64[c], b64, starts[c]) for c in chunks]
    out = np.zeros((na, nb))
    bar = tqdm(total=na, desc="emd rows", disable=not progress)
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:  # numpy only
            for c, rows in zip(chunks, pool.map(_emd_rows, jobs), strict=True):
                out[c] = rows
                bar.update(len(c))
    else:
        for c, job in zip(chunks, jobs, strict=True):
            out[c] = _emd_rows(job)
            bar.update(len(c))
    bar.close()
    t = torch.from_numpy(out)
    return t + t.T if same else t


def nearest_neighbours(d: Tensor) -> Tensor:
    """Index (int64) of the nearest reference cloud for each generated cloud: d (Ng, Nr) -> (Ng,); ties: lowest."""
    return _check_matrix(d, "d").argmin(1)


def coverage(d_gr: Tensor) -> float:
    """COV in [0, 1]: fraction of reference clouds (columns of d_gr, (Ng, Nr)) nearest to some generated cloud."""
    d_gr = _check_matrix(d_gr, "d_gr")
    return nearest_neighbours(d_gr).unique().numel() / d_gr.shape[1]


def minimum_matching_distance(d_gr: Tensor) -> float:
    """MMD: mean over reference clouds (columns of d_gr, (Ng, Nr)) of the distance to the closest generated one."""
    return _check_matrix(d_gr, "d_gr").amin(0).mean().item()


def one_nn_accuracy(d_gg: Tensor, d_rr: Tensor, d_gr: Tensor) -> float:
    """Leave-one-out 1-NN accuracy in [0, 1] on generated u reference; d_gg (Ng, Ng), d_rr (Nr, Nr), d_gr (Ng, Nr).

    Diagonals of d_gg and d_rr are ignored (a cloud is never its own neighbour). Ties go to the lowest index of the
    union ordered generated first, then reference.
    """
    d_gr = _check_matrix(d_gr, "d_gr")
    ng, nr = d_gr.shape
    d_gg = _check_matrix(d_gg, "d_gg", (ng, ng))
    d_rr = _check_matrix(d_rr, "d_rr", (nr, nr))
    d = torch.cat([torch.cat([d_gg, d_gr], 1), torch.cat([d_gr.T, d_rr], 1)], 0)
    d.fill_diagonal_(float("inf"))
    generated = torch.arange(ng + nr) < ng
    return (generated[d.argmin(1)] == generated).double().mean().item()


def _scores(d_gg: Tensor, d_rr: Tensor, d_gr: Tensor, suffix: str) -> dict:
    return {f"cov_{suffix}": coverage(d_gr), f"mmd_{suffix}": minimum_matching_distance(d_gr),
            f"nna_{suffix}": one_nn_accuracy(d_gg, d_rr, d_gr)}


def _subsample(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """(N, P, 3) -> (N, k, 3): an independent uniformly random subset of k distinct points per cloud."""
    idx = torch.rand(x.shape[:2], generator=gen).argsort(1)[:, :k].to(x.device)
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, 3))


def reference_matrices(ref: Tensor, *, emd_points: int | None = 256, progress: bool = False,
                       seed: int = 0, workers: int = 1) -> dict:
    """The reference-only part of :func:`set_metrics` (D_rr under CD and EMD, and ref's EMD subsets), computed once
    when several generated sets are scored against the same references; pass it as ``set_metrics(reference=...)``.
    The EMD subsets of ref are drawn from a generator seeded with ``seed + 1``."""
    ref = _check_clouds(ref, "ref")
    if emd_points is not None and not 1 <= emd_points <= ref.shape[1]:
        raise ValueError(f"emd_points must be in [1, {ref.shape[1]}] (points per cloud) or None, got {emd_points}")
    out = {"ref": ref, "emd_points": emd_points, "seed": seed, "rr_cd": chamfer_matrix(ref, ref, progress=progress)}
    if emd_points is not None:
        out["ref_sub"] = _subsample(ref, emd_points, torch.Generator().manual_seed(seed + 1))
        out["rr_emd"] = emd_matrix(out["ref_sub"], out["ref_sub"], progress=progress, workers=workers)
    return out


def set_metrics(gen: Tensor, ref: Tensor, *, emd_points: int | None = 256, progress: bool = False,
                seed: int = 0, reference: dict | None = None, workers: int = 1) -> dict:
    """COV, MMD and 1-NNA under CD and EMD for generated clouds gen (Ng, P, 3) against reference ref (Nr, P, 3).

    CD uses all P points. EMD (exact, O(P^3) per pair) uses an independent random subset of ``emd_points`` points per
    cloud, drawn from torch.Generators seeded with ``seed`` (gen's subsets) and ``seed + 1`` (ref's); None skips EMD
    and sets its entries to None. Both sets must have the same P (CD's value depends on the point count).
    ``reference``: :func:`reference_matrices` of the same ref, emd_points and seed (reused, not recomputed).
    ``workers``: processes for the EMD assignments.
    Returns {"cov_cd", "mmd_cd", "nna_cd", "cov_emd", "mmd_emd", "nna_emd", "n_generated", "n_reference",
    "points_cd", "points_emd"}: fractions in [0, 1], raw distances, counts as ints.
    """
    gen, ref = _check_clouds(gen, "gen"), _check_clouds(ref, "ref")
    p = gen.shape[1]
    if ref.shape[1] != p:
        raise ValueError(f"gen and ref must have the same points per cloud, got {p} and {ref.shape[1]}")
    if reference is None:
        reference = reference_matrices(ref, emd_points=emd_points, progress=progress, seed=seed, workers=workers)
    elif (reference["ref"] is not ref and not torch.equal(reference["ref"], ref)) or \
            reference["emd_points"] != emd_points or reference["seed"] != seed:
        raise ValueError("reference matrices were computed for other reference clouds, emd_points or seed")
    out = {"n_generated": gen.shape[0], "n_reference": ref.shape[0], "points_cd": p, "points_emd": emd_points}
    mats = [chamfer_matrix(gen, gen, progress=progress), reference["rr_cd"],
            chamfer_matrix(gen, ref, progress=progress)]
    out |= _scores(*mats, "cd")
    if emd_points is None:
        return out | {"cov_emd": None, "mmd_emd": None, "nna_emd": None}
    gs, rs = _subsample(gen, emd_points, torch.Generator().manual_seed(seed)), reference["ref_sub"]
    mats = [emd_matrix(gs, gs, progress=progress, workers=workers), reference["rr_emd"],
            emd_matrix(gs, rs, progress=progress, workers=workers)]
    return out | _scores(*mats, "emd")
