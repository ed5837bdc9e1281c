"""A non-editable install works without the source tree: the wheel carries the bundled priors and data, and the
installed copy (not the checkout) finds them through :mod:`wavepatch.resources`. No network: ``--no-index``,
``--no-deps``, ``--no-build-isolation`` (setuptools >= 70.1 builds wheels itself; the ``wheel`` package is not
needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DATA = ("models", "data")
PIP_ENV = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    done = subprocess.run(cmd, env={**os.environ, **PIP_ENV}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def installed_site(tmp_path: Path) -> Path:
    """Build a wheel of the checkout and install it with ``pip --target``; returns that folder (``tmp_path/site``).

    The wheel is built from a clean copy of the sources (``tmp_path/src``) so that no stale ``build/`` or
    ``*.egg-info`` of the checkout leaks into it and nothing is written into the checkout."""
    src, dist, site = tmp_path / "src", tmp_path / "dist", tmp_path / "site"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(REPO / "src", src / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src))
    (wheel,) = dist.glob("wavepatch-*.whl")
    _pip("install", "--no-deps", "--target", str(site), str(wheel))
    return site


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return installed_site(tmp_path_factory.mktemp("install"))


def _package_data_files() -> set[str]:
    pkg = REPO / "src" / "wavepatch"
    return {p.relative_to(pkg.parent).as_posix() for folder in PACKAGE_DATA for p in (pkg / folder).rglob("*")
            if p.is_file()}


@pytest.mark.slow
def test_wheel_carries_priors_and_data(site):
    expected = _package_data_files()
    assert {f"wavepatch/models/{n}.{ext}" for n in ("ct_patch256", "mri_patch256") for ext in ("safetensors", "json")
            } <= expected
    assert {"wavepatch/data/ct/A0002_B40f_015.dcm", "wavepatch/data/mri/mni_icbm152_t1_axial5.nii.gz"} <= expected
    (wheel,) = (site.parent / "dist").glob("wavepatch-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        missing = expected - set(zf.namelist())
    assert not missing, f"not in the wheel: {sorted(missing)}"


@pytest.mark.slow
def test_installed_copy_finds_its_own_files(site):
    # PYTHONPATH precedes site-packages, where the checkout's editable install is only a .pth path entry (no
    # meta-path finder); the assertions below fail, rather than pass, if the checkout were imported instead.
    code = ("import wavepatch, wavepatch.resources as r; print(wavepatch.__file__); print(r.prior_path('ct_patch256'));"
            " print(r.data_path('ct/A0002_B40f_015.dcm')); print(','.join(r.bundled_priors()))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", code], cwd=site.parent, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    module, prior, ct, names = done.stdout.split("\n")[:4]
    for path in (module, prior, ct):
        resolved = Path(path).resolve()
        assert resolved.is_relative_to(site.resolve()), f"{path} is not in the installed copy {site}"
        assert resolved.is_file()
    assert not Path(module).resolve().is_relative_to(REPO)
    assert set(names.split(",")) == {p.stem for p in (REPO / "src" / "wavepatch" / "models").glob("*.safetensors")}


@pytest.mark.slow
def test_installed_copy_runs_the_main_job(site):
    """The README's main job (bundled slice, bundled patch prior, fast PaDIS), shrunk to 64 px and 2 levels, from
    the installed copy in a folder outside the checkout."""
    work = site.parent / "work"
    work.mkdir()
    ct = site / "wavepatch" / "data" / "ct" / "A0002_B40f_015.dcm"
    cmd = [sys.executable, "-m", "wavepatch.cli", "reconstruct", str(ct), "--task", "ct-parallel", "--views", "20",
           "--method", "padis", "--fast", "--steps", "2", "--size", "64", "--compare", "admm-tv", "--out", "out",
           "--no-progress"]
    done = subprocess.run(cmd, cwd=work, env={**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((work / "out" / "metrics.json").read_text())
    assert Path(metrics["method_params"]["prior"]).resolve().is_relative_to(site.resolve())
    assert metrics["nfe"] == 2 and metrics["psnr"] > metrics["baseline_psnr"]
