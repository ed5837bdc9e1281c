"""The in-memory form every reader returns (``ImageVolume``), its error type, and the checks the readers share
(slice selection, shape and finiteness, the kind, file suffixes)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PathLike = str | os.PathLike
SliceSelection = Sequence[int] | slice | None

KINDS = ("ct", "mri", "generic")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class ImageReadError(ValueError):
    """An input image could not be read; the message says which file and why, in one line."""


@dataclass
class ImageVolume:
    """A stack of 2-D slices as read from disk.

    data: float32 array (S, H, W): S slices of H rows and W columns; row 0 is the top of the displayed image.
    kind: 'ct' (values in Hounsfield units), 'mri' or 'generic' (arbitrary intensity units).
    spacing: (row spacing, column spacing) in mm, i.e. the distance between neighbouring rows and between
        neighbouring columns (DICOM PixelSpacing order), or None when the format does not record it.
    source: the path that was read (file or folder), as given.
    dicom_headers: for DICOM input, the pydicom Datasets without pixel data, one per slice of ``data`` for
        a single-frame series (one per file for multi-frame files); None for other formats.
        ``save_dicom_series`` copies patient/study identity and geometry from them.
    """

    data: np.ndarray
    kind: str
    spacing: tuple[float, float] | None
    source: str
    dicom_headers: list | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(S, H, W)."""
        return tuple(self.data.shape)  # type: ignore[return-value]


def read_error(path: PathLike, why: str, exc: BaseException | None = None) -> ImageReadError:
    detail = ""
    if exc is not None:
        text = str(exc).strip().splitlines()
        detail = f" ({type(exc).__name__}: {text[0] if text else ''})"
    return ImageReadError(f"{path}: {why}{detail}")


def file_suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def has_dicom_preamble(path: Path) -> bool:
    # Part 10 files carry 'DICM' after a 128-byte preamble; cheap to test without a DICOM parser.
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def check_kind(kind: str | None) -> None:
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")


def finish_stack(path: PathLike, data: np.ndarray, slices: SliceSelection) -> np.ndarray:
    """Select slices, check shape and finiteness; return float32 (S, H, W) data."""
    if data.ndim != 3 or min(data.shape) < 1:
        raise read_error(path, f"expected a stack of 2-D slices, got array of shape {data.shape}")
    index = select_slices(path, data.shape[0], slices)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to Inf is reported just below
        data = np.ascontiguousarray(data[index], dtype=np.float32)
    bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise read_error(path, f"{bad} NaN/Inf values (or values beyond float32 range)")
    return data


def select_slices(path: PathLike, n: int, slices: SliceSelection) -> np.ndarray:
    if slices is None:
        return np.arange(n)
    try:
        index = np.arange(n)[slices if isinstance(slices, slice) else np.asarray(slices, dtype=np.int64)]
    except (IndexError, ValueError, TypeError) as exc:
        raise read_error(path, f"invalid slice selection {slices!r} for {n} slices", exc) from exc
    index = np.atleast_1d(index)
    if index.size == 0:
        raise read_error(path, f"slice selection {slices!r} selects nothing from {n} slices")
    return index
