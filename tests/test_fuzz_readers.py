"""Property tests (hypothesis) for ``read_image`` and ``wavepatch reconstruct`` on hostile input files.

Inputs: random bytes under each supported extension (some behind the format's magic bytes, so the parser
gets past its first check), truncations of the real bundled files, and byte flips in their first 512 bytes.
Property: ``read_image`` returns a finite float32 (S, H, W) stack or raises ``ImageReadError`` with one
line naming the file, never anything else; the CLI either succeeds or exits 2 with exactly one stderr line
``wavepatch: error: ...`` and leaves no output folder behind.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import wavepatch  # noqa: E402
from wavepatch.cli import main  # noqa: E402
from wavepatch.io import ImageReadError, read_image  # noqa: E402

DATA = Path(wavepatch.__file__).parent / "data"
CT_BYTES = sorted((DATA / "ct").glob("*.dcm"))[0].read_bytes()
NII_GZ_BYTES = (DATA / "mri" / "mni_icbm152_t1_axial5.nii.gz").read_bytes()
NII_BYTES = gzip.decompress(NII_GZ_BYTES)


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.arange(16 * 16, dtype=np.int16).reshape(16, 16))
    return buf.getvalue()


NPY_BYTES = _npy_bytes()
# (suffix, real file bytes) of every format a real file is fuzzed in
REAL = {".dcm": CT_BYTES, ".nii": NII_BYTES, ".nii.gz": NII_GZ_BYTES, ".npy": NPY_BYTES}
# magic bytes that get random content past each parser's first check
MAGIC = {
    ".dcm": [b"", b"\0" * 128 + b"DICM"],
    ".nii": [b"", NII_BYTES[:348]],
    ".nii.gz": [b""],  # random bytes are gzip-compressed below as well
    ".png": [b"", b"\x89PNG\r\n\x1a\n"],
    ".npy": [b"", b"\x93NUMPY\x01\x00", NPY_BYTES[:10]],
}

# WAVEPATCH_FUZZ_EXAMPLES=1000 for a deeper local run; pydicom/nibabel warn about each oddity they meet
FUZZ = settings(max_examples=int(os.environ.get("WAVEPATCH_FUZZ_EXAMPLES", "25")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")


def check_read(path: Path) -> None:
    """The property: a finite float32 stack, or an ImageReadError in one line that names the file."""
    try:
        vol = read_image(path)
    except ImageReadError as exc:
        msg = str(exc)
        assert "\n" not in msg and "\r" not in msg, msg
        assert str(path) in msg, msg
        return
    assert vol.data.dtype == np.float32 and vol.data.ndim == 3 and min(vol.data.shape) >= 1
    assert np.isfinite(vol.data).all()


@contextlib.contextmanager
def _file(suffix: str, content: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"input{suffix}"
        path.write_bytes(content)
        yield path


@st.composite
def random_files(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from(sorted(MAGIC)))
    body = draw(st.sampled_from(MAGIC[suffix])) + draw(st.binary(max_size=1024))
    if suffix == ".nii.gz" and draw(st.booleans()):
        body = gzip.compress(body)
    return suffix, body


@st.composite
def truncated_files(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from(sorted(REAL)))
    content = REAL[suffix]
    return suffix, content[: draw(st.integers(0, len(content) - 1))]


@st.composite
def mutated_files(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from(sorted(REAL)))
    content = bytearray(REAL[suffix])
    flips = draw(st.lists(st.tuples(st.integers(0, min(511, len(content) - 1)), st.integers(1, 255)),
                          min_size=1, max_size=8))
    for pos, mask in flips:
        content[pos] ^= mask
    return suffix, bytes(content)


@FUZZ
@given(random_files())
def test_random_bytes_each_extension(case):
    with _file(*case) as path:
        check_read(path)


@FUZZ
@given(truncated_files())
def test_truncated_real_files(case):
    with _file(*case) as path:
        check_read(path)


@FUZZ
@given(mutated_files())
def test_header_mutations_of_real_files(case):
    with _file(*case) as path:
        check_read(path)


@pytest.mark.parametrize("content", [b"", b"\x00", bytes(range(256)) * 4, b"\x80\x04K\x01."])
def test_non_npy_bytes_are_not_called_pickles(tmp_path, content):
    path = tmp_path / "x.npy"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=r"not a valid \.npy array") as info:
        read_image(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    assert ("pickled" in msg) == content.startswith(b"\x80\x04")  # only a real pickle is called one


def test_npy_header_claiming_huge_array_is_refused_before_allocation(tmp_path):
    header = NPY_BYTES.replace(b"(16, 16)", b"(4000000, 4000000)".ljust(8))
    path = tmp_path / "huge.npy"
    path.write_bytes(header[: NPY_BYTES.index(b"\n") + 1].ljust(128, b" ")[:127] + b"\n" + b"\0" * 512)
    with pytest.raises(ImageReadError, match="not a valid .npy array") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_nifti_header_claiming_huge_volume_is_refused(tmp_path):
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    img.header["dim"][1:4] = (30000, 30000, 30000)  # 108 TB of float32 claimed by a tiny file
    path = tmp_path / "huge.nii"
    path.write_bytes(img.header.binaryblock + b"\0" * (352 - 348) + b"\0" * 256)
    with pytest.raises(ImageReadError, match="header dimensions") as info:
        read_image(path)
    assert str(path) in str(info.value)


def run_cli(path: Path, out: Path) -> tuple[int, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    def show(message, category, filename, lineno, file=None, line=None):  # what Python prints in a shell
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings(), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        warnings.simplefilter("default")  # as a user's shell would: any warning text lands on stderr
        warnings.showwarning = show
        code = main(["reconstruct", str(path), "--task", "ct-parallel", "--views", "20", "--method", "fbp",
                     "--size", "64", "--out", str(out), "--no-progress"])
    return code, stderr.getvalue()


@FUZZ
@given(st.one_of(random_files(), truncated_files(), mutated_files()))
def test_cli_reconstruct_fails_in_one_line_and_writes_nothing(case):
    with _file(*case) as path:
        out = path.parent / "out"
        code, err = run_cli(path, out)
        if code == 0:  # a flip that left the file valid (e.g. in the DICOM preamble)
            assert (out / "recon.npy").is_file()
            return
        lines = err.splitlines()
        assert code == 2, (code, err)
        assert len(lines) == 1 and lines[0].startswith("wavepatch: error:"), err
        assert not out.exists()
        assert not [p for p in path.parent.iterdir() if "staging" in p.name]
