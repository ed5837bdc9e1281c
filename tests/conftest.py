"""Shared fixtures: paths to the small real data set bundled in data/ (see data/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

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


def _blobs(shape=(16, 48, 48), n=40, seed=0):
    """An isotropic random volume in [0, 1]: spheres of random radius and intensity, smoothed by a 3-D Gaussian."""
    g = torch.Generator().manual_seed(seed)
    s, h, w = shape
    z, y, x = torch.meshgrid(*(torch.arange(n_, dtype=torch.float32) for n_ in shape), indexing="ij")
    vol = torch.zeros(shape)
    for _ in range(n):
        c = torch.rand(3, generator=g) * torch.tensor([s, h, w], dtype=torch.float32)
        r = 2 + 5 * float(torch.rand(1, generator=g))
        inside = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < r * r
        vol = torch.where(inside, torch.rand(1, generator=g), vol)
    k = torch.exp(-torch.arange(-3, 4, dtype=torch.float32) ** 2 / 2)
    k = k / k.sum()
    for d in range(3):
        shape_k = [1, 1, 1, 1, 1]
        shape_k[2 + d] = 7
        pad = [0, 0, 0, 0, 0, 0]
        pad[4 - 2 * d: 6 - 2 * d] = [3, 3]
        vol = F.conv3d(F.pad(vol[None, None], pad, mode="replicate"), k.reshape(shape_k))[0, 0]
    return vol.clamp(0, 1)


@pytest.fixture(scope="session")
def blob_volume():
    """The function ``blob_volume(shape=(16, 48, 48), n=40, seed=0)``: an isotropic random volume (S, H, W) in
    [0, 1], torch float32 (spheres smoothed by a 3-D Gaussian), for the self-supervised volume methods."""
    return _blobs


@pytest.fixture()
def refused(tmp_path, capsys):
    """``refused(argv, words)``: ``wavepatch argv --out DIR`` exits 2 with one stderr line containing ``words`` and
    creates nothing at DIR."""
    from wavepatch.cli import main

    def check(argv: list[str], words: str) -> None:
        out = tmp_path / "refused"
        code = main([*argv, "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and words in err[0], err
        assert not out.exists()

    return check


@pytest.fixture()
def volume_run(tmp_path, capsys):
    """``volume_run(argv, name)``: ``wavepatch argv --out tmp/name`` exits 0 and writes recon.nii.gz; returns its
    metrics.json as a dict."""
    from wavepatch.cli import main

    def run(argv: list[str], name: str) -> dict:
        out = tmp_path / name
        code = main([*argv, "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        assert (out / "recon.nii.gz").exists()
        return json.loads((out / "metrics.json").read_text())

    return run
