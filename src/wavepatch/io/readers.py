"""Read medical and ordinary images into one in-memory form: a float32 stack of 2-D slices.

Supported inputs (``read_image`` picks by extension, or by content for DICOM files without one):

* DICOM: a single file (one slice, or a multi-frame file with NumberOfFrames > 1), or a folder holding a
  series. Stored values go through RescaleSlope/RescaleIntercept, so CT comes out in Hounsfield units.
  A series is sorted along the slice normal (ImagePositionPatient projected on
  ImageOrientationPatient's row x column direction), falling back to InstanceNumber. Compressed transfer
  syntaxes (JPEG Baseline/Extended/Lossless, JPEG-LS, JPEG 2000, RLE) are decoded by the pylibjpeg plugins
  (pylibjpeg-libjpeg, -openjpeg, -rle); a missing decoder is reported with the package to install.
* NIfTI (``.nii``, ``.nii.gz``): reoriented to RAS+ first, then sliced along ``axis`` and shown in the
  radiological view DICOM viewers use (see ``nifti_to_display``).
* PNG / JPEG / TIFF through Pillow, as grayscale; 16-bit PNG/TIFF values are kept; multi-page TIFF pages
  become slices. Values are the stored integers (0-255 for 8-bit), not rescaled.
* ``.npy``: a 2-D (H, W) or 3-D (S, H, W) numeric array, loaded with ``allow_pickle=False``.

Every failure a user can cause (missing or corrupt file, unknown format, NaN values, wrong shape) is raised
as ``ImageReadError`` with a one-line message naming the file; library exceptions are chained, not leaked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wavepatch.io.dicom import find_dicom_series, read_dicom_file, read_dicom_folder  # noqa: F401 (re-export)
from wavepatch.io.image_stack import (  # noqa: F401 (ImageReadError, ImageVolume, KINDS: re-exported)
    DICOM_SUFFIXES,
    KINDS,
    NIFTI_SUFFIXES,
    PILLOW_SUFFIXES,
    ImageReadError,
    ImageVolume,
    PathLike,
    SliceSelection,
    check_kind,
    file_suffix,
    finish_stack,
    has_dicom_preamble,
    read_error,
    select_slices,
)

# --------------------------------------------------------------------------------------------------- NIfTI


def nifti_to_display(volume: np.ndarray) -> np.ndarray:
    """Turn (S, P, Q) slices of a RAS+ volume into the radiological display orientation, (S, Q, P).

    P and Q are the two in-plane voxel axes in RAS+ order (for axial slices P runs to the patient's Right,
    Q to Anterior). ``np.rot90`` (counter-clockwise) after flipping P puts -Q down the rows and -P across
    the columns: axial slices show anterior at the top and the patient's right on the image's left, exactly
    like an axial CT with the standard DICOM orientation (1,0,0,0,1,0); coronal and sagittal slices show
    superior at the top. Inverse: ``display_to_nifti``.
    """
    return np.rot90(np.flip(volume, axis=1), k=1, axes=(1, 2))


def display_to_nifti(volume: np.ndarray) -> np.ndarray:
    """Inverse of ``nifti_to_display``: (S, Q, P) display slices -> (S, P, Q) RAS+ voxel order."""
    return np.flip(np.rot90(volume, k=-1, axes=(1, 2)), axis=1)


_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand data more than ~1032:1


def _check_nifti_size(path: Path, img) -> None:
    """Refuse a header whose dimensions need more voxel bytes than the file can hold.

    nibabel allocates the whole (header-sized) buffer before reading, so a corrupt dim field would otherwise
    ask for terabytes. Compressed files are bounded by deflate's maximum expansion ratio."""
    shape = tuple(int(n) for n in img.header.get_data_shape())
    count = 1
    for n in shape:
        count *= n
    expected = count * np.dtype(img.header.get_data_dtype()).itemsize + int(getattr(img.dataobj, "offset", 0) or 0)
    size = path.stat().st_size
    gz = path.name.lower().endswith(".gz")
    available = size * _DEFLATE_MAX_RATIO + 4096 if gz else size
    if expected > available:
        raise read_error(path, f"corrupt NIfTI file: header dimensions {shape} need {expected} bytes, more than the "
                    f"file {'can decompress to' if gz else 'holds'} ({available})")


def _read_nifti(path: Path, axis: int, slices: SliceSelection, kind: str | None) -> ImageVolume:
    import nibabel as nib

    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    try:
        img = nib.load(path)
        _check_nifti_size(path, img)
        img = nib.as_closest_canonical(img)  # voxel axes become R, A, S whatever the file stores
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except ImageReadError:
        raise
    except Exception as exc:  # nibabel/gzip/zlib raise assorted types on bad files
        raise read_error(path, "corrupt or unreadable NIfTI file", exc) from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise read_error(path, f"expected a 3-D NIfTI volume, got shape {data.shape}")
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    zooms += [1.0] * (3 - len(zooms))
    in_plane = [a for a in range(3) if a != axis]  # (P, Q) in RAS+ order
    stack = nifti_to_display(np.moveaxis(data, axis, 0))
    data = finish_stack(path, stack, slices)
    spacing = (zooms[in_plane[1]], zooms[in_plane[0]])  # rows run along Q, columns along P
    return ImageVolume(data, kind or "mri", spacing, str(path), None)


# --------------------------------------------------------------------------------------- Pillow and NumPy


def _read_pillow(path: Path, slices: SliceSelection, kind: str | None) -> ImageVolume:
    from PIL import Image, ImageSequence

    pages = []
    try:
        with Image.open(path) as img:
            for page in ImageSequence.Iterator(img):
                if page.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F"):
                    arr = np.asarray(page)  # keeps 16-bit and float TIFF values
                else:
                    arr = np.asarray(page.convert("L"))  # colour -> luminance (ITU-R 601)
                pages.append(arr.astype(np.float32))
    except Exception as exc:  # UnidentifiedImageError, truncated files, decompression bombs
        raise read_error(path, "corrupt or unreadable image file", exc) from exc
    if len({p.shape for p in pages}) != 1:
        raise read_error(path, f"pages of different sizes {sorted({p.shape for p in pages})}")
    data = finish_stack(path, np.stack(pages), slices)
    return ImageVolume(data, kind or "generic", None, str(path), None)


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def npy_header(path: Path) -> tuple[np.dtype, int]:
    """Validate a .npy file's header without loading it: (dtype, bytes of array data the header promises)."""
    from numpy.lib import format as npy_format

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
        if head[:4] == _ZIP_MAGIC:
            raise read_error(path, "is an .npz archive, expected a single .npy array")
        if head != _NPY_MAGIC:
            if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
                why = "looks like pickled Python objects, refused; only plain numeric arrays are read"
            else:
                why = "no NumPy header; save the array with numpy.save"
            raise read_error(path, f"not a valid .npy array ({why})")
        f.seek(0)
        try:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = npy_format.read_array_header_2_0(f)
            else:  # 3.0 (UTF-8 field names) has no public header reader
                shape, _, dtype = npy_format._read_array_header(f, version)
        except Exception as exc:
            raise read_error(path, "not a valid .npy array (corrupt header)", exc) from exc
        offset = f.tell()
    if dtype.hasobject:
        raise read_error(path, "holds pickled Python objects, refused (only plain numeric arrays are read)")
    count = 1
    for n in shape:
        count *= int(n)
    expected = count * dtype.itemsize
    if expected > size - offset:  # checked before loading: np.load allocates what the header claims
        raise read_error(path, f"not a valid .npy array (truncated: header promises shape {shape} of {dtype}, "
                    f"{expected} bytes, file holds {max(size - offset, 0)})")
    return dtype, expected


def _read_npy(path: Path, slices: SliceSelection, kind: str | None) -> ImageVolume:
    try:
        npy_header(path)
        arr = np.load(path, allow_pickle=False)  # never unpickle user files
    except ImageReadError:
        raise
    except Exception as exc:
        raise read_error(path, "not a valid .npy array (corrupt or unreadable file)", exc) from exc
    if not isinstance(arr, np.ndarray):
        raise read_error(path, "is an .npz archive, expected a single .npy array")
    if arr.dtype.kind not in "biuf":
        raise read_error(path, f"unsupported array dtype {arr.dtype} (need real numbers)")
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim != 3:
        raise read_error(path, f"expected a 2-D (H, W) or 3-D (S, H, W) array, got shape {arr.shape}")
    data = finish_stack(path, arr, slices)
    return ImageVolume(data, kind or "generic", None, str(path), None)


# --------------------------------------------------------------------------------------------------- entry


def read_image(
    path: PathLike,
    axis: int = 2,
    slices: SliceSelection = None,
    kind: str | None = None,
    series: str | None = None,
) -> ImageVolume:
    """Read a file or DICOM series folder into an ``ImageVolume`` with data of shape (S, H, W), float32.

    path: a DICOM file (single or multi-frame; any extension, or none, if it is DICOM), a folder holding a
        DICOM series, a NIfTI file, a PNG/JPEG/TIFF image, or a .npy array (2-D (H, W) or 3-D (S, H, W)).
    axis: NIfTI only: the RAS+ voxel axis to slice along (0 sagittal, 1 coronal, 2 axial).
    slices: optional slice indices (sequence of ints or a ``slice``) into the sorted stack; for a
        single-frame DICOM series only the selected files are decoded.
    kind: override the detected kind ('ct', 'mri', 'generic'); detection: DICOM Modality CT -> 'ct',
        MR -> 'mri', other -> 'generic'; NIfTI -> 'mri'; images and arrays -> 'generic'.
    series: for a folder holding several DICOM series, the SeriesInstanceUID to read
        (``find_dicom_series`` lists them).

    Raises ImageReadError for missing, corrupt, unsupported, non-finite or wrongly shaped inputs.
    """
    check_kind(kind)
    p = Path(path)
    if not p.exists():
        raise read_error(path, "no such file or folder")
    if p.is_dir():
        return read_dicom_folder(p, slices, kind, series)
    suffix = file_suffix(p)
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti(p, axis, slices, kind)
    if suffix in PILLOW_SUFFIXES:
        return _read_pillow(p, slices, kind)
    if suffix == ".npy":
        return _read_npy(p, slices, kind)
    if suffix in DICOM_SUFFIXES:
        return read_dicom_file(p, slices, kind)
    if suffix == "" or has_dicom_preamble(p):
        # DICOM files are often stored without extension, or named by UID ('1.2.840.113619.2.55.3.4').
        return read_dicom_file(p, slices, kind)
    raise read_error(
        path,
        f"unsupported file type {suffix!r} (supported: DICOM, {', '.join(NIFTI_SUFFIXES)}, "
        f"{', '.join(PILLOW_SUFFIXES)}, .npy)",
    )
