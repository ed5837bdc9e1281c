"""Write arrays as .npy, PNG, NIfTI or a DICOM CT series; every write is atomic (see ``atomic``).

Each writer takes ``protect``: input paths that must not be overwritten (nor written inside, for input
folders); pass the paths a result was computed from.
"""

from __future__ import annotations

import datetime
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from wavepatch.io.atomic import PathLike, atomic_dir, atomic_path, atomic_write_bytes
from wavepatch.io.readers import ImageVolume, display_to_nifti
from wavepatch.io.transforms import window_for_display

Protect = Iterable[PathLike | None]


def _finite(name: str, arr: np.ndarray) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: array holds NaN/Inf values, refusing to write")


def _as_2d(name: str, img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (H, W) image, got shape {img.shape}")
    return img


def _as_3d(name: str, vol: np.ndarray) -> np.ndarray:
    vol = np.asarray(vol)
    if vol.ndim == 2:
        vol = vol[None]
    if vol.ndim != 3:
        raise ValueError(f"{name}: expected (S, H, W) or (H, W), got shape {vol.shape}")
    return vol


def save_npy(path: PathLike, array: np.ndarray, protect: Protect = ()) -> Path:
    """Save a numeric array as .npy (no pickling: object arrays are refused). Returns the path."""
    array = np.asarray(array)
    if array.dtype.kind not in "biufc":
        raise ValueError(f"{path}: refusing to save array of dtype {array.dtype} (numeric only)")
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue(), protect)


def save_png(path: PathLike, img01: np.ndarray, bits: int = 8, protect: Protect = ()) -> Path:
    """Save a [0, 1] image (H, W) (or (1, H, W)) as grayscale PNG, 8-bit (default) or 16-bit.

    Values are clipped to [0, 1] and rounded to 0..255 (or 0..65535); 0 is black.
    """
    img = _as_2d(str(path), img01).astype(np.float64)
    _finite(str(path), img)
    from PIL import Image

    if bits == 8:
        pixels = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif bits == 16:
        pixels = np.round(np.clip(img, 0.0, 1.0) * 65535.0).astype(np.uint16)
    else:
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue(), protect)


def save_png_hu(
    path: PathLike, hu: np.ndarray, center: float = 40.0, width: float = 400.0, protect: Protect = ()
) -> Path:
    """Save a CT slice (H, W) in HU as an 8-bit PNG through the display window (center, width) in HU."""
    return save_png(path, np.asarray(window_for_display(np.asarray(hu), center, width)), protect=protect)


def save_nifti(
    path: PathLike,
    volume: np.ndarray,
    spacing: tuple[float, float] | None = None,
    axis: int = 2,
    slice_thickness: float = 1.0,
    protect: Protect = (),
) -> Path:
    """Save (S, H, W) display-oriented slices as a float32 NIfTI (.nii or .nii.gz) in RAS+ voxel order.

    Inverts ``read_image``'s convention, so ``read_image(path, axis=axis).data`` returns ``volume``.
    spacing: (row, column) spacing in mm (``ImageVolume.spacing``); None means 1 mm.
    slice_thickness: distance between slices in mm. The affine is diagonal with origin 0: the slices are
    placed in a plain RAS+ grid, not registered to the source's world coordinates.
    """
    import nibabel as nib

    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    name = Path(path).name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"{path}: NIfTI file name must end in .nii or .nii.gz")
    vol = _as_3d(str(path), volume).astype(np.float32)
    _finite(str(path), vol)
    row_mm, col_mm = spacing if spacing is not None else (1.0, 1.0)
    data = np.moveaxis(display_to_nifti(vol), 0, axis)
    zooms = [0.0, 0.0, 0.0]
    in_plane = [a for a in range(3) if a != axis]
    zooms[axis], zooms[in_plane[0]], zooms[in_plane[1]] = slice_thickness, col_mm, row_mm
    img = nib.Nifti1Image(np.ascontiguousarray(data), np.diag([*zooms, 1.0]))
    img.header.set_xyzt_units("mm")
    with atomic_path(path, protect) as tmp:
        nib.save(img, tmp)
    return Path(path)


# --------------------------------------------------------------------------------------------------- DICOM

# Identity tags copied unchanged from the reference, so the derived series files under the same patient/study.
_COPIED_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "ReferringPhysicianName",
    "FrameOfReferenceUID",
    "PatientPosition",
    "PatientIdentityRemoved",  # keep the de-identification record of de-identified inputs
    "DeidentificationMethod",
)
_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _hu_to_stored(hu: np.ndarray) -> tuple[np.ndarray, float]:
    """HU float -> (int16 stored values, RescaleIntercept) with stored * 1 + intercept = round(HU)."""
    lo, hi = float(hu.min()), float(hu.max())
    intercept = -1024.0  # the usual CT choice: air..bone fits with room to spare
    if lo - intercept < -32768 or hi - intercept > 32767:
        intercept = float(np.round((lo + hi) / 2.0))
        if hi - lo > 65535:
            raise ValueError(f"HU range [{lo:.0f}, {hi:.0f}] does not fit 16-bit DICOM")
    return np.round(hu - intercept).astype(np.int16), intercept


def _slice_geometry(
    headers: Sequence | None,
    n_slices: int,
    shape: tuple[int, int],
    spacing: tuple[float, float],
    slice_step: float,
) -> tuple[list[float], list[list[float]]]:
    """(ImageOrientationPatient, per-slice ImagePositionPatient) for the written slices, in mm (LPS)."""
    default_orient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    if not headers:
        return default_orient, [[0.0, 0.0, i * slice_step] for i in range(n_slices)]
    first = headers[0]
    orient = [float(v) for v in first.get("ImageOrientationPatient", default_orient)]
    row_dir, col_dir = np.asarray(orient[:3]), np.asarray(orient[3:])
    ref_spacing = [float(v) for v in first.get("PixelSpacing", spacing)]
    ref_shape = (int(first.get("Rows", shape[0])), int(first.get("Columns", shape[1])))
    # A resize over the same field of view (align_corners=False) moves the first pixel centre by half the
    # change in spacing along each in-plane direction; without it the derived series would sit offset.
    shift = np.zeros(3)
    if tuple(shape) != ref_shape or list(spacing) != ref_spacing:
        shift = row_dir * (spacing[1] - ref_spacing[1]) / 2.0 + col_dir * (spacing[0] - ref_spacing[0]) / 2.0
    if len(headers) == n_slices and all("ImagePositionPatient" in h for h in headers):
        positions = [np.asarray(h.ImagePositionPatient, dtype=np.float64) + shift for h in headers]
    elif len(headers) == 1:
        origin = np.asarray(first.get("ImagePositionPatient", [0.0, 0.0, 0.0]), dtype=np.float64) + shift
        normal = np.cross(row_dir, col_dir)
        positions = [origin + i * slice_step * normal for i in range(n_slices)]
    else:
        raise ValueError(f"reference has {len(headers)} slice headers but the volume has {n_slices} slices")
    return orient, [[float(v) for v in p] for p in positions]


def _ds(value: float):
    """A DICOM decimal string that fits the 16-character limit whatever the float."""
    from pydicom.valuerep import DSfloat

    return DSfloat(float(value), auto_format=True)


def dicom_slice_step(headers: Sequence | None) -> float:
    """Slice distance in mm from a series' header tags (SpacingBetweenSlices, else SliceThickness); 1.0 if
    neither is set."""
    if headers:
        for tag in ("SpacingBetweenSlices", "SliceThickness"):
            value = headers[0].get(tag)
            if value not in (None, ""):
                return float(value)
    return 1.0


def save_dicom_series(
    out_dir: PathLike,
    hu_volume: np.ndarray,
    reference: ImageVolume | None = None,
    series_description: str = "wavepatch derived",
    pixel_spacing: tuple[float, float] | None = None,
    overwrite: bool = False,
    protect: Protect = (),
) -> list[Path]:
    """Write a CT volume (S, H, W) in HU as a DICOM series, one file per slice (slice_0001.dcm, ...).

    Pixels are int16 with RescaleSlope 1 and RescaleIntercept -1024 (another value only if the range needs
    it), so stored values round-trip HU to within 0.5. Files are CT Image Storage, Explicit VR Little Endian,
    ImageType DERIVED\\SECONDARY, with a new SeriesInstanceUID and new SOPInstanceUIDs.

    reference: the ImageVolume the result derives from (read from DICOM): its patient and study tags,
        FrameOfReferenceUID, orientation and per-slice positions are copied, so viewers file the new series
        next to the original. It must be CT, with one header per slice (or a single header, from which
        positions are extrapolated along the slice normal). Without it: patient 'Anonymous', new study.
    pixel_spacing: (row, column) spacing in mm; required when the slices' size differs from the reference
        (after ``resize_square``: reference spacing * max(H, W) / n). Positions are then shifted for the
        resize over the same field of view.
    overwrite: replace an existing folder that holds only .dcm files (atomically: the new series appears in
        one rename, the old one is deleted afterwards).
    Refuses to write into the reference's own folder. Returns the written paths in slice order.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    vol = _as_3d(str(out_dir), hu_volume).astype(np.float64)
    _finite(str(out_dir), vol)
    n_slices, rows, cols = vol.shape
    headers = reference.dicom_headers if reference is not None else None
    if headers:
        modality = str(headers[0].get("Modality", "CT")).upper()
        if modality != "CT":
            raise ValueError(f"save_dicom_series writes CT in HU; the reference modality is {modality}")
    ref_spacing = reference.spacing if reference is not None else None
    if pixel_spacing is None:
        if reference is not None and reference.data.shape[1:] != (rows, cols):
            raise ValueError(
                f"slices are {rows}x{cols} but the reference is {reference.data.shape[1]}x"
                f"{reference.data.shape[2]}: pass pixel_spacing (mm) for the resized grid"
            )
        pixel_spacing = ref_spacing or (1.0, 1.0)
    spacing = (float(pixel_spacing[0]), float(pixel_spacing[1]))
    step = dicom_slice_step(headers)
    orient, positions = _slice_geometry(headers, n_slices, (rows, cols), spacing, step)

    stored, intercept = _hu_to_stored(vol)
    series_uid = generate_uid()
    study_uid = generate_uid()
    frame_uid = generate_uid()
    now = datetime.datetime.now()
    protected = [*protect]
    if reference is not None:
        source = Path(reference.source)
        protected.append(source)
        # A derived series written beside a single reference file would make that folder hold two series.
        if source.is_file() and Path(out_dir).resolve() == source.parent.resolve():
            raise ValueError(f"refusing to write {out_dir}: it is the folder of the input {source}")
    written = []
    with atomic_dir(out_dir, protected, overwrite=overwrite) as tmp:
        for i in range(n_slices):
            ref = headers[i] if headers and len(headers) == n_slices else (headers[0] if headers else None)
            sop_uid = generate_uid()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = _CT_STORAGE
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
            ds = Dataset()
            ds.file_meta = meta
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.PatientName, ds.PatientID = "Anonymous", "Anonymous"
            ds.PatientBirthDate, ds.PatientSex = "", ""
            ds.StudyInstanceUID, ds.FrameOfReferenceUID = study_uid, frame_uid
            ds.StudyDate, ds.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
            ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "", "", ""
            if ref is not None:
                for tag in _COPIED_TAGS:
                    if tag in ref:
                        setattr(ds, tag, ref.get(tag))
            ds.Modality = "CT"
            ds.SOPClassUID = _CT_STORAGE
            ds.SOPInstanceUID = sop_uid
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = 9000 + (int(ref.get("SeriesNumber") or 0) % 1000 if ref is not None else 0)
            ds.SeriesDescription = series_description[:64]
            ds.SeriesDate, ds.SeriesTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
            ds.ContentDate, ds.ContentTime = ds.SeriesDate, ds.SeriesTime
            ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
            ds.Manufacturer = ""
            ds.InstanceNumber = i + 1
            if ref is not None and headers and len(headers) == n_slices and "SOPInstanceUID" in ref:
                # DERIVED images point at the slice they were computed from.
                source_item = Dataset()
                source_item.ReferencedSOPClassUID = ref.get("SOPClassUID", _CT_STORAGE)
                source_item.ReferencedSOPInstanceUID = ref.SOPInstanceUID
                ds.SourceImageSequence = [source_item]
            ds.ImageOrientationPatient = [_ds(v) for v in orient]
            ds.ImagePositionPatient = [_ds(v) for v in positions[i]]
            ds.SliceThickness = _ds(step)
            ds.PixelSpacing = [_ds(v) for v in spacing]
            ds.KVP = ref.get("KVP", "") if ref is not None else ""
            ds.AcquisitionNumber = 1
            ds.PositionReferenceIndicator = ""
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = rows, cols
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
            ds.PixelRepresentation = 1  # signed
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = _ds(intercept), _ds(1.0), "HU"
            ds.WindowCenter, ds.WindowWidth = 40.0, 400.0
            ds.PixelData = np.ascontiguousarray(stored[i]).astype("<i2").tobytes()
            name = f"slice_{i + 1:04d}.dcm"
            ds.save_as(tmp / name, enforce_file_format=True)
            written.append(Path(out_dir) / name)
    return written
