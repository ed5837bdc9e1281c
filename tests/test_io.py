"""Tests for wavepatch.io: readers, transforms, writers (atomic) and the slice data set."""

from __future__ import annotations

import pathlib
import pickle
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from pydicom.uid import generate_uid

from wavepatch.io import (
    DEFAULT_CT_WINDOW,
    ImageReadError,
    SliceDataset,
    atomic_path,
    atomic_write_bytes,
    center_crop,
    check_not_input,
    denormalize,
    find_dicom_series,
    hu_window_to_unit,
    minmax_to_unit,
    normalize_volume,
    pad_to_square,
    read_image,
    resize_square,
    restore_from_square,
    save_dicom_series,
    save_nifti,
    save_npy,
    save_png,
    unit_to_hu,
    window_for_display,
)


def manual_hu(path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def z_position(header) -> float:
    return float(header.ImagePositionPatient[2])


# ------------------------------------------------------------------------------------------------- readers


def test_dicom_single_file_gives_hu(ct_files, ct_small_path):
    for path in (ct_files[0], ct_small_path):
        vol = read_image(path)
        assert vol.data.dtype == np.float32 and vol.data.shape == (1, *manual_hu(path).shape)
        np.testing.assert_array_equal(vol.data[0], manual_hu(path))
        assert vol.kind == "ct" and len(vol.dicom_headers) == 1
        assert "PixelData" not in vol.dicom_headers[0]
    assert read_image(ct_files[0]).spacing == pytest.approx((0.646484375, 0.646484375))
    assert read_image(ct_files[0]).data.min() == -1024.0  # scanner padding outside the field of view


def test_dicom_series_sorted_by_position(ct_files, tmp_path):
    # Names chosen so name order, and InstanceNumber order, both differ from the anatomical order.
    for src, name in zip(ct_files, ["b.dcm", "c", "a.dcm"], strict=True):
        shutil.copy(src, tmp_path / name)
    vol = read_image(tmp_path)
    positions = [z_position(h) for h in vol.dicom_headers]
    assert positions == sorted(positions) and len(positions) == 3
    by_z = sorted(ct_files, key=lambda p: z_position(pydicom.dcmread(p, stop_before_pixels=True)))
    for k, path in enumerate(by_z):
        np.testing.assert_array_equal(vol.data[k], manual_hu(path))
    sub = read_image(tmp_path, slices=[2, 0])
    np.testing.assert_array_equal(sub.data, vol.data[[2, 0]])
    assert [z_position(h) for h in sub.dicom_headers] == [positions[2], positions[0]]


def test_dicom_series_falls_back_to_instance_number(ct_files, tmp_path):
    for k, src in enumerate(ct_files):
        ds = pydicom.dcmread(src)
        del ds.ImagePositionPatient
        ds.InstanceNumber = 3 - k  # reverse of name order
        ds.save_as(tmp_path / f"{k}.dcm")
    vol = read_image(tmp_path)
    assert [int(h.InstanceNumber) for h in vol.dicom_headers] == [1, 2, 3]
    np.testing.assert_array_equal(vol.data[0], manual_hu(ct_files[2]))


def test_folder_with_two_series_needs_a_choice(ct_files, tmp_path):
    shutil.copy(ct_files[0], tmp_path / "one.dcm")
    ds = pydicom.dcmread(ct_files[1])
    ds.SeriesInstanceUID = generate_uid()
    ds.save_as(tmp_path / "two.dcm")
    (tmp_path / "README.txt").write_text("not an image")
    with pytest.raises(ImageReadError, match="2 DICOM series"):
        read_image(tmp_path)
    series = find_dicom_series(tmp_path)
    assert len(series) == 2
    assert read_image(tmp_path, series=ds.SeriesInstanceUID).shape == (1, 512, 512)


def test_multiframe_dicom(ct_small_path, tmp_path):
    ds = pydicom.dcmread(ct_small_path)
    frames = np.stack([ds.pixel_array + k for k in range(3)]).astype(ds.pixel_array.dtype)
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
    ds.save_as(tmp_path / "multi.dcm")
    vol = read_image(tmp_path / "multi.dcm")
    assert vol.shape == (3, 128, 128) and vol.kind == "ct"
    np.testing.assert_array_equal(vol.data, frames * 2.0 - 1000.0)
    tail = read_image(tmp_path / "multi.dcm", slices=slice(1, None))
    np.testing.assert_array_equal(tail.data, vol.data[1:])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_nifti_round_trip(tmp_path, axis):
    rng = np.random.default_rng(axis)
    vol = rng.normal(size=(4, 6, 5)).astype(np.float32)
    path = save_nifti(tmp_path / "v.nii.gz", vol, spacing=(0.5, 0.7), axis=axis, slice_thickness=2.0)
    back = read_image(path, axis=axis)
    np.testing.assert_array_equal(back.data, vol)
    assert back.spacing == pytest.approx((0.5, 0.7)) and back.kind == "mri"
    assert read_image(path, axis=axis, kind="generic").kind == "generic"


def test_nifti_view_does_not_depend_on_stored_orientation(tmp_path):
    ras = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    nib.save(nib.Nifti1Image(ras, np.eye(4)), tmp_path / "ras.nii")
    # Same anatomy stored left-to-right and posterior-to-anterior reversed (LPS voxel order).
    lps_affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps_affine[:3, 3] = [3.0, 4.0, 0.0]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(ras[::-1, ::-1]), lps_affine), tmp_path / "lps.nii")
    a, b = read_image(tmp_path / "ras.nii"), read_image(tmp_path / "lps.nii")
    np.testing.assert_array_equal(a.data, b.data)
    # Radiological view: row 0 is the most anterior voxel row, column 0 the patient's rightmost (max x).
    assert a.shape == (3, 5, 4)
    assert a.data[0, 0, 0] == ras[3, 4, 0] and a.data[0, -1, -1] == ras[0, 0, 0]


def test_bundled_mri(mri_path):
    vol = read_image(mri_path)
    assert vol.shape == (5, 233, 197) and vol.kind == "mri" and vol.spacing == (1.0, 1.0)
    assert 0.0 <= vol.data.min() and vol.data.max() <= 255.0


@pytest.mark.parametrize("bits", [8, 16])
def test_png_round_trip(tmp_path, bits):
    img = np.random.default_rng(0).random((7, 9))
    save_png(tmp_path / "x.png", img, bits=bits)
    back = read_image(tmp_path / "x.png")
    scale = 2.0**bits - 1
    assert back.shape == (1, 7, 9) and back.kind == "generic"
    np.testing.assert_allclose(back.data[0] / scale, img, atol=0.5 / scale + 1e-7)


def test_npy_round_trip(tmp_path):
    vol = np.random.default_rng(1).normal(size=(3, 4, 5)).astype(np.float32)
    save_npy(tmp_path / "v.npy", vol)
    np.testing.assert_array_equal(read_image(tmp_path / "v.npy").data, vol)
    np.testing.assert_array_equal(read_image(tmp_path / "v.npy", slices=[1]).data, vol[1:2])
    save_npy(tmp_path / "s.npy", vol[0].astype(np.int16))
    assert read_image(tmp_path / "s.npy", kind="ct").shape == (1, 4, 5)


class _Payload:
    """Unpickling this object creates a marker file: proof that a reader unpickled user data."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _bad_inputs(tmp: pathlib.Path) -> dict[str, pathlib.Path]:
    (tmp / "x.dcm").write_text("this is not DICOM")
    (tmp / "noext").write_text("neither is this")
    (tmp / "x.xyz").write_bytes(b"\x00" * 16)
    (tmp / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp / "x.nii.gz").write_text("not gzip")
    np.save(tmp / "nan.npy", np.array([[0.0, np.nan], [1.0, 2.0]]))
    np.save(tmp / "inf.npy", np.array([[0.0, 1e300]]))  # overflows float32
    np.save(tmp / "4d.npy", np.zeros((2, 2, 2, 2)))
    np.save(tmp / "complex.npy", np.zeros((2, 2), dtype=np.complex64))
    np.save(tmp / "object.npy", np.array([_Payload(tmp / "pwned")], dtype=object), allow_pickle=True)
    (tmp / "raw_pickle.npy").write_bytes(pickle.dumps(_Payload(tmp / "pwned")))
    (tmp / "empty").mkdir()
    (tmp / "no_dicom").mkdir()
    (tmp / "no_dicom" / "notes.txt").write_text("x")
    return {p.name: p for p in tmp.iterdir()} | {"missing.dcm": tmp / "missing.dcm"}


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing.dcm", "no such file"),
        ("x.dcm", "not a DICOM file"),
        ("noext", "not a DICOM file"),
        ("x.xyz", "unsupported file type"),
        ("x.png", "unreadable image"),
        ("x.nii.gz", "unreadable NIfTI"),
        ("nan.npy", "NaN/Inf"),
        ("inf.npy", "NaN/Inf"),
        ("4d.npy", "2-D .* or 3-D"),
        ("complex.npy", "dtype"),
        ("object.npy", "pickled"),
        ("raw_pickle.npy", "pickled"),
        ("empty", "empty folder"),
        ("no_dicom", "no DICOM files"),
    ],
)
def test_bad_inputs_raise_image_read_error(tmp_path, name, message):
    paths = _bad_inputs(tmp_path)
    with pytest.raises(ImageReadError, match=message) as info:
        read_image(paths[name])
    assert "\n" not in str(info.value) and str(paths[name]) in str(info.value)
    assert not (tmp_path / "pwned").exists()


def test_bad_slice_selection(ct_files):
    with pytest.raises(ImageReadError, match="slice"):
        read_image(ct_files[0], slices=[5])


# ---------------------------------------------------------------------------------------------- transforms


def test_hu_window_and_inverse():
    hu = np.array([-3024.0, -1024.0, -1000.0, 0.0, 500.0, 1000.0, 3000.0])
    x = hu_window_to_unit(hu)
    assert x.dtype == np.float32 and DEFAULT_CT_WINDOW == (-1000.0, 1000.0)
    np.testing.assert_allclose(x, [0, 0, 0, 0.5, 0.75, 1, 1])  # air -> 0, water -> 1/2: x = mu / (2 mu_water)
    inside = hu[2:6]
    np.testing.assert_allclose(unit_to_hu(hu_window_to_unit(inside)), inside, atol=1e-3)
    t = hu_window_to_unit(torch.tensor(hu, dtype=torch.float64), -500.0, 500.0)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    torch.testing.assert_close(unit_to_hu(t, -500.0, 500.0), torch.tensor(hu).clamp(-500, 500))
    np.testing.assert_allclose(window_for_display(np.array([-160.0, 40.0, 240.0])), [0.0, 0.5, 1.0])
    with pytest.raises(ValueError):
        hu_window_to_unit(hu, 10.0, 10.0)


def test_normalize_and_denormalize(ct_files, mri_path):
    ct = read_image(ct_files[0])
    x, info = normalize_volume(ct)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0 and info["method"] == "window"
    clipped = np.clip(ct.data, *DEFAULT_CT_WINDOW)
    np.testing.assert_allclose(denormalize(x, info), clipped, atol=1e-3)
    mri = read_image(mri_path)
    y, info = normalize_volume(mri)
    assert info["method"] == "percentile" and y.min() == 0.0 and y.max() == 1.0 and info["lo"] == 0.0
    assert np.mean(y >= 1.0) == pytest.approx(0.005, abs=0.002)  # the top 0.5 % saturates
    below = mri.data < info["hi"]
    np.testing.assert_allclose(denormalize(y, info)[below], mri.data[below], atol=1e-3)
    y, info = normalize_volume(mri, method="minmax")
    assert info["method"] == "minmax" and y.min() == 0.0 and y.max() == 1.0
    np.testing.assert_allclose(denormalize(y, info), mri.data, atol=1e-4)
    z, (lo, hi) = minmax_to_unit(np.full((2, 2), 3.0))
    assert (z == 0).all() and (lo, hi) == (3.0, 3.0)


def test_resize_and_pad():
    img = np.arange(5 * 8, dtype=np.int16).reshape(5, 8)
    square = pad_to_square(img, value=-1)
    assert square.shape == (8, 8) and (square[0] == -1).all()
    np.testing.assert_array_equal(center_crop(square, (5, 8)), img)
    out = resize_square(img, 4)
    assert out.shape == (4, 4) and out.dtype == np.float32
    stack = resize_square(np.random.default_rng(0).random((3, 6, 6)), 12)
    assert stack.shape == (3, 12, 12) and stack.dtype == np.float32
    smooth = np.add.outer(np.linspace(0, 1, 32), np.linspace(0, 1, 32))
    back = restore_from_square(resize_square(smooth, 64), (32, 32))
    assert back.shape == (32, 32) and np.abs(back - smooth).max() < 0.05
    const = resize_square(np.full((10, 10), 0.25), 3)  # antialiasing keeps constants constant
    np.testing.assert_allclose(const, 0.25, atol=1e-6)


# ------------------------------------------------------------------------------------------------- writers


def test_dicom_round_trip_keeps_hu_and_identity(ct_dir, tmp_path):
    ref = read_image(ct_dir)
    result = ref.data + np.float32(0.3)  # a "processed" volume, off the integer grid
    paths = save_dicom_series(tmp_path / "out", result, reference=ref, series_description="test")
    assert [p.name for p in paths] == ["slice_0001.dcm", "slice_0002.dcm", "slice_0003.dcm"]
    back = read_image(tmp_path / "out")
    assert back.kind == "ct" and back.spacing == ref.spacing
    assert np.abs(back.data - result).max() <= 0.5 + 1e-4
    ref_sops = {h.SOPInstanceUID for h in ref.dicom_headers}
    for old, new in zip(ref.dicom_headers, back.dicom_headers, strict=True):
        for tag in (
            "PatientName",
            "PatientID",
            "PatientSex",
            "StudyInstanceUID",
            "StudyDate",
            "FrameOfReferenceUID",
            "ImageOrientationPatient",
            "ImagePositionPatient",
        ):
            assert new.get(tag) == old.get(tag), tag
        assert new.SeriesInstanceUID != old.SeriesInstanceUID and new.SOPInstanceUID not in ref_sops
        assert new.SeriesDescription == "test" and list(new.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert new.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert new.SOPClassUID == pydicom.uid.CTImageStorage
        assert new.SourceImageSequence[0].ReferencedSOPInstanceUID == old.SOPInstanceUID
    assert len({h.SeriesInstanceUID for h in back.dicom_headers}) == 1
    assert len({h.SOPInstanceUID for h in back.dicom_headers}) == 3


def test_dicom_resized_and_anonymous(ct_dir, tmp_path):
    ref = read_image(ct_dir, slices=[0])
    small = resize_square(ref.data, 128)
    with pytest.raises(ValueError, match="pixel_spacing"):
        save_dicom_series(tmp_path / "a", small, reference=ref)
    spacing = (ref.spacing[0] * 4, ref.spacing[1] * 4)
    save_dicom_series(tmp_path / "a", small, reference=ref, pixel_spacing=spacing)
    back = read_image(tmp_path / "a")
    assert back.spacing == pytest.approx(spacing) and back.shape == (1, 128, 128)
    # Same field of view: the first pixel centre moves by 1.5 old pixels along rows and columns.
    shift = np.subtract(back.dicom_headers[0].ImagePositionPatient, ref.dicom_headers[0].ImagePositionPatient)
    np.testing.assert_allclose(shift[:2], 1.5 * np.array(ref.spacing), atol=1e-5)
    save_dicom_series(tmp_path / "b", np.zeros((2, 8, 8)))
    anon = read_image(tmp_path / "b")
    assert str(anon.dicom_headers[0].PatientName) == "Anonymous" and anon.shape == (2, 8, 8)
    with pytest.raises(ValueError, match="not empty"):
        save_dicom_series(tmp_path / "b", np.zeros((1, 8, 8)))
    save_dicom_series(tmp_path / "b", np.zeros((1, 8, 8)), overwrite=True)
    assert read_image(tmp_path / "b").shape == (1, 8, 8)  # the old 2-slice series is gone


def test_writers_refuse_to_overwrite_inputs(ct_dir, ct_files, tmp_path):
    ref = read_image(ct_dir)
    with pytest.raises(ValueError, match="input"):
        save_dicom_series(ct_dir, ref.data, reference=ref, overwrite=True)
    with pytest.raises(ValueError, match="input folder"):
        save_dicom_series(ct_dir / "derived", ref.data, reference=ref)
    with pytest.raises(ValueError, match="input folder"):
        save_npy(ct_dir / "x.npy", ref.data, protect=[ct_dir])
    target = tmp_path / "in.npy"
    save_npy(target, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="is the input"):
        save_npy(tmp_path / "." / "in.npy", np.ones((2, 2)), protect=[target])
    np.testing.assert_array_equal(np.load(target), np.zeros((2, 2)))
    check_not_input(tmp_path / "other.npy", [target, None])  # fine
    assert sorted(ct_dir.iterdir()) == ct_files  # nothing was written into the data folder


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"new but unfinished")
        raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and list(tmp_path.iterdir()) == [target]


# ------------------------------------------------------------------------------------------------- dataset


def test_slice_dataset_and_patches(ct_dir, mri_path):
    ds = SliceDataset([ct_dir, mri_path], size=64)
    assert len(ds) == 8 and ds.images.shape == (8, 1, 64, 64) and ds.images.dtype == torch.float32
    assert ds[0].shape == (1, 64, 64) and 0.0 <= ds.images.min() and ds.images.max() <= 1.0 + 1e-6
    assert [v["kind"] for v in ds.volumes] == ["ct", "mri"] and ds.volumes[1]["first_slice"] == 3
    gen = torch.Generator().manual_seed(0)
    patches, pos = ds.random_patches(200, 16, gen, pad=8)
    assert patches.shape == (200, 1, 16, 16) and pos.shape == (200, 2) and pos.dtype == torch.int64
    assert pos.min() >= 0 and pos.max() <= 64 + 16 - 16
    # Re-draw with the same seed and check every patch against an explicitly zero-padded slice.
    gen.manual_seed(0)
    which = torch.randint(0, len(ds), (200,), generator=gen)
    padded = torch.nn.functional.pad(ds.images, (8, 8, 8, 8))
    for k in range(0, 200, 17):
        r, c = pos[k].tolist()
        torch.testing.assert_close(patches[k], padded[which[k], :, r : r + 16, c : c + 16])
    flipped, _ = ds.random_patches(4, 64, torch.Generator().manual_seed(1), flip=True)
    assert flipped.shape == (4, 1, 64, 64)
    with pytest.raises(ValueError):
        ds.random_patches(1, 100)


def test_slice_dataset_window_option(ct_dir):
    ds = SliceDataset(ct_dir, size=32, window=(-1000.0, 400.0))
    assert ds.volumes[0]["normalization"] == {"method": "window", "lo": -1000.0, "hi": 400.0, "kind": "ct"}
