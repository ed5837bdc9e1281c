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


def _fail(path: PathLike, why: str, exc: BaseException | None = None) -> ImageReadError:
    detail = ""
    if exc is not None:
        text = str(exc).strip().splitlines()
        detail = f" ({type(exc).__name__}: {text[0] if text else ''})"
    return ImageReadError(f"{path}: {why}{detail}")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _has_dicom_preamble(path: Path) -> bool:
    # Part 10 files carry 'DICM' after a 128-byte preamble; cheap to test without a DICOM parser.
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")


def _finish(path: PathLike, data: np.ndarray, slices: SliceSelection) -> np.ndarray:
    """Select slices, check shape and finiteness; return float32 (S, H, W) data."""
    if data.ndim != 3 or min(data.shape) < 1:
        raise _fail(path, f"expected a stack of 2-D slices, got array of shape {data.shape}")
    index = _select(path, data.shape[0], slices)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to Inf is reported just below
        data = np.ascontiguousarray(data[index], dtype=np.float32)
    bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise _fail(path, f"{bad} NaN/Inf values (or values beyond float32 range)")
    return data


def _select(path: PathLike, n: int, slices: SliceSelection) -> np.ndarray:
    if slices is None:
        return np.arange(n)
    try:
        index = np.arange(n)[slices if isinstance(slices, slice) else np.asarray(slices, dtype=np.int64)]
    except (IndexError, ValueError, TypeError) as exc:
        raise _fail(path, f"invalid slice selection {slices!r} for {n} slices", exc) from exc
    index = np.atleast_1d(index)
    if index.size == 0:
        raise _fail(path, f"slice selection {slices!r} selects nothing from {n} slices")
    return index


# --------------------------------------------------------------------------------------------------- DICOM


def _dcmread(path: Path, stop_before_pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        first = exc
    except Exception as exc:  # pydicom raises many types (EOFError, struct.error, ...) on corrupt files
        raise _fail(path, "corrupt or unreadable DICOM file", exc) from exc
    # Old (ACR-NEMA style) files lack the 128-byte preamble; accept them only if they parse into something
    # that looks like an image, so a text file named .dcm is still rejected.
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
    except Exception as exc:
        raise _fail(path, "not a DICOM file", first) from exc
    if "Rows" not in ds or "Columns" not in ds:
        raise _fail(path, "not a DICOM file", first) from first
    return ds


def _kind_from_modality(ds) -> str:
    modality = str(ds.get("Modality", "")).upper()
    return {"CT": "ct", "MR": "mri"}.get(modality, "generic")


def _functional_group_item(ds, frame: int, sequence: str):
    """First item of ``sequence`` in the per-frame or else the shared functional group (enhanced DICOM)."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(groups)
        if seq and len(seq) > index and seq[index].get(sequence):
            return seq[index].get(sequence)[0]
    return None


def _dicom_spacing(ds) -> tuple[float, float] | None:
    spacing = ds.get("PixelSpacing")
    if spacing is None:
        item = _functional_group_item(ds, 0, "PixelMeasuresSequence")
        spacing = item.get("PixelSpacing") if item is not None else None
    try:
        if spacing is None or len(spacing) != 2:
            return None
        row, col = float(spacing[0]), float(spacing[1])
    except (TypeError, ValueError):  # a malformed DS value: the image is still usable without spacing
        return None
    return (row, col) if np.isfinite(row) and np.isfinite(col) and row > 0 and col > 0 else None


def _rescale(arr: np.ndarray, ds) -> np.ndarray:
    """Stored values -> modality values (HU for CT); ``arr`` is (F, H, W)."""
    from pydicom.pixels import apply_rescale

    if "ModalityLUTSequence" in ds or ("RescaleSlope" in ds and "RescaleIntercept" in ds):
        return np.asarray(apply_rescale(arr, ds), dtype=np.float64)
    out = arr.astype(np.float64)
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:  # apply_rescale needs both; the other defaults
        return out * float(ds.get("RescaleSlope", 1.0)) + float(ds.get("RescaleIntercept", 0.0))
    # Enhanced multi-frame files keep slope/intercept per frame (or shared) in functional groups.
    for frame in range(arr.shape[0]):
        item = _functional_group_item(ds, frame, "PixelValueTransformationSequence")
        if item is not None and "RescaleSlope" in item:
            out[frame] = out[frame] * float(item.RescaleSlope) + float(item.get("RescaleIntercept", 0.0))
    return out


# Which pip packages give pydicom a decoder for each compressed transfer syntax (pydicom itself decodes the
# uncompressed ones, Deflated and RLE Lossless; pylibjpeg-rle only makes RLE faster). These are dependencies
# of wavepatch, so a missing one means a broken or partial installation.
_LIBJPEG = ("pylibjpeg", "pylibjpeg-libjpeg")
_OPENJPEG = ("pylibjpeg", "pylibjpeg-openjpeg")
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": _LIBJPEG,  # JPEG Baseline (process 1), 8-bit
    "1.2.840.10008.1.2.4.51": _LIBJPEG,  # JPEG Extended (processes 2 and 4), 12-bit
    "1.2.840.10008.1.2.4.57": _LIBJPEG,  # JPEG Lossless, non-hierarchical (process 14)
    "1.2.840.10008.1.2.4.70": _LIBJPEG,  # JPEG Lossless, process 14, selection value 1
    "1.2.840.10008.1.2.4.80": _LIBJPEG,  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": _LIBJPEG,  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": _OPENJPEG,  # JPEG 2000 lossless only
    "1.2.840.10008.1.2.4.91": _OPENJPEG,  # JPEG 2000 (lossless or lossy)
    "1.2.840.10008.1.2.4.201": _OPENJPEG,  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": _OPENJPEG,  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": _OPENJPEG,  # HTJ2K
    "1.2.840.10008.1.2.5": ("pylibjpeg", "pylibjpeg-rle"),  # RLE Lossless
}


def _transfer_syntax(ds):
    return getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)


def _syntax_name(ds) -> str:
    uid = _transfer_syntax(ds)
    if uid is None:
        return "unknown"
    name = getattr(uid, "name", "") or str(uid)
    return name if name == str(uid) else f"{name}, {uid}"


def _check_decoder(ds, path: Path) -> None:
    """ImageReadError naming the transfer syntax and the package to install when pydicom cannot decode it."""
    uid = _transfer_syntax(ds)
    if uid is None or "PixelData" not in ds:
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:  # private or retired syntaxes (JPIP, MPEG, HEVC video ...)
        raise _fail(path, f"unsupported DICOM transfer syntax {_syntax_name(ds)}: no pixel data decoder exists "
                    "in pydicom for it") from exc
    except Exception:  # a malformed UID: let pixel_array report it
        return
    if not decoder.is_available:
        packages = _DECODER_PACKAGES.get(str(uid), _LIBJPEG + _OPENJPEG[1:] + ("pylibjpeg-rle",))
        raise _fail(path, f"cannot decode DICOM pixel data: no decoder installed for transfer syntax "
                    f"{_syntax_name(ds)}; install {' and '.join(packages)} (pip install {' '.join(packages)})")


def _dicom_pixels(ds, path: Path) -> np.ndarray:
    """Decoded, rescaled pixels of one DICOM dataset as (F, H, W) float64."""
    try:
        return _dicom_pixels_unchecked(ds, path)
    except ImageReadError:
        raise
    except Exception as exc:  # malformed header values (IS/DS strings, VRs) surface as assorted types
        raise _fail(path, "invalid DICOM image header", exc) from exc


def _dicom_pixels_unchecked(ds, path: Path) -> np.ndarray:
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise _fail(path, "DICOM file holds no pixel data")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise _fail(path, f"colour DICOM (SamplesPerPixel={ds.SamplesPerPixel}) is not supported")
    _check_decoder(ds, path)
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise _fail(path, f"cannot decode DICOM pixel data (transfer syntax {_syntax_name(ds)})", exc) from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    arr = np.asarray(arr)
    if frames == 1 and arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] != frames:
        raise _fail(path, f"unexpected DICOM pixel array shape {arr.shape} for {frames} frame(s)")
    return _rescale(arr, ds)


def _read_dicom_file(path: Path, slices: SliceSelection, kind: str | None) -> ImageVolume:
    ds = _dcmread(path)
    data = _finish(path, _dicom_pixels(ds, path), slices)
    for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if tag in ds:  # headers are kept for writing derived series; the pixels already live in ``data``
            delattr(ds, tag)
    return ImageVolume(data, kind or _kind_from_modality(ds), _dicom_spacing(ds), str(path), [ds])


def _dicom_header_rows_columns(path: Path, ds) -> tuple[int, int]:
    try:
        return int(ds.Rows), int(ds.Columns)
    except Exception as exc:
        raise _fail(path, "invalid DICOM image header (Rows/Columns)", exc) from exc


def _dicom_candidates(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return [p for p in files if _suffix(p) in DICOM_SUFFIXES or _has_dicom_preamble(p)]


def find_dicom_series(folder: PathLike) -> dict[str, list[Path]]:
    """Group the DICOM files directly inside ``folder`` by SeriesInstanceUID.

    Files are recognised by a .dcm/.dicom/.ima extension or the 'DICM' marker; others (README, .DS_Store)
    are ignored; hidden files and subfolders are skipped. Returns {SeriesInstanceUID: [paths in name order]}
    (empty when there are none). A recognised file that does not parse raises ``ImageReadError``.
    """
    series: dict[str, list[Path]] = {}
    for path in _dicom_candidates(Path(folder)):
        ds = _dcmread(path, stop_before_pixels=True)
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(path)
    return series


def _header_int(ds, keyword: str, default: int) -> int:
    """An integer header value, ``default`` when absent, empty or malformed (decoding reports those)."""
    try:
        return int(ds.get(keyword) or default)
    except Exception:
        return default


def _slice_sort_keys(headers: list) -> list[float] | None:
    """Position of each slice along the series' slice normal (mm), or None when geometry is missing."""
    try:
        orient = np.asarray(headers[0].ImageOrientationPatient, dtype=np.float64)
        normal = np.cross(orient[:3], orient[3:])
        return [float(np.dot(np.asarray(h.ImagePositionPatient, dtype=np.float64), normal)) for h in headers]
    except Exception:  # missing or malformed geometry: fall back to InstanceNumber
        return None


def _sort_series(paths: list[Path], headers: list) -> tuple[list[Path], list]:
    positions = _slice_sort_keys(headers)
    numbers = [_header_int(h, "InstanceNumber", 0) for h in headers]
    if positions is not None:
        order = sorted(range(len(paths)), key=lambda i: (positions[i], numbers[i], paths[i].name))
    else:
        order = sorted(range(len(paths)), key=lambda i: (numbers[i], paths[i].name))
    return [paths[i] for i in order], [headers[i] for i in order]


def _read_dicom_folder(
    folder: Path, slices: SliceSelection, kind: str | None, series: str | None
) -> ImageVolume:
    groups = find_dicom_series(folder)
    if not groups:
        others = [p for p in folder.iterdir() if not p.name.startswith(".")]
        if not others:
            raise _fail(folder, "empty folder")
        raise _fail(
            folder,
            f"no DICOM files among {len(others)} entries; a folder is read as a DICOM series only "
            "(pass other files one by one)",
        )
    if series is not None:
        if series not in groups:
            raise _fail(folder, f"no DICOM series with SeriesInstanceUID {series}")
        paths = groups[series]
    elif len(groups) > 1:
        listing = "; ".join(f"{uid} ({len(p)} files)" for uid, p in groups.items())
        raise _fail(folder, f"holds {len(groups)} DICOM series, pass series=<SeriesInstanceUID>: {listing}")
    else:
        paths = next(iter(groups.values()))

    headers = [_dcmread(p, stop_before_pixels=True) for p in paths]
    paths, headers = _sort_series(paths, headers)
    shapes = {_dicom_header_rows_columns(p, h) for p, h in zip(paths, headers, strict=True)}
    if len(shapes) > 1:
        raise _fail(folder, f"DICOM series mixes slice sizes {sorted(shapes)}")
    multi_frame = any(_header_int(h, "NumberOfFrames", 1) > 1 for h in headers)
    if multi_frame:
        # Frames of several files: decode everything, then select; headers stay one per file.
        stack = np.concatenate([_dicom_pixels(_dcmread(p), p) for p in paths])
        data = _finish(folder, stack, slices)
    else:
        # One slice per file: decode only the selected files.
        index = _select(folder, len(paths), slices)
        paths = [paths[i] for i in index]
        headers = [headers[i] for i in index]
        stack = np.concatenate([_dicom_pixels(_dcmread(p), p) for p in paths])
        data = _finish(folder, stack, None)
    return ImageVolume(
        data, kind or _kind_from_modality(headers[0]), _dicom_spacing(headers[0]), str(folder), headers
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
        raise _fail(path, f"corrupt NIfTI file: header dimensions {shape} need {expected} bytes, more than the "
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
        raise _fail(path, "corrupt or unreadable NIfTI file", exc) from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise _fail(path, f"expected a 3-D NIfTI volume, got shape {data.shape}")
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    zooms += [1.0] * (3 - len(zooms))
    in_plane = [a for a in range(3) if a != axis]  # (P, Q) in RAS+ order
    stack = nifti_to_display(np.moveaxis(data, axis, 0))
    data = _finish(path, stack, slices)
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
        raise _fail(path, "corrupt or unreadable image file", exc) from exc
    if len({p.shape for p in pages}) != 1:
        raise _fail(path, f"pages of different sizes {sorted({p.shape for p in pages})}")
    data = _finish(path, np.stack(pages), slices)
    return ImageVolume(data, kind or "generic", None, str(path), None)


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def _npy_header(path: Path) -> tuple[np.dtype, int]:
    """Validate a .npy file's header without loading it: (dtype, bytes of array data the header promises)."""
    from numpy.lib import format as npy_format

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
        if head[:4] == _ZIP_MAGIC:
            raise _fail(path, "is an .npz archive, expected a single .npy array")
        if head != _NPY_MAGIC:
            if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
                why = "looks like pickled Python objects, refused; only plain numeric arrays are read"
            else:
                why = "no NumPy header; save the array with numpy.save"
            raise _fail(path, f"not a valid .npy array ({why})")
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
            raise _fail(path, "not a valid .npy array (corrupt header)", exc) from exc
        offset = f.tell()
    if dtype.hasobject:
        raise _fail(path, "holds pickled Python objects, refused (only plain numeric arrays are read)")
    count = 1
    for n in shape:
        count *= int(n)
    expected = count * dtype.itemsize
    if expected > size - offset:  # checked before loading: np.load allocates what the header claims
        raise _fail(path, f"not a valid .npy array (truncated: header promises shape {shape} of {dtype}, "
                    f"{expected} bytes, file holds {max(size - offset, 0)})")
    return dtype, expected


def _read_npy(path: Path, slices: SliceSelection, kind: str | None) -> ImageVolume:
    try:
        _npy_header(path)
        arr = np.load(path, allow_pickle=False)  # never unpickle user files
    except ImageReadError:
        raise
    except Exception as exc:
        raise _fail(path, "not a valid .npy array (corrupt or unreadable file)", exc) from exc
    if not isinstance(arr, np.ndarray):
        raise _fail(path, "is an .npz archive, expected a single .npy array")
    if arr.dtype.kind not in "biuf":
        raise _fail(path, f"unsupported array dtype {arr.dtype} (need real numbers)")
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim != 3:
        raise _fail(path, f"expected a 2-D (H, W) or 3-D (S, H, W) array, got shape {arr.shape}")
    data = _finish(path, arr, slices)
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
    _check_kind(kind)
    p = Path(path)
    if not p.exists():
        raise _fail(path, "no such file or folder")
    if p.is_dir():
        return _read_dicom_folder(p, slices, kind, series)
    suffix = _suffix(p)
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti(p, axis, slices, kind)
    if suffix in PILLOW_SUFFIXES:
        return _read_pillow(p, slices, kind)
    if suffix == ".npy":
        return _read_npy(p, slices, kind)
    if suffix in DICOM_SUFFIXES:
        return _read_dicom_file(p, slices, kind)
    if suffix == "" or _has_dicom_preamble(p):
        # DICOM files are often stored without extension, or named by UID ('1.2.840.113619.2.55.3.4').
        return _read_dicom_file(p, slices, kind)
    raise _fail(
        path,
        f"unsupported file type {suffix!r} (supported: DICOM, {', '.join(NIFTI_SUFFIXES)}, "
        f"{', '.join(PILLOW_SUFFIXES)}, .npy)",
    )
