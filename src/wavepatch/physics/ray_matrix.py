"""Sparse system matrices for 2D ray transforms, and applying them with exact, differentiable adjoints.

A ray is sampled at unit steps (one pixel) along its length; each sample takes the bilinear interpolation
of the image, which is zero outside the N x N grid. This is the discretisation scikit-image's ``radon``
uses (rotate with bilinear interpolation, then sum columns), so for parallel beams the two agree to float
rounding. Storing the matrix (CSR, int32 indices) and its transpose makes the adjoint exact by construction
and both directions a single sparse-dense product, batched over images.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# torch flags CSR as beta on every construction; the operations used here are the stable core.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")

Tensor = torch.Tensor


def ray_sampling_matrix(
    n: int, origins: Tensor, directions: Tensor, half_length: float, rays_per_chunk: int = 2048
) -> Tensor:
    """Sparse CSR matrix ``(R, n*n)`` of line integrals along R rays through an ``n x n`` image.

    origins: (R, 2) float64, a point of each ray in (row, col) pixel-index coordinates (pixel centres at
    integers); directions: (R, 2) unit vectors (row, col). Samples are taken at ``origin + s * direction``
    for integer s in [-half_length, half_length]; choose the origin as the ray's point closest to the image
    centre and ``half_length`` >= the image half-diagonal + 1. Units: pixel side lengths.
    """
    n_rays = origins.shape[0]
    half = int(math.ceil(half_length))
    s = torch.arange(-half, half + 1, dtype=torch.float64)
    rows, cols, vals = [], [], []
    for start in range(0, n_rays, rays_per_chunk):
        stop = min(start + rays_per_chunk, n_rays)
        o, d = origins[start:stop], directions[start:stop]
        pr = o[:, 0:1] + s[None, :] * d[:, 0:1]
        pc = o[:, 1:2] + s[None, :] * d[:, 1:2]
        # Only samples strictly inside the (-1, n) box touch a pixel.
        inside = (pr > -1) & (pr < n) & (pc > -1) & (pc < n)
        ray_id = torch.arange(start, stop).unsqueeze(1).expand_as(pr)[inside]
        pr, pc = pr[inside], pc[inside]
        r0, c0 = torch.floor(pr), torch.floor(pc)
        fr, fc = pr - r0, pc - c0
        r0, c0 = r0.long(), c0.long()
        chunk_r, chunk_c, chunk_v = [], [], []
        for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                          (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
            rr, cc = r0 + dr, c0 + dc
            ok = (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n) & (w > 0)
            chunk_r.append(ray_id[ok])
            chunk_c.append((rr * n + cc)[ok])
            chunk_v.append(w[ok])
        coo = torch.sparse_coo_tensor(
            torch.stack([torch.cat(chunk_r), torch.cat(chunk_c)]), torch.cat(chunk_v), (n_rays, n * n),
            check_invariants=False,
        ).coalesce()
        idx = coo.indices()
        rows.append(idx[0])
        cols.append(idx[1])
        vals.append(coo.values())
    row = torch.cat(rows)
    # Chunks cover increasing, disjoint row ranges and each is coalesced, so entries are in CSR order.
    crow = torch.zeros(n_rays + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=n_rays), 0)
    return torch.sparse_csr_tensor(
        crow.to(torch.int32), torch.cat(cols).to(torch.int32), torch.cat(vals).to(torch.float32),
        (n_rays, n * n), check_invariants=False,
    )


def transpose_csr(m: Tensor) -> Tensor:
    """CSR of the transpose of a CSR matrix (via the CSC layout, a counting sort)."""
    csc = m.to_sparse_csc()
    return torch.sparse_csr_tensor(
        csc.ccol_indices().to(torch.int32), csc.row_indices().to(torch.int32), csc.values(),
        (m.shape[1], m.shape[0]),
    )


def cache_dir() -> Path | None:
    """Where built matrices are kept between runs: $WAVEPATCH_CACHE (``off`` disables), else
    ~/.cache/wavepatch/ray_matrices."""
    env = os.environ.get("WAVEPATCH_CACHE")
    if env and env.lower() in ("off", "0", "none"):
        return None
    return Path(env) if env else Path.home() / ".cache" / "wavepatch" / "ray_matrices"


_CACHE_VERSION = "ray-matrix-v1"


def cached_sparse_pair(geometry: str, build: Callable[[], Tensor]) -> SparsePair:
    """Build a ray matrix once per geometry and keep it (safetensors, written atomically) in
    :func:`cache_dir`; ``geometry`` must describe every parameter the matrix depends on."""
    folder = cache_dir()
    if folder is None:
        return SparsePair(build())
    key = hashlib.sha256(f"{_CACHE_VERSION}|{geometry}".encode()).hexdigest()[:24]
    path = folder / f"{key}.safetensors"
    if path.exists():
        try:
            t = load_file(str(path))
            rows, cols = (int(v) for v in t["shape"].tolist())
            m = torch.sparse_csr_tensor(t["crow"], t["col"], t["values"], (rows, cols))
            mt = torch.sparse_csr_tensor(t["t_crow"], t["t_col"], t["t_values"], (cols, rows))
            return SparsePair(m, mt)
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            pass
    pair = SparsePair(build())
    m, mt = pair._base
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"crow": m.crow_indices(), "col": m.col_indices(), "values": m.values(),
                   "t_crow": mt.crow_indices(), "t_col": mt.col_indices(), "t_values": mt.values(),
                   "shape": torch.tensor(m.shape, dtype=torch.int64)}, str(tmp))
        os.replace(tmp, path)
    except OSError:  # a read-only home is not an error: the matrix just is not kept
        pass
    return pair


class SparsePair:
    """A sparse matrix M and its transpose, converted on demand to the dtype/device of the input."""

    def __init__(self, m: Tensor, mt: Tensor | None = None):
        self._m, self._mt = m, mt  # the transpose is built on first use when not given
        self._cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    @property
    def _base(self) -> tuple[Tensor, Tensor]:
        if self._mt is None:
            self._mt = transpose_csr(self._m)
        return self._m, self._mt

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self._m.shape)

    @property
    def nnz(self) -> int:
        return int(self._m.values().numel())

    def get(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        key = (dtype, str(device))
        if key not in self._cache:
            self._cache[key] = tuple(
                torch.sparse_csr_tensor(
                    m.crow_indices().to(device), m.col_indices().to(device),
                    m.values().to(dtype=dtype, device=device), m.shape,
                )
                for m in self._base
            )
        return self._cache[key]


class _ApplySparse(torch.autograd.Function):
    """y = M x with backward x_grad = M^T y_grad, itself an _ApplySparse, so any order of derivative works."""

    @staticmethod
    def forward(ctx, x: Tensor, m: Tensor, mt: Tensor) -> Tensor:
        ctx.mats = (m, mt)
        if x.shape[1] == 1 and x.device.type == "cpu":  # CSR x vector: ~3x faster than CSR x (cols, 1) on the CPU
            return torch.mv(m, x[:, 0])[:, None]
        return m @ x

    @staticmethod
    def backward(ctx, grad: Tensor):
        m, mt = ctx.mats
        return _ApplySparse.apply(grad, mt, m), None, None


def apply_sparse(pair: SparsePair, x: Tensor, transpose: bool = False) -> Tensor:
    """Apply M (or M^T) to a batch ``x`` of shape (K, cols) and return (K, rows). Differentiable."""
    if x.is_complex():
        return torch.complex(apply_sparse(pair, x.real, transpose), apply_sparse(pair, x.imag, transpose))
    m, mt = pair.get(x.dtype, x.device)
    if transpose:
        m, mt = mt, m
    return _ApplySparse.apply(x.T.contiguous(), m, mt).T
