"""Shared fixtures: paths to the small real data set bundled in data/ (see data/README.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The repository's bundled data folder."""
    return DATA_DIR


@pytest.fixture(scope="session")
def ct_dir() -> Path:
    """Folder with 3 real chest CT DICOM slices (one series, 512x512, HU via RescaleIntercept -1024)."""
    return DATA_DIR / "ct"


@pytest.fixture(scope="session")
def ct_files(ct_dir: Path) -> list[Path]:
    """The 3 bundled CT DICOM files, in file-name (= InstanceNumber) order."""
    return sorted(ct_dir.glob("*.dcm"))


@pytest.fixture(scope="session")
def mri_path() -> Path:
    """NIfTI with 5 axial slices (197x233x5, uint8 0-255) of the MNI ICBM152 2009a T1 template."""
    return DATA_DIR / "mri" / "mni_icbm152_t1_axial5.nii.gz"


@pytest.fixture(scope="session")
def ct_small_path() -> Path:
    """pydicom's own 128x128 CT test file (ships with pydicom, no download)."""
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm"))


@pytest.fixture(scope="session")
def torchrun_train():
    """A function running ``wavepatch train ARGS`` under torchrun with 2 CPU processes (gloo), one thread each."""
    return _torchrun_train


def _torchrun_train(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m",
           "wavepatch.cli", "train", *args]
    return subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture()
def data(tmp_path):
    """Five smooth 24 x 24 images in [0, 1] as one .npy (S, N, N): training data for tiny train/sample runs."""
    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.linspace(-1, 1, 24), np.linspace(-1, 1, 24), indexing="ij")
    imgs = [np.clip(0.5 + 0.3 * np.cos(4 * xx + k) * yy + 0.05 * rng.standard_normal(xx.shape), 0, 1) for k in range(5)]
    path = tmp_path / "images.npy"
    np.save(path, np.stack(imgs).astype(np.float32))
    return path
