"""Compressed DICOM input: every common transfer syntax decodes to the same HU as the uncompressed file.

The bundled real CT slices (data/ct, Explicit VR Little Endian, 12 bits stored) are re-encoded in tmp_path:
RLE Lossless and JPEG 2000 (pydicom's encoders), JPEG Lossless process 14 (imagecodecs' libjpeg-turbo
encoder, encapsulated with pydicom) and JPEG Baseline / Extended (lossy, compared with a tolerance). A real
JPEG 2000 lossless CT from pydicom-data is compared with its uncompressed twin.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    RLELossless,
)

from wavepatch.cli import main
from wavepatch.io import ImageReadError, read_image

imagecodecs = pytest.importorskip("imagecodecs")


def _fresh_sop(ds: pydicom.Dataset) -> None:
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _unsigned(ds: pydicom.Dataset) -> np.ndarray:
    """Stored values as non-negative integers; signed data is offset and RescaleIntercept adjusted (same HU)."""
    arr = ds.pixel_array.astype(np.int64)
    if int(ds.PixelRepresentation) == 1:
        offset = int(arr.min())
        arr = arr - offset
        slope = float(ds.get("RescaleSlope", 1))
        ds.RescaleIntercept = float(ds.get("RescaleIntercept", 0)) + offset * slope
        ds.PixelRepresentation = 0
        for tag in ("SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue"):
            if tag in ds:
                del ds[tag]
    bits = max(int(ds.BitsStored), int(arr.max()).bit_length())
    ds.BitsStored, ds.HighBit = bits, bits - 1
    return arr.astype(np.uint16 if int(ds.BitsAllocated) > 8 else np.uint8)


def _encapsulated(ds: pydicom.Dataset, frame: bytes, syntax) -> pydicom.Dataset:
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = syntax
    _fresh_sop(ds)
    return ds


def _jpeg_lossless(src: Path, syntax, predictor: int) -> pydicom.Dataset:
    ds = pydicom.dcmread(src)
    arr = _unsigned(ds)
    frame = imagecodecs.jpeg8_encode(arr, lossless=True, predictor=predictor, bitspersample=int(ds.BitsStored))
    return _encapsulated(ds, frame, syntax)


def _pydicom_compressed(src: Path, syntax, **kwargs) -> pydicom.Dataset:
    ds = pydicom.dcmread(src)
    ds.compress(syntax, **kwargs)
    _fresh_sop(ds)
    return ds


LOSSLESS = {
    "rle": lambda src: _pydicom_compressed(src, RLELossless),
    "j2k-lossless": lambda src: _pydicom_compressed(src, JPEG2000Lossless),
    "jpeg-lossless-sv1": lambda src: _jpeg_lossless(src, JPEGLosslessSV1, predictor=1),
    # process 14 with any predictor (.57); SV1 (.70) is its predictor-1 subset
    "jpeg-lossless-p14": lambda src: _jpeg_lossless(src, JPEGLossless, predictor=6),
}


@pytest.mark.parametrize("name", sorted(LOSSLESS))
def test_lossless_compressed_gives_identical_hu(tmp_path, ct_files, name):
    src = ct_files[0]
    ds = LOSSLESS[name](src)
    out = tmp_path / f"{name}.dcm"
    ds.save_as(out, enforce_file_format=True)
    assert pydicom.dcmread(out, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed
    ref = read_image(src)
    vol = read_image(out)
    assert vol.kind == "ct" and vol.spacing == ref.spacing
    np.testing.assert_array_equal(vol.data, ref.data)
    assert vol.data.min() < -900 and vol.data.max() > 500  # HU, not stored values


def test_compressed_series_folder_matches_uncompressed(tmp_path, ct_files, ct_dir):
    folder = tmp_path / "series"
    folder.mkdir()
    for i, src in enumerate(ct_files):  # mixed syntaxes within one series
        ds = LOSSLESS[sorted(LOSSLESS)[i % len(LOSSLESS)]](src)
        ds.save_as(folder / src.name, enforce_file_format=True)
    np.testing.assert_array_equal(read_image(folder).data, read_image(ct_dir).data)


def _eight_bit(src: Path, slope: float) -> tuple[pydicom.Dataset, np.ndarray]:
    """An 8-bit version of the slice: stored = round((HU - intercept) / slope), clipped to 0..255."""
    ds = pydicom.dcmread(src)
    hu = read_image(src).data[0].astype(np.float64)
    intercept = -1024.0
    arr8 = np.clip(np.rint((hu - intercept) / slope), 0, 255).astype(np.uint8)
    for tag in ("SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue",
                "WindowCenter", "WindowWidth"):
        if tag in ds:
            del ds[tag]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = arr8.tobytes()
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    _fresh_sop(ds)
    return ds, arr8


# JPEG at quality 95 (imagecodecs 2026.3 / libjpeg-turbo) on the bundled slices, measured: baseline 8-bit
# max |d stored| 4-5 units, mean 0.40-0.44; extended 12-bit max 8-9 HU, mean 1.24-1.28 HU; JPEG 2000 at
# 70 dB PSNR: RMSE 1.35 HU, max 7 HU. The bounds leave headroom for other encoder builds.
BASELINE_MAX_UNITS, BASELINE_MEAN_UNITS = 8, 1.0


def test_jpeg_baseline_8bit_within_quantisation_error(tmp_path, ct_files):
    slope = 10.0  # 8 bits x 10 HU: -1024 .. 1526 HU, covering the slice (max ~1450 HU)
    ds, arr8 = _eight_bit(ct_files[0], slope)
    plain = tmp_path / "ct8.dcm"
    ds.save_as(plain, enforce_file_format=True)
    lossy = copy.deepcopy(ds)
    lossy.LossyImageCompression = "01"
    _encapsulated(lossy, imagecodecs.jpeg8_encode(arr8, level=95), JPEGBaseline8Bit)
    jpeg = tmp_path / "ct8_jpeg.dcm"
    lossy.save_as(jpeg, enforce_file_format=True)
    ref, vol = read_image(plain).data, read_image(jpeg).data
    assert ref.min() == -1024 and ref.max() > 1000
    d_hu = np.abs(vol.astype(np.float64) - ref)
    assert d_hu.max() <= BASELINE_MAX_UNITS * slope, d_hu.max()
    assert d_hu.mean() <= BASELINE_MEAN_UNITS * slope, d_hu.mean()
    np.testing.assert_allclose(d_hu / slope, np.rint(d_hu / slope), atol=1e-3)  # whole stored units


def test_jpeg_extended_12bit_within_quantisation_error(tmp_path, ct_files):
    ds = pydicom.dcmread(ct_files[0])
    arr = _unsigned(ds)
    try:
        frame = imagecodecs.jpeg8_encode(arr, level=95, bitspersample=12)
    except Exception as exc:  # libjpeg-turbo builds without 12-bit support
        pytest.skip(f"imagecodecs cannot encode 12-bit JPEG: {exc}")
    ds.LossyImageCompression = "01"
    out = tmp_path / "ct12_jpeg.dcm"
    _encapsulated(ds, frame, JPEGExtended12Bit).save_as(out, enforce_file_format=True)
    d_hu = np.abs(read_image(out).data.astype(np.float64) - read_image(ct_files[0]).data)
    assert d_hu.max() <= 14 and d_hu.mean() <= 2.0, (d_hu.max(), d_hu.mean())  # slope 1 HU


def test_jpeg2000_lossy_within_error(tmp_path, ct_files):
    ds = _pydicom_compressed(ct_files[0], JPEG2000, j2k_psnr=[70.0])
    out = tmp_path / "j2k_lossy.dcm"
    ds.save_as(out, enforce_file_format=True)
    ref = read_image(ct_files[0]).data.astype(np.float64)
    d_hu = read_image(out).data - ref
    rmse = float(np.sqrt(np.mean(d_hu**2)))
    assert 0 < rmse < 5.0, rmse  # PSNR 70 dB of a 12-bit range (4095) ~ 1.3 HU RMSE
    assert np.abs(d_hu).max() <= 20


def _pydicom_data() -> Path:
    data_store = pytest.importorskip("data_store")  # the pydicom-data package
    folder = Path(data_store.__file__).parent / "data"
    if not (folder / "693_J2KR.dcm").is_file():
        pytest.skip("pydicom-data without 693_J2KR.dcm")
    return folder


def test_real_jpeg2000_lossless_ct_matches_uncompressed():
    folder = _pydicom_data()
    j2k, plain = read_image(folder / "693_J2KR.dcm"), read_image(folder / "693_UNCR.dcm")
    assert pydicom.dcmread(folder / "693_J2KR.dcm", stop_before_pixels=True).file_meta.TransferSyntaxUID == \
        JPEG2000Lossless
    assert j2k.kind == plain.kind == "ct"
    np.testing.assert_array_equal(j2k.data, plain.data)
    assert np.ptp(j2k.data) > 100


@pytest.mark.parametrize("name", ["jpeg-lossless-sv1", "j2k-lossless"])
def test_cli_reconstructs_compressed_dicom(tmp_path, ct_files, name, capsys):
    src = tmp_path / f"{name}.dcm"
    LOSSLESS[name](ct_files[0]).save_as(src, enforce_file_format=True)
    out = tmp_path / "out"
    code = main(["reconstruct", str(src), "--task", "ct-parallel", "--views", "20", "--method", "fbp",
                 "--size", "64", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert (out / "recon.npy").is_file() and np.load(out / "recon.npy").shape == (64, 64)


def test_missing_decoder_names_file_syntax_and_package(tmp_path, ct_files, monkeypatch):
    from pydicom.pixels import get_decoder

    src = tmp_path / "sv1.dcm"
    LOSSLESS["jpeg-lossless-sv1"](ct_files[0]).save_as(src, enforce_file_format=True)
    monkeypatch.setattr(get_decoder(JPEGLosslessSV1), "_available", {})  # as if pylibjpeg were not installed
    with pytest.raises(ImageReadError) as info:
        read_image(src)
    msg = str(info.value)
    assert "\n" not in msg and str(src) in msg
    assert "JPEG Lossless" in msg and JPEGLosslessSV1 in msg
    assert "pylibjpeg-libjpeg" in msg and "pip install pylibjpeg pylibjpeg-libjpeg" in msg


def test_unknown_transfer_syntax_is_one_line(tmp_path, ct_files):
    ds = _pydicom_compressed(ct_files[0], RLELossless)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: video, no image decoder
    src = tmp_path / "mpeg.dcm"
    ds.save_as(src, enforce_file_format=True)
    with pytest.raises(ImageReadError, match="transfer syntax") as info:
        read_image(src)
    assert "\n" not in str(info.value) and str(src) in str(info.value)
