"""2D X-ray CT: parallel-beam and fan-beam ray transforms with exact adjoints, and filtered back-projection.

Geometry (pixel units; image pixels are unit squares, pixel (i, j) centred at row i, column j):
- the rotation centre is pixel (N//2, N//2), as in scikit-image's ``radon``;
- parallel beam: view angle theta, detector coordinate t = (col - c) cos(theta) - (row - c) sin(theta),
  detector bins at unit spacing centred on bin D//2 with D = ceil(sqrt(2) N) (covers the image diagonal);
- fan beam (flat detector, full 360 degree scan): source at distance ``source_distance`` from the centre,
  detector at ``detector_distance`` beyond it, bins of width ``detector_spacing``.
Sinograms are tensors (B, C, V, D): V views by D detector bins, values are line integrals of the image
in (image value x pixel side).

Two implementations of the same linear maps (``projector=``): an explicit sparse matrix (fast, cached on disk,
memory ~ 51 V N^2 bytes with the FBP matrix) or matrix-free (:mod:`wavepatch.physics.ray_free`, memory bounded
by chunks). ``auto`` takes the matrix while its estimate fits ``WAVEPATCH_RAY_MATRIX_MB`` (default 2048 MB).
"""

from __future__ import annotations

import math
import os
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from wavepatch.physics.base import LinearOperator
from wavepatch.physics.ray_common import pixel_detector_index
from wavepatch.physics.ray_free import RayGeometry, pixel_backproject, ray_backproject, ray_project
from wavepatch.physics.ray_matrix import SparsePair, apply_sparse, cached_sparse_pair, ray_sampling_matrix

Tensor = torch.Tensor


def parallel_beam_angles(n_views: int, arc_degrees: float = 180.0) -> Tensor:
    """``n_views`` equispaced angles (radians, float64) in [0, arc)."""
    return torch.arange(n_views, dtype=torch.float64) * (math.radians(arc_degrees) / n_views)


PROJECTORS = ("auto", "matrix", "matrix-free")


def estimated_matrix_mb(n: int, n_views: int) -> float:
    """Memory of the explicit matrices of an n x n, V-view transform: about 2.2 V n^2 ray entries (stored twice,
    matrix and transpose) and 2 V n^2 FBP entries, 8 bytes each (float32 value, int32 index)."""
    return (2 * 2.2 + 2) * n_views * n * n * 8 / 2**20


def choose_projector(projector: str, n: int, n_views: int) -> str:
    """'matrix' or 'matrix-free' for ``projector`` ('auto' compares :func:`estimated_matrix_mb` with the budget
    ``WAVEPATCH_RAY_MATRIX_MB``, default 2048)."""
    if projector not in PROJECTORS:
        raise ValueError(f"projector must be one of {PROJECTORS}, got {projector!r}")
    if projector != "auto":
        return projector
    budget = float(os.environ.get("WAVEPATCH_RAY_MATRIX_MB", "2048"))
    return "matrix" if estimated_matrix_mb(n, n_views) <= budget else "matrix-free"


def default_detector_count(n: int) -> int:
    """Detector bins covering the diagonal of an n x n image (scikit-image's padded size)."""
    return n + int(math.ceil(math.sqrt(2) * n - n))


class _RayTransform(LinearOperator):
    """Shared code: rays applied to (B, C, N, N) images -> (B, C, V, D) sinograms, through the sparse matrix
    (``projector == 'matrix'``) or matrix-free (``self.rays``)."""

    n: int
    n_views: int
    n_detectors: int
    projector: str
    matrix: SparsePair | None
    rays: RayGeometry | None

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        b, c = x.shape[:2]
        if x.shape[-2:] != (self.n, self.n):
            raise ValueError(f"CT operator expects {self.n}x{self.n} images, got {tuple(x.shape[-2:])}")
        flat = x.reshape(b * c, self.n * self.n)
        y = apply_sparse(self.matrix, flat) if self.matrix is not None else ray_project(flat, self.rays)
        return y.reshape(b, c, self.n_views, self.n_detectors)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        b, c = y.shape[:2]
        flat = y.reshape(b * c, self.n_views * self.n_detectors)
        x = (apply_sparse(self.matrix, flat, transpose=True) if self.matrix is not None
             else ray_backproject(flat, self.rays))
        return x.reshape(b, c, self.n, self.n)

    def _set_rays(self, projector: str, matrix, rays) -> None:
        """Choose the implementation: ``matrix()`` -> the SparsePair (memory- and disk-cached), ``rays()`` ->
        (origins, directions, half_length, geometry key) for the matrix-free one."""
        self.projector = choose_projector(projector, self.n, self.n_views)
        if self.projector == "matrix":
            self.matrix, self.rays = matrix(), None
        else:
            origins, dirs, half, _ = rays()
            self.matrix, self.rays = None, RayGeometry(self.n, origins, dirs, half)

    @property
    def measurement_shape(self) -> tuple[int, int, int]:
        return (self.image_shape[0], self.n_views, self.n_detectors)


def _parallel_rays(n: int, angles: tuple[float, ...], n_det: int):
    th = torch.tensor(angles, dtype=torch.float64)
    t = torch.arange(n_det, dtype=torch.float64) - n_det // 2
    c = float(n // 2)
    cos, sin = torch.cos(th)[:, None], torch.sin(th)[:, None]
    origins = torch.stack([(c - t[None, :] * sin), (c + t[None, :] * cos)], dim=-1).reshape(-1, 2)
    dirs = torch.stack([cos.expand(-1, n_det), sin.expand(-1, n_det)], dim=-1).reshape(-1, 2)
    half = math.sqrt(2) * n / 2 + 2
    geometry = f"parallel|{n}|{n_det}|{','.join(f'{a:.12g}' for a in angles)}"
    return origins, dirs, half, geometry


@lru_cache(maxsize=8)
def _parallel_matrix(n: int, angles: tuple[float, ...], n_det: int) -> SparsePair:
    origins, dirs, half, geometry = _parallel_rays(n, angles, n_det)
    return cached_sparse_pair(geometry, lambda: ray_sampling_matrix(n, origins, dirs, half))


class ParallelBeamCT(_RayTransform):
    """Parallel-beam ray transform of N x N images: (B, C, N, N) -> sinogram (B, C, V, D).

    ``n_views`` equispaced angles over 180 degrees (or explicit ``angles`` in radians);
    ``n_detectors`` defaults to ceil(sqrt(2) N) unit-width bins. Matches ``skimage.transform.radon``
    (circle=False) with the same angles in degrees. ``projector``: 'auto', 'matrix' or 'matrix-free'.
    """

    def __init__(self, image_size: int, n_views: int = 60, angles: Tensor | None = None,
                 n_detectors: int | None = None, channels: int = 1, projector: str = "auto"):
        self.n = int(image_size)
        self.angles = (parallel_beam_angles(n_views) if angles is None
                       else torch.as_tensor(angles, dtype=torch.float64))
        self.n_views = int(self.angles.numel())
        self.n_detectors = int(n_detectors or default_detector_count(self.n))
        self.image_shape = (channels, self.n, self.n)
        key = (self.n, tuple(self.angles.tolist()), self.n_detectors)
        self._set_rays(projector, lambda: _parallel_matrix(*key), lambda: _parallel_rays(*key))

    def fbp(self, y: Tensor, filter_name: str = "ramp") -> Tensor:
        """Filtered back-projection (B, C, V, D) -> (B, C, N, N), ``filter_name`` 'ramp' or 'hann'.

        The same discretisation as ``skimage.transform.iradon`` (Kak & Slaney ramp, linear interpolation);
        exact for dense views over 180 degrees. Over another arc each view weighs d(theta) / 2 with the arc
        counted up to 180 degrees (a 360 degree scan measures each ray twice; a shorter one is incomplete).
        """
        q = ramp_filter(y, filter_name)
        weight = min(self.arc, math.pi) / (2 * self.n_views)
        if self.projector == "matrix-free":
            angles, c0 = self.angles, self.n_detectors // 2
            return _backproject_free(q, lambda v0, v1: _parallel_detector_coordinate(self.n, angles[v0:v1], c0),
                                     None, self.n, (angles, c0, 0.0, 1.0)) * weight
        matrix = _parallel_fbp_matrix(self.n, tuple(self.angles.tolist()), self.n_detectors)
        return _backproject(q, matrix) * weight

    @property
    def arc(self) -> float:
        """Angular range in radians: V equispaced steps of the first angle spacing (pi for a single view)."""
        if self.n_views < 2:
            return math.pi
        return float(self.angles[-1] - self.angles[0]) * self.n_views / (self.n_views - 1)


def _fan_rays(n: int, angles: tuple[float, ...], n_det: int, r_src: float, r_det: float, spacing: float):
    beta = torch.tensor(angles, dtype=torch.float64)[:, None]
    c = float(n // 2)
    u = (torch.arange(n_det, dtype=torch.float64) - (n_det - 1) / 2)[None, :] * spacing
    # (row, col) of source and detector bins; the source sits at angle beta, the detector opposite.
    src_r, src_c = c + r_src * torch.sin(beta), c + r_src * torch.cos(beta)
    det_r = c - r_det * torch.sin(beta) + u * torch.cos(beta)
    det_c = c - r_det * torch.cos(beta) - u * torch.sin(beta)
    dr, dc = det_r - src_r, det_c - src_c
    length = torch.sqrt(dr**2 + dc**2)
    dr, dc = dr / length, dc / length
    # Origin: the ray's point closest to the rotation centre.
    s0 = (c - src_r) * dr + (c - src_c) * dc
    origins = torch.stack([src_r + s0 * dr, src_c + s0 * dc], dim=-1).reshape(-1, 2)
    dirs = torch.stack([dr, dc], dim=-1).reshape(-1, 2)
    geometry = (f"fan|{n}|{n_det}|{r_src:.12g}|{r_det:.12g}|{spacing:.12g}|"
                f"{','.join(f'{a:.12g}' for a in angles)}")
    return origins, dirs, math.sqrt(2) * n / 2 + 2, geometry


@lru_cache(maxsize=8)
def _fan_matrix(n: int, angles: tuple[float, ...], n_det: int, r_src: float, r_det: float,
                spacing: float) -> SparsePair:
    origins, dirs, half, geometry = _fan_rays(n, angles, n_det, r_src, r_det, spacing)
    return cached_sparse_pair(geometry, lambda: ray_sampling_matrix(n, origins, dirs, half))


class FanBeamCT(_RayTransform):
    """Fan-beam ray transform with a flat detector over a full 360 degree scan.

    (B, C, N, N) -> (B, C, V, D). Distances in pixel units: ``source_distance`` (source to rotation centre,
    default 2N), ``detector_distance`` (rotation centre to detector, default 2N); ``detector_spacing``
    (bin width on the detector, default the magnification so bins are one pixel wide at the centre);
    ``n_detectors`` defaults to enough bins for the fan to cover the image's circumscribed circle.
    ``angles`` (radians): explicit source angles instead of ``n_views`` equispaced ones over 360 degrees (a
    subset of a full scan's views; FBP assumes they sample 360 degrees evenly).
    """

    def __init__(self, image_size: int, n_views: int = 60, source_distance: float | None = None,
                 detector_distance: float | None = None, detector_spacing: float | None = None,
                 n_detectors: int | None = None, channels: int = 1, projector: str = "auto",
                 angles: Tensor | None = None):
        self.n = int(image_size)
        self.r_src = float(source_distance or 2.0 * self.n)
        self.r_det = float(detector_distance or 2.0 * self.n)
        radius = math.sqrt(2) * self.n / 2 + 1
        if self.r_src <= radius:
            raise ValueError(f"source_distance {self.r_src} must exceed the image radius {radius:.1f} pixels")
        magnification = (self.r_src + self.r_det) / self.r_src
        self.spacing = float(detector_spacing or magnification)
        half_width = (self.r_src + self.r_det) * math.tan(math.asin(radius / self.r_src))
        self.n_detectors = int(n_detectors or 2 * math.ceil(half_width / self.spacing) + 1)
        self.angles = (parallel_beam_angles(n_views, 360.0) if angles is None
                       else torch.as_tensor(angles, dtype=torch.float64))
        self.n_views = int(self.angles.numel())
        self.image_shape = (channels, self.n, self.n)
        key = (self.n, tuple(self.angles.tolist()), self.n_detectors, self.r_src, self.r_det, self.spacing)
        self._set_rays(projector, lambda: _fan_matrix(*key), lambda: _fan_rays(*key))

    def fbp(self, y: Tensor, filter_name: str = "ramp") -> Tensor:
        """Fan-beam FBP for a flat detector (Kak & Slaney, ch. 3.4.2): cosine pre-weighting, ramp filter on
        the detector rescaled to the rotation centre, 1/U^2-weighted back-projection over 360 degrees."""
        scale = self.r_src / (self.r_src + self.r_det)  # detector -> virtual detector through the centre
        du = self.spacing * scale
        u = (torch.arange(self.n_detectors, dtype=torch.float64) - (self.n_detectors - 1) / 2) * du
        pre = (self.r_src / torch.sqrt(self.r_src**2 + u**2)).to(y)
        q = ramp_filter(y * pre, filter_name) / du
        # d(beta) = 2 pi / V, and each ray is measured twice over 360 degrees (factor 1/2); the discrete
        # filter carries the same factor 2 as the parallel-beam one.
        weight = math.pi / (2 * self.n_views)
        if self.projector == "matrix-free":
            def geometry(v0, v1):
                return _fan_pixel_geometry(self.n, self.angles[v0:v1], self.n_detectors, self.r_src, du)
            return _backproject_free(q, lambda v0, v1: geometry(v0, v1)[0], lambda v0, v1: geometry(v0, v1)[1],
                                     self.n, (self.angles, (self.n_detectors - 1) / 2, self.r_src, du)) * weight
        matrix = _fan_fbp_matrix(self.n, tuple(self.angles.tolist()), self.n_detectors, self.r_src, du)
        return _backproject(q, matrix) * weight


def _pixel_offsets(n: int) -> tuple[Tensor, Tensor]:
    idx = torch.arange(n, dtype=torch.float64) - n // 2
    dr, dc = torch.meshgrid(idx, idx, indexing="ij")
    return dr.reshape(-1), dc.reshape(-1)


def _fan_pixel_geometry(n: int, angles: Tensor, n_det: int, r_src: float, du: float) -> tuple[Tensor, Tensor]:
    """(detector index, 1/U^2 weight), each (V, N*N), of every pixel on the virtual detector through the centre."""
    beta = torch.as_tensor(angles, dtype=torch.float64)[:, None]
    dr, dc = _pixel_offsets(n)
    return pixel_detector_index(dr[None, :], dc[None, :], torch.cos(beta), torch.sin(beta), (n_det - 1) / 2,
                                r_src, du)


@lru_cache(maxsize=8)
def _fan_fbp_matrix(n: int, angles: tuple[float, ...], n_det: int, r_src: float, du: float) -> SparsePair:
    """Back-projection onto the virtual detector through the centre, with the 1/U^2 weight."""
    det_index, weight = _fan_pixel_geometry(n, torch.tensor(angles, dtype=torch.float64), n_det, r_src, du)
    return _backprojection_matrix(det_index, weight, n_det)


def _parallel_detector_coordinate(n: int, angles: Tensor, centre: float) -> Tensor:
    """(V, n*n): the continuous detector index of every pixel centre per view, the rotation centre on bin
    ``centre``."""
    dr, dc = _pixel_offsets(n)
    return pixel_detector_index(dr[None, :], dc[None, :], torch.cos(angles)[:, None], torch.sin(angles)[:, None],
                                centre, 0.0, 1.0)[0]


def _backproject(q: Tensor, matrix: SparsePair) -> Tensor:
    """Apply a pixel-driven back-projection matrix (see :func:`_backprojection_matrix`):
    q (B, C, V, D) filtered sinogram -> (B, C, N, N), the sum over views. Differentiable."""
    b, c, v, d = q.shape
    n = int(round(math.sqrt(matrix.shape[0])))
    return apply_sparse(matrix, q.reshape(b * c, v * d)).reshape(b, c, n, n)


def _backproject_free(q: Tensor, det_index, weight, n: int, geometry: tuple) -> Tensor:
    """Matrix-free :func:`_backproject`: q (B, C, V, D) -> (B, C, N, N) (``ray_free.pixel_backproject``;
    ``geometry`` = (angles, centre index, source radius or 0 for parallel beam, virtual detector spacing))."""
    b, c, v, d = q.shape
    return pixel_backproject(q.reshape(b * c, v, d), det_index, weight, geometry=(n, *geometry)).reshape(b, c, n, n)


def _backprojection_matrix(det_index: Tensor, weight: Tensor | None, d: int) -> SparsePair:
    """Sparse (N*N, V*D) matrix of pixel-driven back-projection with linear interpolation along the detector.

    det_index: (V, N*N) continuous detector index of each pixel centre per view; weight: optional (V, N*N).
    Pixels projecting outside [0, D-1] get 0, as numpy.interp(left=0, right=0) in skimage's iradon. Each
    pixel row holds exactly 2 V entries (some zero), so the CSR layout is written directly, without sorting.
    """
    v, npix = det_index.shape
    i0 = torch.floor(det_index)
    frac = det_index - i0
    i0 = i0.long()
    on_detector = (det_index >= 0) & (det_index <= d - 1)
    w = torch.ones_like(det_index) if weight is None else weight.to(det_index)
    cols, vals = [], []
    for shift, lin in ((0, 1 - frac), (1, frac)):
        ii = i0 + shift
        ok = (ii >= 0) & (ii < d) & on_detector
        cols.append((ii.clamp(0, d - 1) + torch.arange(v)[:, None] * d).T)  # (N*N, V)
        vals.append((lin * w * ok).T)
    col = torch.stack(cols, dim=2).reshape(-1).to(torch.int32)
    val = torch.stack(vals, dim=2).reshape(-1).to(torch.float32)
    crow = torch.arange(0, npix + 1, dtype=torch.int32) * (2 * v)
    return SparsePair(torch.sparse_csr_tensor(crow, col, val, (npix, v * d)))


@lru_cache(maxsize=8)
def _parallel_fbp_matrix(n: int, angles: tuple[float, ...], n_det: int) -> SparsePair:
    t_det = _parallel_detector_coordinate(n, torch.tensor(angles, dtype=torch.float64), n_det // 2)
    return _backprojection_matrix(t_det, None, n_det)


def ramp_filter(y: Tensor, filter_name: str = "ramp") -> Tensor:
    """Filter each projection (last axis) with the Kak & Slaney discrete ramp, optionally Hann-windowed.

    Zero-pads to the next power of two >= 2 D (at least 64), as ``skimage.transform.iradon`` does.
    """
    d = y.shape[-1]
    size = max(64, int(2 ** math.ceil(math.log2(2 * d))))
    filt = torch.as_tensor(_fourier_ramp(size, filter_name), dtype=y.dtype if not y.is_complex() else None,
                           device=y.device)
    spec = torch.fft.fft(F.pad(y, (0, size - d)), dim=-1) * filt
    return torch.fft.ifft(spec, dim=-1).real[..., :d].to(y.dtype)


@lru_cache(maxsize=16)
def _fourier_ramp(size: int, filter_name: str) -> np.ndarray:
    n = np.concatenate((np.arange(1, size / 2 + 1, 2, dtype=int), np.arange(size / 2 - 1, 0, -2, dtype=int)))
    f = np.zeros(size)
    f[0] = 0.25
    f[1::2] = -1 / (np.pi * n) ** 2
    filt = 2 * np.real(np.fft.fft(f))
    if filter_name == "hann":
        filt *= np.fft.fftshift(np.hanning(size))
    elif filter_name != "ramp":
        raise ValueError(f"unknown FBP filter '{filter_name}' (use 'ramp' or 'hann')")
    return filt
