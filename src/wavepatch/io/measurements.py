"""Measured CT sinograms in and out: a 2-D array of V views x D detector bins from .npy or NIfTI.

Values are post-log line integrals p = -log(I / I0) (dimensionless, the integral of the attenuation coefficient
along each ray) or raw detector counts I; the CLI converts either to the CT operator's units. Every problem is
one ``MeasurementReadError`` line naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wavepatch.io.atomic import PathLike
from wavepatch.io.readers import npy_header
from wavepatch.io.writers import save_npy


class MeasurementReadError(ValueError):
    """A measurement file that cannot be used (unreadable, wrong shape, non-finite values)."""


def read_sinogram(path: PathLike) -> np.ndarray:
    """(V, D) float32 sinogram from ``.npy`` (V, D) (singleton leading axes allowed) or NIfTI (squeezed to 2-D)."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            npy_header(path)  # a header promising more data than the file holds is refused before allocation
            arr = np.load(path, allow_pickle=False)
        elif name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            arr = np.asarray(nib.load(str(path)).dataobj)
        else:
            raise MeasurementReadError(f"{path}: a sinogram must be .npy or NIfTI (.nii, .nii.gz)")
    except MeasurementReadError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "pickle" in reason.lower():
            reason = "not a valid .npy array file"
        raise MeasurementReadError(f"{path}: cannot read the sinogram ({reason})") from None
    if np.iscomplexobj(arr) or not np.issubdtype(arr.dtype, np.number):
        raise MeasurementReadError(f"{path}: a sinogram holds real numbers, got dtype {arr.dtype}")
    arr = np.squeeze(arr)
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise MeasurementReadError(f"{path}: a sinogram is 2-D (views, detector bins), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise MeasurementReadError(f"{path}: the sinogram holds NaN or infinite values")
    return np.ascontiguousarray(arr, dtype=np.float32)


def save_sinogram(path: PathLike, line_integrals: np.ndarray, protect=()) -> Path:
    """Write a (V, D) post-log sinogram as .npy (atomic)."""
    return save_npy(path, np.asarray(line_integrals, dtype=np.float32), protect=protect)
