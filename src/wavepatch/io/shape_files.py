"""Shape collections on disk: stacks of binary masks (.npz / .npy) and folders of triangle meshes.

* ``.npz``: the MedMNIST 3-D layout (``train_images``, ``val_images``, ``test_images``, each (N, D, H, W) uint8
  0/255 or bool), or a single array (any key) when no split keys exist.
* ``.npy``: one (N, D, H, W) array of masks (or one (D, H, W) mask).
* a folder of ``.obj`` / ``.ply`` / ``.stl`` / ``.off`` meshes (read with trimesh; each must be watertight).

Masks are returned as bool arrays (value > half of the array's maximum); meshes as (vertices (V, 3) float64,
faces (F, 3) int64) in their own units. Errors are one-line ``ShapeFileError`` messages.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off")


class ShapeFileError(ValueError):
    """A shape file or folder that cannot be used."""


def _masks(array: np.ndarray, where: str) -> np.ndarray:
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or min(array.shape) < 1:
        raise ShapeFileError(f"{where}: masks must be (N, D, H, W), got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ShapeFileError(f"{where}: masks must be numeric or boolean, got dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ShapeFileError(f"{where}: masks hold NaN or infinite values")
    top = float(array.max()) if array.size else 0.0
    masks = array > (top / 2 if top > 0 else 0.5)
    empty = np.flatnonzero(~masks.reshape(len(masks), -1).any(1))
    if len(empty):
        raise ShapeFileError(f"{where}: {len(empty)} of {len(masks)} masks are empty (e.g. index {empty[0]})")
    return masks


def read_mask_stack(path: str | Path, split: str = "train") -> np.ndarray:
    """(N, D, H, W) bool masks of ``split`` from an .npz or .npy file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ShapeFileError(f"shape file {path} does not exist")
    if path.suffix == ".npy":
        try:
            return _masks(np.load(path, allow_pickle=False), str(path))
        except (ValueError, OSError) as exc:
            if isinstance(exc, ShapeFileError):
                raise
            raise ShapeFileError(f"{path} is not a readable .npy array ({exc})") from None
    if path.suffix != ".npz":
        raise ShapeFileError(f"{path}: shape masks come as .npz or .npy (or a folder of meshes)")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.files)
            key = f"{split}_images"
            if key in keys:
                return _masks(data[key], f"{path}[{key}]")
            if any(k.endswith("_images") for k in keys):
                raise ShapeFileError(f"{path} has no {key!r} (it has {', '.join(keys)})")
            if len(keys) != 1:
                raise ShapeFileError(f"{path} has neither split keys ({', '.join(s + '_images' for s in SPLITS)}) "
                                     f"nor a single array (it has {', '.join(keys) or 'nothing'})")
            return _masks(data[keys[0]], f"{path}[{keys[0]}]")
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        if isinstance(exc, ShapeFileError):
            raise
        raise ShapeFileError(f"{path} is not a readable .npz file ({exc})") from None


def mesh_files(folder: str | Path) -> list[Path]:
    """Mesh files of a folder, sorted; ShapeFileError if there are none."""
    folder = Path(folder)
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in MESH_SUFFIXES and p.is_file())
    if not found:
        raise ShapeFileError(f"{folder} holds no mesh files ({', '.join(MESH_SUFFIXES)})")
    return found


def read_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float64, faces (F, 3) int64) of a watertight triangle mesh file (trimesh)."""
    import trimesh

    path = Path(path)
    try:
        mesh = trimesh.load(path, force="mesh", process=True)
    except Exception as exc:  # trimesh raises many types for a broken file
        raise ShapeFileError(f"{path} is not a readable mesh ({type(exc).__name__}: {exc})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ShapeFileError(f"{path} holds no triangles")
    if not np.isfinite(mesh.vertices).all():
        raise ShapeFileError(f"{path} has NaN or infinite vertex coordinates")
    if not mesh.is_watertight:
        raise ShapeFileError(f"{path} is not a watertight mesh (open boundary or non-manifold edges); a signed "
                             "distance needs a closed surface")
    if mesh.volume < 0:
        mesh.invert()
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)
