"""Compiled CPU kernels of the matrix-free ray transform (numba): the same discretisation as
:mod:`wavepatch.physics.ray_matrix` and :mod:`wavepatch.physics.ray_free`, computed sample by sample; and the
pixel-driven back-projection of FBP (``pixel_backproject``, one image row per parallel iteration).

Ray r is sampled at ``origin_r + s * direction_r`` for s = steps[first_r] ... steps[last_r] (unit steps), each
sample a bilinear interpolation of the image with zeros outside. The image is zero-padded by one pixel before
and two after on each axis, so that no sample needs a bounds test: a sample strictly inside (-1, n) sits at
(0, n + 1) in padded coordinates, its four neighbours inside the padded array (the second pad absorbs a
coordinate that rounding puts exactly on n, where its weight is 0).

- forward: one ray per parallel iteration, a sum of its samples (no write conflicts);
- adjoint: the same arithmetic with the four bilinear weights scattered back. The rays are split into one
  contiguous block per thread, each with its own padded image, summed at the end. Forward and adjoint compute
  every sample position and weight by the same expressions, so <A x, y> = <x, A^T y> to rounding.

Sample positions and weights are computed in float64 whatever the data's dtype (float32 or float64: loads and
stores in that dtype), so float32 results agree with the float64 sparse matrix to float32 rounding. Calls are
serialised by a lock, so the kernels are safe under any numba threading layer when several Python threads
call them (each call already uses all of its threads).
"""

from __future__ import annotations

import threading

import numba
import numpy as np
import torch
from numba import njit, prange

from wavepatch.physics.ray_common import pixel_detector_index

Tensor = torch.Tensor

_LOCK = threading.Lock()


@njit(inline="always", fastmath=True, cache=True)
def _sample(o0, o1, d0, d1, s):  # pragma: no cover - compiled
    """Sample s of a ray in padded coordinates: the upper-left neighbour (i, j) and the fractions (fy, fx). The
    coordinates are positive up to rounding, so int() acts as floor()."""
    y = o0 + s * d0
    x = o1 + s * d1
    i = int(y)
    j = int(x)
    return i, j, y - i, x - j


@njit(parallel=True, fastmath=True, cache=True)
def _forward_kernel(img, origins, directions, first_step, step_range, out):  # pragma: no cover - compiled
    """img (K, n+3, n+3) padded; origins (R, 2) already shifted by +1; out (K, R)."""
    k_images = img.shape[0]
    for r in prange(origins.shape[0]):
        first, last = step_range[r, 0], step_range[r, 1]
        o0, o1 = origins[r, 0], origins[r, 1]
        d0, d1 = directions[r, 0], directions[r, 1]
        for k in range(k_images):
            acc = 0.0
            s = first_step[r]
            for _ in range(first, last + 1):
                i, j, fy, fx = _sample(o0, o1, d0, d1, s)
                s += 1
                top = img[k, i, j] + fx * (img[k, i, j + 1] - img[k, i, j])
                bottom = img[k, i + 1, j] + fx * (img[k, i + 1, j + 1] - img[k, i + 1, j])
                acc += top + fy * (bottom - top)
            out[k, r] = acc


@njit(parallel=True, fastmath=True, cache=True)
def _adjoint_kernel(sino, origins, directions, first_step, step_range, parts):  # pragma: no cover - compiled
    """sino (K, R); parts (T, K, n+3, n+3) zeros, one padded image per block of rays; summed by the caller."""
    n_blocks, k_images = parts.shape[0], parts.shape[1]
    n_rays = origins.shape[0]
    per_block = (n_rays + n_blocks - 1) // n_blocks
    for b in prange(n_blocks):
        buf = parts[b]
        for r in range(b * per_block, min(n_rays, (b + 1) * per_block)):
            first, last = step_range[r, 0], step_range[r, 1]
            o0, o1 = origins[r, 0], origins[r, 1]
            d0, d1 = directions[r, 0], directions[r, 1]
            for k in range(k_images):
                v = sino[k, r]
                s = first_step[r]
                for _ in range(first, last + 1):
                    i, j, fy, fx = _sample(o0, o1, d0, d1, s)
                    s += 1
                    low = v * fy
                    high = v - low
                    buf[k, i, j] += high * (1 - fx)
                    buf[k, i, j + 1] += high * fx
                    buf[k, i + 1, j] += low * (1 - fx)
                    buf[k, i + 1, j + 1] += low * fx


def _arrays(geom) -> tuple[np.ndarray, ...]:
    """(origins + 1, directions, first step value, step_range) as float64 / int64 numpy arrays (kept on geom)."""
    if "numba" not in geom._cache:
        rng = np.ascontiguousarray(geom.step_range.numpy().astype(np.int64))
        first = geom.steps.numpy()[np.clip(rng[:, 0], 0, geom.steps.numel() - 1)]
        geom._cache["numba"] = (np.ascontiguousarray(geom.origins.numpy() + 1.0), np.ascontiguousarray(
            geom.directions.numpy()), np.ascontiguousarray(first, dtype=np.float64), rng)
    return geom._cache["numba"]


def _threads() -> int:
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def _call(kernel, *args) -> None:
    """Run a kernel under the lock on torch's thread count."""
    with _LOCK:
        numba.set_num_threads(_threads())
        kernel(*args)


def project(x: Tensor, geom) -> Tensor:
    """(K, n, n) CPU float32/float64 -> (K, R) line integrals (no autograd; ray_free wraps it)."""
    k, n = x.shape[0], geom.n
    image = x.detach().numpy()
    padded = np.zeros((k, n + 3, n + 3), dtype=image.dtype)
    padded[:, 1:n + 1, 1:n + 1] = image
    out = np.zeros((k, geom.n_rays), dtype=padded.dtype)
    _call(_forward_kernel, padded, *_arrays(geom), out)
    return torch.from_numpy(out)


def backproject(y: Tensor, geom) -> Tensor:
    """(K, R) CPU float32/float64 -> (K, n, n): the exact adjoint of :func:`project`."""
    k, n = y.shape[0], geom.n
    sino = np.ascontiguousarray(y.detach().numpy())
    parts = np.zeros((_threads(), k, n + 3, n + 3), dtype=sino.dtype)  # one block of rays per thread
    _call(_adjoint_kernel, sino, *_arrays(geom), parts)
    return torch.from_numpy(np.ascontiguousarray(parts.sum(axis=0)[:, 1:n + 1, 1:n + 1]))


_detector_index = njit(inline="always", fastmath=True, cache=True)(pixel_detector_index)


@njit(parallel=True, fastmath=True, cache=True)
def _pixel_backproject_kernel(q, cos, sin, n, offset, r_src, du, out):  # pragma: no cover - compiled
    """q (K, V, D) filtered sinogram -> out (K, n, n) zeros, summed over views: each pixel centre's detector
    coordinate t and weight w per view (``ray_common.pixel_detector_index``, compiled: parallel beam for r_src = 0,
    else fan beam on the virtual detector through the centre), w times q linearly interpolated at t (0 outside
    [0, D - 1]). One image row per parallel iteration (no write conflicts)."""
    k_images, n_views, n_det = q.shape
    half = n // 2
    for row in prange(n):
        dr = row - half
        for v in range(n_views):
            c, s = cos[v], sin[v]
            for col in range(n):
                t, w = _detector_index(float(dr), float(col - half), c, s, offset, r_src, du)
                if t < 0 or t > n_det - 1:
                    continue
                i = int(t)
                frac = t - i
                i1 = min(i + 1, n_det - 1)
                for k in range(k_images):
                    out[k, row, col] += w * (q[k, v, i] + frac * (q[k, v, i1] - q[k, v, i]))


def pixel_backproject(q: Tensor, n: int, angles: Tensor, offset: float, r_src: float = 0.0,
                      du: float = 1.0) -> Tensor:
    """Pixel-driven back-projection of FBP onto an n x n grid: q (K, V, D) CPU float32/float64 -> (K, n, n),
    the sum that ``ray_free.pixel_backproject`` computes in torch (no autograd here). ``angles`` (V,) radians;
    ``offset``: the detector index of the centre; ``r_src`` > 0 selects the fan-beam form (source radius, virtual
    detector spacing ``du``)."""
    qa = np.ascontiguousarray(q.detach().numpy())
    a = angles.detach().to(torch.float64).numpy()
    out = np.zeros((q.shape[0], n, n), dtype=qa.dtype)
    _call(_pixel_backproject_kernel, qa, np.cos(a), np.sin(a), int(n), float(offset), float(r_src), float(du), out)
    return torch.from_numpy(out)
