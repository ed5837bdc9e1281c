"""The ``wavepatch`` command as a user runs it: outputs, metrics, bad input, and never touching the input."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from wavepatch.cli import main
from wavepatch.io import read_image
from wavepatch.io.publish import MANIFEST

OUTPUTS = {"recon.npy", "recon.png", "compare.png", "metrics.json"}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_reconstruct_writes_outputs_and_honest_metrics(tmp_path, ct_files, capsys):
    src = ct_files[1]
    before = _digest(src)
    out = tmp_path / "run"
    code, err = _run([
        "reconstruct", str(src), "--task", "ct-parallel", "--views", "20", "--method", "admm-tv",
        "--size", "64", "--out", str(out), "--no-progress", "--param", "n_iter=20",
    ], capsys)
    assert code == 0, err
    assert OUTPUTS <= {p.name for p in out.iterdir()}
    m = json.loads((out / "metrics.json").read_text())
    assert {"psnr", "ssim", "seconds", "task", "method"} <= set(m)
    assert m["task"] == "ct-parallel" and m["method"] == "admm-tv" and m["method_params"]["n_iter"] == 20
    recon = np.load(out / "recon.npy")
    assert recon.shape == (64, 64)
    # The metrics in the file are the metrics of the saved reconstruction against the resized input.
    from wavepatch.io import normalize_volume, resize_square
    from wavepatch.metrics import image_metrics

    truth = resize_square(normalize_volume(read_image(src), None)[0][0], 64)
    ref = image_metrics(_t(recon), _t(truth))
    assert ref["psnr"] == pytest.approx(m["psnr"], abs=1e-4)
    assert m["psnr"] > m["baseline_psnr"] + 2  # TV helps on 20 views
    assert _digest(src) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != MANIFEST]  # no temporaries


def _t(a):
    import torch

    return torch.from_numpy(np.asarray(a, np.float32))[None, None]


@pytest.mark.parametrize(
    "task,extra",
    [
        ("ct-fan", ["--views", "30"]),
        ("ct-lowdose", ["--dose", "5e3", "--views", "60"]),
        ("deblur", ["--kernel", "motion"]),
        ("sr", ["--factor", "2"]),
        ("inpaint", ["--mask", "box"]),
    ],
)
def test_every_task_runs_from_the_cli(tmp_path, ct_files, capsys, task, extra):
    out = tmp_path / task
    code, err = _run(["reconstruct", str(ct_files[0]), "--task", task, *extra, "--method", "fista-tv",
                      "--param", "n_iter=5", "--size", "32", "--out", str(out), "--no-progress"], capsys)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == task and np.isfinite(m["psnr"])


def test_mri_on_nifti_slice(tmp_path, mri_path, capsys):
    out = tmp_path / "mri"
    code, err = _run(["reconstruct", str(mri_path), "--task", "mri", "--accel", "8", "--mask", "uniform",
                      "--method", "cgls", "--slice", "1", "--size", "48", "--out", str(out), "--no-progress"],
                     capsys)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["slice"] == 1 and m["task_params"]["mask"] == "uniform" and m["task_params"]["accel"] == 8


def test_dicom_output_round_trip_keeps_hu_and_study(tmp_path, ct_files, capsys):
    src = ct_files[1]
    out = tmp_path / "dcm"
    code, err = _run(["reconstruct", str(src), "--task", "ct-parallel", "--method", "fbp", "--size", "64",
                      "--dicom", "--out", str(out), "--no-progress"], capsys)
    assert code == 0, err
    files = sorted((out / "recon_dicom").glob("*.dcm"))
    assert len(files) == 1
    ds, ref = pydicom.dcmread(files[0]), pydicom.dcmread(src)
    assert ds.StudyInstanceUID == ref.StudyInstanceUID and ds.PatientID == ref.PatientID
    assert ds.SeriesInstanceUID != ref.SeriesInstanceUID and ds.SOPInstanceUID != ref.SOPInstanceUID
    hu = read_image(files[0]).data[0]
    expected = np.clip(np.load(out / "recon.npy"), 0, 1) * 2000.0 - 1000.0  # default window [-1000, 1000]
    assert np.abs(hu - expected).max() <= 1.0


def test_console_script_runs_as_installed(tmp_path, ct_files):
    exe = Path(sys.executable).with_name("wavepatch")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "wavepatch.cli"]
    out = tmp_path / "script"
    proc = subprocess.run([*cmd, "reconstruct", str(ct_files[0]), "--task", "inpaint", "--method", "fbp",
                           "--size", "32", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "PSNR" in proc.stdout and (out / "compare.png").exists()
    corrupt = _write(tmp_path / "corrupt.dcm", b"DICM" * 4)
    proc = subprocess.run([*cmd, "reconstruct", str(corrupt), "--task", "ct-parallel", "--method", "fbp",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize(
    "make_input,argv_tail,message",
    [
        (lambda d: d / "missing.dcm", [], "no such file"),
        (lambda d: _write(d / "corrupt.dcm", b"DICM" * 10), [], "corrupt.dcm"),
        (lambda d: _write(d / "notes.txt", b"hello"), [], "notes.txt"),
        (lambda d: _write_npy(d / "nan.npy", np.full((32, 32), np.nan)), [], "nan.npy"),
        (lambda d: _write_npy(d / "img.npy", np.random.rand(32, 32)), ["--views", "0"], "views"),
        (lambda d: _write_npy(d / "img.npy", np.random.rand(32, 32)), ["--param", "bogus=1"], "bogus"),
        (lambda d: _write_npy(d / "img.npy", np.random.rand(32, 32)), ["--size", "8"], "--size"),
        (lambda d: _write_npy(d / "img.npy", np.random.rand(32, 32)), ["--slice", "5"], "--slice"),
        (lambda d: _write_npy(d / "img.npy", np.random.rand(32, 32)), ["--steps", "5"], "n_iter"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, capsys, make_input, argv_tail, message):
    path = make_input(tmp_path)
    code, err = _run(["reconstruct", str(path), "--task", "ct-parallel", "--method", "admm-tv",
                      "--out", str(tmp_path / "out"), "--size", "32", *argv_tail], capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wavepatch: error:"), err
    assert message.lower() in lines[0].lower()
    assert not (tmp_path / "out" / "recon.npy").exists()


def test_bad_option_is_one_line(capsys):
    code, err = _run(["reconstruct", "x.dcm", "--task", "pet", "--method", "fbp", "--out", "o"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "pet" in err


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(Exception, match="no such file"):
        main(["--debug", "reconstruct", str(tmp_path / "missing.dcm"), "--task", "ct-parallel",
              "--method", "fbp", "--out", str(tmp_path / "o")])


def test_output_is_never_the_input(tmp_path, ct_dir, capsys):
    series = tmp_path / "series"
    shutil.copytree(ct_dir, series)
    before = {p.name: _digest(p) for p in series.iterdir()}
    code, err = _run(["reconstruct", str(series), "--task", "inpaint", "--method", "fbp", "--size", "32",
                      "--out", str(series / "result")], capsys)
    assert code != 0 and "input" in err
    code, err = _run(["reconstruct", str(series / "A0002_B40f_010.dcm"), "--task", "inpaint", "--method",
                      "fbp", "--size", "32", "--out", str(series / "A0002_B40f_010.dcm")], capsys)
    assert code != 0
    assert {p.name: _digest(p) for p in series.iterdir()} == before


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _write_npy(path: Path, arr: np.ndarray) -> Path:
    np.save(path, arr)
    return path
