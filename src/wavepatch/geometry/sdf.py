"""Signed distance fields of shapes on a voxel grid: from binary masks and from closed triangle meshes.

Conventions. A grid is (D, H, W); voxel (i, j, k) has its centre at coordinate (i, j, k) in **voxel units**, so
the grid covers [-0.5, D - 0.5] x [-0.5, H - 0.5] x [-0.5, W - 0.5]. A signed distance field (SDF) holds, at every
voxel centre, the Euclidean distance (voxels) to the shape's surface, **negative inside**. A truncated SDF (TSDF)
is the SDF clipped to [-t, t].

The surface of a binary mask is its marching-cubes iso-surface at 0.5 (scikit-image), closed at the grid border.
Distances to that triangle mesh are exact point-to-triangle distances (libigl's ``signed_distance``, sign from
the angle-weighted pseudonormal, exact for a closed, outward-oriented mesh), so the SDF is sub-voxel accurate
rather than the voxel-centre distance a Euclidean distance transform gives. Only voxels within the truncation
band need the exact distance; the rest get +-t.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BAND_MARGIN = 1.5  # voxels: the distance-transform bound that selects voxels needing an exact distance


def _igl():
    import igl  # libigl: exact point-to-mesh signed distance

    return igl


def mask_surface(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float64 in voxel coordinates, faces (F, 3) int64, outward oriented) of a binary mask's
    marching-cubes surface at 0.5. The mask is padded by one empty voxel, so shapes touching the border close
    there. ValueError for an empty mask or one that is not 3-D."""
    from skimage import measure

    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"a shape mask must be 3-D (D, H, W), got shape {mask.shape}")
    if not mask.any():
        raise ValueError("the shape mask is empty (no voxel inside)")
    verts, faces, _, _ = measure.marching_cubes(np.pad(mask.astype(np.float32), 1), 0.5)
    verts = verts.astype(np.float64) - 1.0
    faces = faces.astype(np.int64)
    if mesh_volume(verts, faces) < 0:
        faces = faces[:, ::-1].copy()
    return verts, faces


def mesh_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume (voxels^3) enclosed by a closed triangle mesh; positive when faces are outward oriented."""
    a, b, c = (verts[faces[:, i]] for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def grid_points(shape: tuple[int, int, int]) -> np.ndarray:
    """(D*H*W, 3) float64 voxel-centre coordinates of a grid, in C order."""
    axes = [np.arange(n, dtype=np.float64) for n in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def mesh_signed_distance(points: np.ndarray, verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N,) exact signed distance (voxels, negative inside) from ``points`` (N, 3) to a closed, outward-oriented
    mesh (pseudonormal sign: 6x faster than libigl's default winding number, identical on closed meshes)."""
    igl = _igl()
    dist = igl.signed_distance(np.ascontiguousarray(points, np.float64), np.ascontiguousarray(verts, np.float64),
                               np.ascontiguousarray(faces, np.int64), igl.SIGNED_DISTANCE_TYPE_PSEUDONORMAL)[0]
    return np.asarray(dist, dtype=np.float64)


def mask_to_tsdf(mask: np.ndarray, truncation: float) -> np.ndarray:
    """(D, H, W) float32 TSDF of a binary mask (voxels, negative inside, clipped to [-truncation, truncation]).

    Exact distances to the mask's marching-cubes surface on every voxel whose distance-transform distance is
    within ``truncation + BAND_MARGIN`` (the surface lies within 1 voxel of a voxel boundary), +-truncation
    elsewhere (sign from the mask)."""
    mask = np.asarray(mask).astype(bool)
    verts, faces = mask_surface(mask)
    near = np.maximum(ndimage.distance_transform_edt(mask), ndimage.distance_transform_edt(~mask))
    near = near <= truncation + BAND_MARGIN
    out = np.where(mask, -truncation, truncation).astype(np.float64)
    idx = np.nonzero(near)
    out[idx] = mesh_signed_distance(np.stack(idx, -1).astype(np.float64), verts, faces)
    return np.clip(out, -truncation, truncation).astype(np.float32)


def mesh_to_tsdf(verts: np.ndarray, faces: np.ndarray, shape: tuple[int, int, int], truncation: float) -> np.ndarray:
    """(D, H, W) float32 TSDF of a closed mesh given in voxel coordinates of a ``shape`` grid (every voxel gets an
    exact distance; a mesh-derived field has no mask to restrict the band with)."""
    dist = mesh_signed_distance(grid_points(shape), verts, faces)
    return np.clip(dist, -truncation, truncation).reshape(shape).astype(np.float32)


def fit_mesh_to_grid(verts: np.ndarray, side: int, margin: float = 4.0) -> np.ndarray:
    """Vertices (V, 3) of any unit, scaled uniformly and centred so the mesh's bounding box fits a side^3 grid
    with ``margin`` voxels on the tightest axis (the normalisation a mesh file gets; masks keep their grid)."""
    lo, hi = verts.min(0), verts.max(0)
    extent = float((hi - lo).max())
    if not np.isfinite(extent) or extent <= 0:
        raise ValueError("the mesh is degenerate (zero extent)")
    scale = (side - 1 - 2 * margin) / extent
    return (verts - (lo + hi) / 2) * scale + (side - 1) / 2
