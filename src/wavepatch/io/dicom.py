"""DICOM in: single files (one slice or multi-frame), series folders sorted along the slice normal, stored
values rescaled (CT in HU), compressed transfer syntaxes through the pylibjpeg plugins. Used by
:func:`wavepatch.io.readers.read_image`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wavepatch.io.image_stack import (
    DICOM_SUFFIXES,
    ImageReadError,
    ImageVolume,
    PathLike,
    SliceSelection,
    file_suffix,
    finish_stack,
    has_dicom_preamble,
    read_error,
    select_slices,
)

# --------------------------------------------------------------------------------------------------- DICOM


def _dcmread(path: Path, stop_before_pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        first = exc
    except Exception as exc:  # pydicom raises many types (EOFError, struct.error, ...) on corrupt files
        raise read_error(path, "corrupt or unreadable DICOM file", exc) from exc
    # Old (ACR-NEMA style) files lack the 128-byte preamble; accept them only if they parse into something
    # that looks like an image, so a text file named .dcm is still rejected.
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
    except Exception as exc:
        raise read_error(path, "not a DICOM file", first) from exc
    if "Rows" not in ds or "Columns" not in ds:
        raise read_error(path, "not a DICOM file", first) from first
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
        raise read_error(path, f"unsupported DICOM transfer syntax {_syntax_name(ds)}: no pixel data decoder exists "
                    "in pydicom for it") from exc
    except Exception:  # a malformed UID: let pixel_array report it
        return
    if not decoder.is_available:
        packages = _DECODER_PACKAGES.get(str(uid), _LIBJPEG + _OPENJPEG[1:] + ("pylibjpeg-rle",))
        raise read_error(path, f"cannot decode DICOM pixel data: no decoder installed for transfer syntax "
                    f"{_syntax_name(ds)}; install {' and '.join(packages)} (pip install {' '.join(packages)})")


def _dicom_pixels(ds, path: Path) -> np.ndarray:
    """Decoded, rescaled pixels of one DICOM dataset as (F, H, W) float64."""
    try:
        return _dicom_pixels_unchecked(ds, path)
    except ImageReadError:
        raise
    except Exception as exc:  # malformed header values (IS/DS strings, VRs) surface as assorted types
        raise read_error(path, "invalid DICOM image header", exc) from exc


def _dicom_pixels_unchecked(ds, path: Path) -> np.ndarray:
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise read_error(path, "DICOM file holds no pixel data")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise read_error(path, f"colour DICOM (SamplesPerPixel={ds.SamplesPerPixel}) is not supported")
    _check_decoder(ds, path)
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise read_error(path, f"cannot decode DICOM pixel data (transfer syntax {_syntax_name(ds)})", exc) from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    arr = np.asarray(arr)
    if frames == 1 and arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] != frames:
        raise read_error(path, f"unexpected DICOM pixel array shape {arr.shape} for {frames} frame(s)")
    return _rescale(arr, ds)


def read_dicom_file(path: Path, slices: SliceSelection, kind: str | None) -> ImageVolume:
    ds = _dcmread(path)
    data = finish_stack(path, _dicom_pixels(ds, path), slices)
    for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if tag in ds:  # headers are kept for writing derived series; the pixels already live in ``data``
            delattr(ds, tag)
    return ImageVolume(data, kind or _kind_from_modality(ds), _dicom_spacing(ds), str(path), [ds])


def _dicom_header_rows_columns(path: Path, ds) -> tuple[int, int]:
    try:
        return int(ds.Rows), int(ds.Columns)
    except Exception as exc:
        raise read_error(path, "invalid DICOM image header (Rows/Columns)", exc) from exc


def _dicom_candidates(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return [p for p in files if file_suffix(p) in DICOM_SUFFIXES or has_dicom_preamble(p)]


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


def read_dicom_folder(
    folder: Path, slices: SliceSelection, kind: str | None, series: str | None
) -> ImageVolume:
    groups = find_dicom_series(folder)
    if not groups:
        others = [p for p in folder.iterdir() if not p.name.startswith(".")]
        if not others:
            raise read_error(folder, "empty folder")
        raise read_error(
            folder,
            f"no DICOM files among {len(others)} entries; a folder is read as a DICOM series only "
            "(pass other files one by one)",
        )
    if series is not None:
        if series not in groups:
            raise read_error(folder, f"no DICOM series with SeriesInstanceUID {series}")
        paths = groups[series]
    elif len(groups) > 1:
        listing = "; ".join(f"{uid} ({len(p)} files)" for uid, p in groups.items())
        raise read_error(folder, f"holds {len(groups)} DICOM series, pass series=<SeriesInstanceUID>: {listing}")
    else:
        paths = next(iter(groups.values()))

    headers = [_dcmread(p, stop_before_pixels=True) for p in paths]
    paths, headers = _sort_series(paths, headers)
    shapes = {_dicom_header_rows_columns(p, h) for p, h in zip(paths, headers, strict=True)}
    if len(shapes) > 1:
        raise read_error(folder, f"DICOM series mixes slice sizes {sorted(shapes)}")
    multi_frame = any(_header_int(h, "NumberOfFrames", 1) > 1 for h in headers)
    if multi_frame:
        # Frames of several files: decode everything, then select; headers stay one per file.
        stack = np.concatenate([_dicom_pixels(_dcmread(p), p) for p in paths])
        data = finish_stack(folder, stack, slices)
    else:
        # One slice per file: decode only the selected files.
        index = select_slices(folder, len(paths), slices)
        paths = [paths[i] for i in index]
        headers = [headers[i] for i in index]
        stack = np.concatenate([_dicom_pixels(_dcmread(p), p) for p in paths])
        data = finish_stack(folder, stack, None)
    return ImageVolume(
        data, kind or _kind_from_modality(headers[0]), _dicom_spacing(headers[0]), str(folder), headers
    )
