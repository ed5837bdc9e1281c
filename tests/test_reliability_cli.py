"""Hostile and mistaken input to `wavepatch reconstruct`: one line, exit 2, and outputs published as a whole.

Each case is a defect a sweep found (issue 16, D1-D9): the error must be one stderr line starting
``wavepatch: error:``, and a failed run must leave the output folder exactly as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from wavepatch.cli import main
from wavepatch.io.publish import MANIFEST, output_lock

FAST = ["--task", "ct-parallel", "--views", "20", "--method", "fbp", "--size", "32", "--no-progress"]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wavepatch: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_symlink_loop_as_input(tmp_path, capsys):
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    os.symlink(b, a)
    os.symlink(a, b)
    line = _one_line_error(*_run(["reconstruct", a, *FAST, "--out", tmp_path / "out"], capsys))
    assert "a.dcm" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--size", "100000"], "--size"),
    (["--size", "8"], "--size"),
    (["--noise", "inf"], "--noise"),
    (["--noise", "nan"], "--noise"),
    (["--dose", "1000"], "--dose does not apply to ct-parallel"),
    (["--accel", "8"], "--accel does not apply"),
    (["--views", "0"], "--views"),
    (["--samples", "4"], "--samples"),
    (["--fast"], "fast"),
])
def test_bad_or_inapplicable_options(tmp_path, ct_files, capsys, argv, needle):
    out = tmp_path / "out"
    line = _one_line_error(*_run(["reconstruct", ct_files[0], *FAST, *argv, "--out", out], capsys))
    assert needle in line
    assert not out.exists()


def test_admm_rho_zero_is_refused(tmp_path, ct_files, capsys):
    argv = ["reconstruct", ct_files[0], *FAST[:4], "--method", "admm-tv", "--size", "32", "--param", "rho=0",
            "--out", tmp_path / "out"]
    assert "rho" in _one_line_error(*_run(argv, capsys))


def test_dicom_for_non_ct_input_writes_nothing(tmp_path, capsys):
    img = tmp_path / "x.npy"
    np.save(img, np.random.default_rng(0).random((32, 32)).astype(np.float32))
    out = tmp_path / "out"
    line = _one_line_error(*_run(["reconstruct", img, *FAST, "--dicom", "--out", out], capsys))
    assert "--dicom" in line
    assert not out.exists()


def test_rerun_replaces_the_whole_folder(tmp_path, ct_files, capsys):
    """D5: a file only the first run wrote (std.npy, a DICOM series) does not survive the second run."""
    out = tmp_path / "out"
    assert _run(["reconstruct", ct_files[0], *FAST, "--dicom", "--out", out], capsys)[0] == 0
    assert (out / "recon_dicom").is_dir() and (out / MANIFEST).is_file()
    (out / "std.npy").write_bytes(b"stale")  # as if an earlier run had written it
    assert _run(["reconstruct", ct_files[1], *FAST, "--out", out], capsys)[0] == 0
    names = {p.name for p in out.iterdir()}
    assert "std.npy" not in names and "recon_dicom" not in names
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest["files"]) == {p.name for p in out.iterdir() if p.is_file() and p.name != MANIFEST}
    assert json.loads((out / "metrics.json").read_text())["input"] == str(ct_files[1])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and "lock" not in p.name]


def test_failed_rerun_leaves_previous_output_intact(tmp_path, ct_files, capsys):
    """D4: a run that fails late (here: the method's parameter) does not touch the previous complete output."""
    out = tmp_path / "out"
    assert _run(["reconstruct", ct_files[0], *FAST, "--out", out], capsys)[0] == 0
    before = _listing(out)
    argv = ["reconstruct", ct_files[1], *FAST[:4], "--method", "admm-tv", "--size", "32", "--param", "lam=-1",
            "--out", out]
    _one_line_error(*_run(argv, capsys))
    assert _listing(out) == before


def test_concurrent_run_into_one_folder_is_refused(tmp_path, ct_files, capsys):
    """D3: while one run holds OUT, a second one is refused instead of mixing its files in."""
    out = tmp_path / "out"
    with output_lock(out):
        line = _one_line_error(*_run(["reconstruct", ct_files[0], *FAST, "--out", out], capsys))
    assert "another wavepatch run" in line
    assert not out.exists()
    assert _run(["reconstruct", ct_files[0], *FAST, "--out", out], capsys)[0] == 0  # lock released


def test_folder_with_foreign_files_is_not_replaced(tmp_path, ct_files, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("years of work")
    line = _one_line_error(*_run(["reconstruct", ct_files[0], *FAST, "--out", out], capsys))
    assert "not written by wavepatch" in line
    assert (out / "chapter1.tex").read_text() == "years of work"


def test_output_folder_holding_the_input_is_refused(tmp_path, ct_files, capsys):
    out = tmp_path / "out"
    assert _run(["reconstruct", ct_files[0], *FAST, "--out", out], capsys)[0] == 0
    inp = out / "mine.dcm"
    inp.write_bytes(Path(ct_files[0]).read_bytes())
    line = _one_line_error(*_run(["reconstruct", inp, *FAST, "--out", out], capsys))
    assert "input" in line
    assert inp.read_bytes() == Path(ct_files[0]).read_bytes()


def test_identical_reconstruction_gives_strict_json(tmp_path, capsys):
    """D7: PSNR of a perfect reconstruction is inf; metrics.json holds null (valid JSON), the line says so."""
    img = tmp_path / "x.npy"
    np.save(img, np.random.default_rng(0).random((32, 32)).astype(np.float32))
    out = tmp_path / "out"
    argv = ["reconstruct", img, "--task", "inpaint", "--keep", "1", "--method", "cgls", "--size", "32",
            "--no-progress", "--out", out]
    code, err = _run(argv, capsys)
    assert code == 0, err
    text = (out / "metrics.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    m = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert m["baseline_psnr"] is None
