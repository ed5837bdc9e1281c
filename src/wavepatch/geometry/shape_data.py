"""A shape collection on disk -> TSDFs on one grid (the training and evaluation input of the shape priors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wavepatch.geometry.sdf import fit_mesh_to_grid, mask_surface, mask_to_tsdf, mesh_to_tsdf
from wavepatch.io.shape_files import ShapeFileError, mesh_files, read_mask_stack, read_mesh


def load_tsdfs(path: str | Path, split: str, truncation: float | None, grid: int | None = None,
               progress: bool = True) -> np.ndarray:
    """(N, G, G, G) float32 TSDFs (voxels, negative inside) of the shapes at ``path``; truncation None: 0.1 G.

    Masks (.npz split / .npy) keep their grid, which must be cubic (and equal ``grid`` when given); a folder of
    meshes is fitted one by one into a ``grid``^3 cube (:func:`fit_mesh_to_grid`; ``grid`` required, the split is
    ignored)."""
    path = Path(path)
    if path.is_dir():
        if grid is None:
            raise ShapeFileError("a folder of meshes needs a grid size (--grid)")
        files = mesh_files(path)
        truncation = 0.1 * grid if truncation is None else truncation
        out = np.empty((len(files), grid, grid, grid), np.float32)
        for i, f in enumerate(tqdm(files, desc="signed distances", disable=not progress)):
            verts, faces = read_mesh(f)
            out[i] = mesh_to_tsdf(fit_mesh_to_grid(verts, grid), faces, (grid,) * 3, truncation)
        return out
    masks = read_mask_stack(path, split)
    side = masks.shape[1]
    if masks.shape[1:] != (side,) * 3:
        raise ShapeFileError(f"{path}: shape masks must be cubic, got {masks.shape[1:]}")
    if grid is not None and side != grid:
        raise ShapeFileError(f"{path}: masks are {side}^3 but the grid is {grid}^3")
    truncation = 0.1 * side if truncation is None else truncation
    out = np.empty(masks.shape, np.float32)
    for i, m in enumerate(tqdm(masks, desc=f"signed distances ({split})", disable=not progress)):
        out[i] = mask_to_tsdf(m, truncation)
    return out


def load_surfaces(path: str | Path, split: str, grid: int | None = None, progress: bool = True) -> list:
    """Reference surfaces (vertices, faces) in grid voxel coordinates: marching cubes of each mask at 0.5, or
    each mesh fitted into the grid (as :func:`load_tsdfs` does)."""
    path = Path(path)
    if path.is_dir():
        if grid is None:
            raise ShapeFileError("a folder of meshes needs a grid size (--grid)")
        out = []
        for f in tqdm(mesh_files(path), desc="meshes", disable=not progress):
            verts, faces = read_mesh(f)
            out.append((fit_mesh_to_grid(verts, grid), faces))
        return out
    return [mask_surface(m) for m in tqdm(read_mask_stack(path, split), desc=f"surfaces ({split})",
                                          disable=not progress)]
