"""From a TSDF back to a surface: marching cubes, surface point sampling, mesh files, a rendered figure.

Coordinates follow :mod:`wavepatch.geometry.sdf` (voxel units, voxel centres at integers). For evaluation,
points are mapped to the unit cube by :func:`unit_cube` (the grid spans [-0.5, 0.5]^3; one scale for every shape,
so size and position on the grid, which carry anatomy, are kept).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MESH_FORMATS = ("obj", "ply", "stl", "off")


def tsdf_to_mesh(tsdf: np.ndarray, level: float = 0.0):
    """trimesh.Trimesh (voxel coordinates, outward oriented) of the ``level`` iso-surface of a (D, H, W) field,
    padded by one voxel of +max so surfaces that reach the border close there; None when the field never crosses
    ``level`` (an empty or full shape)."""
    import trimesh
    from skimage import measure

    tsdf = np.asarray(tsdf, dtype=np.float32)
    if tsdf.ndim != 3:
        raise ValueError(f"a TSDF must be 3-D (D, H, W), got shape {tsdf.shape}")
    if not np.isfinite(tsdf).all():
        raise ValueError("the TSDF holds NaN or infinite values")
    if not (tsdf.min() < level < tsdf.max()):
        return None
    padded = np.pad(tsdf, 1, constant_values=max(float(tsdf.max()), level + 1.0))
    verts, faces, _, _ = measure.marching_cubes(padded, level)
    mesh = trimesh.Trimesh(verts - 1.0, faces, process=True)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def sample_surface(mesh, count: int, seed: int = 0) -> np.ndarray:
    """(count, 3) float32 points drawn uniformly (by area) on a mesh's surface, reproducible by ``seed``."""
    import trimesh

    points, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return np.asarray(points, dtype=np.float32)


def unit_cube(points: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
    """Voxel coordinates of a ``grid`` -> the unit cube [-0.5, 0.5]^3 (divided by the largest side)."""
    grid_arr = np.asarray(grid, dtype=np.float32)
    return ((points + 0.5) - grid_arr / 2) / float(grid_arr.max())


def export_mesh(mesh, path: Path) -> None:
    """Write a mesh as .obj / .ply / .stl / .off (by the suffix of ``path``)."""
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in MESH_FORMATS:
        raise ValueError(f"mesh format must be one of {', '.join(MESH_FORMATS)}, got {fmt!r}")
    path.write_bytes(_as_bytes(mesh.export(file_type=fmt)))


def _as_bytes(data) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def render_meshes(meshes: list, path: Path, titles: list[str] | None = None, views: tuple[tuple[float, float], ...]
                  = ((20.0, 30.0), (20.0, 120.0), (80.0, 0.0)), grid: tuple[int, int, int] | None = None,
                  columns: int | None = None) -> None:
    """PNG figure: meshes in rows of ``columns`` (default: all in one row), each row block repeated once per view
    (elevation, azimuth in degrees); None draws an empty cell titled 'empty'. Flat-shaded with matplotlib, axes
    fixed to ``grid`` (voxels) when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    n = columns or len(meshes)
    blocks = -(-len(meshes) // n)
    rows = blocks * len(views)
    fig = plt.figure(figsize=(1.9 * n, 1.9 * rows))
    light = np.array([0.3, 0.4, 0.85])
    light /= np.linalg.norm(light)
    for v, (elev, azim) in enumerate(views):
        for i, mesh in enumerate(meshes):
            r = (i // n) * len(views) + v
            ax = fig.add_subplot(rows, n, r * n + i % n + 1, projection="3d")
            ax.set_axis_off()
            if v == 0 and titles is not None:
                ax.set_title(titles[i], fontsize=7)
            if mesh is None:
                ax.set_title("empty", fontsize=7)
                continue
            tri = mesh.vertices[mesh.faces]
            shade = 0.35 + 0.65 * np.clip(mesh.face_normals @ light, 0, 1)
            coll = Poly3DCollection(tri, facecolors=np.stack([shade * 0.85, shade * 0.55, shade * 0.45], -1),
                                    edgecolor="none")
            ax.add_collection3d(coll)
            lo, hi = (np.zeros(3), np.asarray(grid, float) - 1) if grid else (mesh.bounds[0], mesh.bounds[1])
            centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2
            for setter, mid in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre, strict=True):
                setter(mid - half, mid + half)
            ax.view_init(elev=elev, azim=azim)
    fig.subplots_adjust(0, 0, 1, 0.95, 0, 0)
    fig.savefig(path, dpi=110)
    plt.close(fig)
