"""Matrix-free ray transforms: the discretisation of :mod:`wavepatch.physics.ray_matrix` computed on the fly.

On the CPU (float32 / float64) both directions and the FBP back-projection run the compiled kernels of
:mod:`wavepatch.physics.ray_kernels` (numba; ``COMPILED_CPU = False`` switches them off). Elsewhere (GPU, other
dtypes, FBP of a sinogram that needs a gradient) they run in torch:

Forward: each ray is sampled at unit steps ``origin + s * direction`` (integer s in [-half, half]) with
bilinear interpolation, zero outside the N x N grid: ``torch.nn.functional.grid_sample`` (bilinear, zero
padding, ``align_corners=True`` so pixel centres sit at integer indices) summed over s. This is the same
linear map as the sparse matrix, with the interpolation weights computed in the input's dtype.
Adjoint: the gradient of that sampling with respect to the image (``aten.grid_sampler_2d_backward``),
i.e. the bilinear weights scattered back, so <A x, y> = <x, A^T y> to rounding. Rays are processed in chunks
of ``rays_per_chunk`` (default per device, ``RAYS_PER_CHUNK``), so the working memory is O(chunk x samples per
ray), not O(rays x samples), and the images of a batch ride along as channels of one ``grid_sample`` call. On
the CPU the chunks run on ``torch.get_num_threads()`` Python threads (the sampling kernels are single-threaded
and release the GIL).

Also here: the pixel-driven, linearly interpolating back-projection of FBP (the matrix of
``ct._backprojection_matrix``) computed per chunk of views, or by the compiled kernel.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from wavepatch.physics.ray_common import COMPILED_DTYPES

Tensor = torch.Tensor

_BILINEAR, _ZEROS = 0, 0  # grid_sampler enums: interpolation 'bilinear', padding 'zeros'
# Rays per chunk by device type. CPU, 512^2 x 720 views, 2 threads (docs/results.md section 13): 2048 / 1024 / 768 /
# 512 rays gave adjoint medians 3.18 / 2.82 / 2.50 / 3.3 s and extra memory ~144 / 57 / 48 / 37 MB over 2-5 fresh
# runs each; forward 1.53 / 1.31 / 1.28 / 1.5 s. Other devices keep 2048 (not measured).
RAYS_PER_CHUNK = {"cpu": 768}
# CPU float32/float64 transforms and FBP back-projection through the compiled kernels (docs/results.md section 13:
# 512^2 x 720 views, 2 threads, forward 0.28-0.47 s, adjoint 0.60-1.16 s, FBP 0.13 s against grid_sample's
# 1.2-1.5 s, 2.8-3.0 s and the chunked torch FBP's 5.3 s).
COMPILED_CPU = True


def compiled_kernels(t: Tensor):
    """ray_kernels (imported on first use: numba costs ~0.4 s to import) if ``t`` goes through it, else None."""
    if COMPILED_CPU and t.device.type == "cpu" and t.dtype in COMPILED_DTYPES:
        from wavepatch.physics import ray_kernels

        return ray_kernels
    return None


class RayGeometry:
    """R rays through an n x n image: ``origins`` and ``directions`` (R, 2) float64 in (row, col) pixel-index
    coordinates, sampled at integer s in [-ceil(half_length), ceil(half_length)]."""

    def __init__(self, n: int, origins: Tensor, directions: Tensor, half_length: float) -> None:
        self.n = int(n)
        self.origins = origins.to(torch.float64).reshape(-1, 2)
        self.directions = directions.to(torch.float64).reshape(-1, 2)
        half = int(math.ceil(half_length))
        self.half = half
        self.steps = torch.arange(-half, half + 1, dtype=torch.float64)
        self.n_rays = self.origins.shape[0]
        self.step_range = self._inside_steps()
        self._cache: dict = {}

    def _inside_steps(self) -> Tensor:
        """(R, 2) int64 [first, last] index into ``steps`` of each ray's samples strictly inside the (-1, n) box
        (the only ones with a non-zero bilinear weight); first > last for a ray that misses the image."""
        lo = torch.full((self.n_rays,), -math.inf, dtype=torch.float64)
        hi = torch.full((self.n_rays,), math.inf, dtype=torch.float64)
        for axis in (0, 1):
            o, d = self.origins[:, axis], self.directions[:, axis]
            flat = d.abs() < 1e-12
            safe = torch.where(flat, torch.ones_like(d), d)
            a, b = (-1.0 - o) / safe, (self.n - o) / safe
            a, b = torch.minimum(a, b), torch.maximum(a, b)
            outside = flat & ((o <= -1.0) | (o >= self.n))
            a = torch.where(flat, torch.where(outside, torch.full_like(a, math.inf), torch.full_like(a, -math.inf)), a)
            b = torch.where(flat, torch.where(outside, torch.full_like(b, -math.inf), torch.full_like(b, math.inf)), b)
            lo, hi = torch.maximum(lo, a), torch.minimum(hi, b)
        first = (torch.floor(lo.clamp(-self.half - 1, self.half + 1)) + 1).long() + self.half
        last = (torch.ceil(hi.clamp(-self.half - 1, self.half + 1)) - 1).long() + self.half
        return torch.stack([first.clamp(0, 2 * self.half), last.clamp(-1, 2 * self.half)], dim=1)

    def chunks(self, rays_per_chunk: int) -> list[tuple[int, int, int, int]]:
        """(start, stop, first, last): consecutive rays [start, stop) and the step indices [first, last] that
        cover all their samples inside the image; rays that miss it are left out."""
        out = []
        for start in range(0, self.n_rays, rays_per_chunk):
            stop = min(start + rays_per_chunk, self.n_rays)
            r = self.step_range[start:stop]
            first, last = int(r[:, 0].min()), int(r[:, 1].max())
            if first <= last:
                out.append((start, stop, first, last))
        return out

    def normalized(self, dtype: torch.dtype, device) -> tuple[Tensor, Tensor, Tensor]:
        """Origins and directions in grid_sample's (x=col, y=row) coordinates on [-1, 1], (R, 1, 2) each, and the
        steps (1, S, 1), in ``dtype`` on ``device`` (kept per dtype/device)."""
        key = (dtype, str(device))
        if key not in self._cache:
            scale = 2.0 / (self.n - 1) if self.n > 1 else 1.0
            o = (self.origins.flip(1) * scale - 1.0)[:, None, :]
            d = (self.directions.flip(1) * scale)[:, None, :]
            self._cache[key] = tuple(t.to(dtype=dtype, device=device) for t in (o, d, self.steps[None, :, None]))
        return self._cache[key]

    def grid(self, start: int, stop: int, dtype: torch.dtype, device, first: int = 0,
             last: int | None = None) -> Tensor:
        """Sampling grid of rays [start, stop) at step indices [first, last] (default all) for ``grid_sample``:
        (1, stop - start, last - first + 1, 2), (x=col, y=row) normalised to [-1, 1], pixel centres at the
        integers 0..n-1."""
        o, d, s = self.normalized(dtype, device)
        last = s.shape[1] - 1 if last is None else last
        return torch.addcmul(o[start:stop], s[:, first:last + 1], d[start:stop])[None]


def _chunks(total: int, size: int):
    for start in range(0, total, size):
        yield start, min(start + size, total)


def _workers(device) -> int:
    return max(1, torch.get_num_threads()) if torch.device(device).type == "cpu" else 1


def _run_chunks(work, chunks: list, workers: int) -> None:
    """``work(worker_index, chunk)`` for every chunk: chunk i on worker i % workers (each worker in order)."""
    if workers == 1 or len(chunks) == 1:
        for c in chunks:
            work(0, c)
        return
    with ThreadPoolExecutor(workers) as pool:
        jobs = [pool.submit(lambda w=w: [work(w, c) for c in chunks[w::workers]]) for w in range(workers)]
        for j in jobs:
            j.result()


def _project(x: Tensor, geom: RayGeometry, rays_per_chunk: int) -> Tensor:
    """(K, n, n) -> (K, R): line integrals of K images."""
    if kernels := compiled_kernels(x):
        return kernels.project(x, geom)
    k = x.shape[0]
    img = x.reshape(1, k, geom.n, geom.n)
    out = torch.zeros(k, geom.n_rays, dtype=x.dtype, device=x.device)

    def work(_, chunk):
        start, stop, first, last = chunk
        g = geom.grid(start, stop, x.dtype, x.device, first, last)
        samples = F.grid_sample(img, g, mode="bilinear", padding_mode="zeros", align_corners=True)
        out[:, start:stop] = samples[0].sum(dim=-1)

    geom.normalized(x.dtype, x.device)  # fill the per-dtype cache before the threads read it
    _run_chunks(work, geom.chunks(rays_per_chunk), _workers(x.device))
    return out


def _backproject_rays(y: Tensor, geom: RayGeometry, rays_per_chunk: int) -> Tensor:
    """(K, R) -> (K, n, n): the exact adjoint of :func:`_project`."""
    if kernels := compiled_kernels(y):
        return kernels.backproject(y, geom)
    k = y.shape[0]
    shape = (1, k, geom.n, geom.n)
    workers = _workers(y.device)
    partial = [torch.zeros(shape, dtype=y.dtype, device=y.device) for _ in range(workers)]
    dummy = torch.empty(shape, dtype=y.dtype, device=y.device)

    def work(w, chunk):
        start, stop, first, last = chunk
        g = geom.grid(start, stop, y.dtype, y.device, first, last)
        grad_out = y[:, start:stop, None].expand(k, stop - start, g.shape[2])[None].contiguous()
        grad_in, _ = torch.ops.aten.grid_sampler_2d_backward(grad_out, dummy, g, _BILINEAR, _ZEROS, True,
                                                             [True, False])
        partial[w] += grad_in

    geom.normalized(y.dtype, y.device)
    _run_chunks(work, geom.chunks(rays_per_chunk), workers)
    return sum(partial[1:], partial[0])[0]


class _ProjectFn(torch.autograd.Function):
    """y = A x with backward A^T, itself differentiable (and vice versa), like ray_matrix's _ApplySparse."""

    @staticmethod
    def forward(ctx, x: Tensor, geom: RayGeometry, chunk: int, adjoint: bool) -> Tensor:
        ctx.geom, ctx.chunk, ctx.adjoint = geom, chunk, adjoint
        return _backproject_rays(x, geom, chunk) if adjoint else _project(x, geom, chunk)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _ProjectFn.apply(grad, ctx.geom, ctx.chunk, not ctx.adjoint), None, None, None


def _chunk(rays_per_chunk: int | None, device) -> int:
    return rays_per_chunk or RAYS_PER_CHUNK.get(torch.device(device).type, 2048)


def ray_project(x: Tensor, geom: RayGeometry, rays_per_chunk: int | None = None) -> Tensor:
    """Matrix-free ray transform of K images (K, n*n) -> (K, R). Differentiable (any order). rays_per_chunk:
    default by device (``RAYS_PER_CHUNK``)."""
    return _ProjectFn.apply(x.reshape(-1, geom.n, geom.n), geom, _chunk(rays_per_chunk, x.device), False)


def ray_backproject(y: Tensor, geom: RayGeometry, rays_per_chunk: int | None = None) -> Tensor:
    """Its adjoint (K, R) -> (K, n*n). Differentiable (any order)."""
    return _ProjectFn.apply(y, geom, _chunk(rays_per_chunk, y.device), True).reshape(y.shape[0], -1)


def pixel_backproject(q: Tensor, det_index, weight=None, views_per_chunk: int = 16,
                      geometry: tuple | None = None) -> Tensor:
    """Pixel-driven back-projection with linear interpolation along the detector, summed over views:
    q (K, V, D) -> (K, P). ``det_index(v0, v1)`` gives the continuous detector index (v1 - v0, P) float64 of
    every pixel for views [v0, v1); ``weight(v0, v1)`` an optional (v1 - v0, P) weight. Pixels projecting
    outside [0, D - 1] get 0 (numpy.interp(left=0, right=0)). Differentiable through q. ``geometry`` = (n,
    angles, centre index, source radius or 0 for parallel beam, virtual detector spacing): the same map in
    closed form, for the compiled kernel (CPU, no gradient needed)."""
    kernels = compiled_kernels(q) if geometry is not None else None
    if kernels is not None and not (torch.is_grad_enabled() and q.requires_grad):
        return kernels.pixel_backproject(q, *geometry).reshape(q.shape[0], -1)
    k, v, d = q.shape
    out = None
    for v0, v1 in _chunks(v, views_per_chunk):
        t = det_index(v0, v1)
        i0 = torch.floor(t)
        frac = (t - i0).to(q.dtype)
        i0 = i0.long()
        on = ((t >= 0) & (t <= d - 1)).to(q.dtype)
        if weight is not None:
            on = on * weight(v0, v1).to(q.dtype)
        lo, hi = i0.clamp(0, d - 1), (i0 + 1).clamp(0, d - 1)
        rows = q[:, v0:v1].to(q.device)  # (K, Vc, D)
        part = ((torch.gather(rows, 2, lo[None].expand(k, -1, -1)) * (1 - frac)
                 + torch.gather(rows, 2, hi[None].expand(k, -1, -1)) * frac) * on).sum(dim=1)
        out = part if out is None else out + part
    return out
