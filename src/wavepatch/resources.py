"""Files that ship inside the package: the bundled priors (``wavepatch/models/NAME.safetensors`` + ``NAME.json``)
and the small real test data set (``wavepatch/data``: 3 CT DICOM slices in ``ct/``, an MRI NIfTI in ``mri/``).

They are package data, so they are found the same way from a source checkout, an editable install, a wheel or a
non-editable ``pip install .``: no environment variable and no path to the repository is needed. (In a checkout the
repo-root ``models/`` and ``data/`` are symlinks to these folders, so the documented paths work there too.)

Foundation layer: imports nothing from wavepatch.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _root(folder: str) -> Path:
    root = files("wavepatch") / folder
    if not isinstance(root, Path):  # e.g. a zipped install: the files have no path of their own
        raise FileNotFoundError(f"wavepatch's bundled {folder}/ is not on the file system ({root}); install unzipped")
    return root


def bundled_priors() -> list[str]:
    """Names of the bundled priors (``ct_patch256``, ...), sorted; each is ``models/NAME.safetensors``."""
    root = _root("models")
    return sorted(p.stem for p in root.glob("*.safetensors")) if root.is_dir() else []


def prior_path(name: str) -> Path:
    """The file of the bundled prior ``name`` (e.g. ``"ct_patch256"``); its config lies beside it as ``NAME.json``."""
    path = _root("models") / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no bundled prior {name!r}; available: {', '.join(bundled_priors()) or 'none'}")
    return path


def data_path(name: str) -> Path:
    """A bundled data file or folder by its name relative to ``wavepatch/data``: ``"ct"``, ``"mri"``,
    ``"ct/A0002_B40f_015.dcm"``."""
    root = _root("data")
    path = root / name
    if not path.exists():
        available = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.is_dir() else []
        raise FileNotFoundError(f"no bundled data {name!r}; available: {', '.join(available) or 'none'}")
    return path
