"""Files in and out: readers, writers (atomic), intensity/geometry transforms and the slice and volume data sets."""

from wavepatch.io.atomic import atomic_dir, atomic_path, atomic_write_bytes, check_not_input
from wavepatch.io.dataset import SliceDataset, VolumeDataset
from wavepatch.io.readers import (
    ImageReadError,
    ImageVolume,
    display_to_nifti,
    find_dicom_series,
    nifti_to_display,
    read_image,
)
from wavepatch.io.transforms import (
    DEFAULT_CT_WINDOW,
    DISPLAY_WINDOWS,
    center_crop,
    denormalize,
    hu_window_to_unit,
    minmax_to_unit,
    normalize_volume,
    pad_to_square,
    percentile_range,
    resize_square,
    restore_from_square,
    unit_to_hu,
    window_for_display,
)
from wavepatch.io.writers import save_dicom_series, save_nifti, save_npy, save_png, save_png_hu

__all__ = [
    "DEFAULT_CT_WINDOW",
    "DISPLAY_WINDOWS",
    "ImageReadError",
    "ImageVolume",
    "SliceDataset",
    "VolumeDataset",
    "atomic_dir",
    "atomic_path",
    "atomic_write_bytes",
    "center_crop",
    "check_not_input",
    "denormalize",
    "display_to_nifti",
    "find_dicom_series",
    "hu_window_to_unit",
    "minmax_to_unit",
    "nifti_to_display",
    "normalize_volume",
    "pad_to_square",
    "percentile_range",
    "read_image",
    "resize_square",
    "restore_from_square",
    "save_dicom_series",
    "save_nifti",
    "save_npy",
    "save_png",
    "save_png_hu",
    "unit_to_hu",
    "window_for_display",
]
