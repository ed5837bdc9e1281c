"""Siemens raw data (TWIX ``meas_*.dat``, VB and VD/VE) -> k-space array + info, via twixtools
(:func:`wavepatch.io.kspace.read_kspace` wraps it into a ``KSpace``).

The image scans of the file's last measurement are mapped with ``twixtools.map_twix`` and returned as complex64
``(C, H, W)`` = (coils, readout, phase-encode lines), the layout of :mod:`wavepatch.io.kspace`, with:

* readout oversampling removed (twixtools ``remove_os``; H is then the protocol's base resolution),
* ramp-sampled readouts regridded, and partial-Fourier or accelerated acquisitions zero-filled to the full
  matrix (``zf_missing_lines``), so missing lines are exact zeros and the zero pattern is the sampling mask,
* averages and segments combined (twixtools' defaults),
* ``slice`` picking one of a multi-slice 2D acquisition (default: the middle one). Other dimensions past one
  entry (echoes, repetitions, sets, phases) take their first entry and say so in ``info["dropped"]``.

3D acquisitions (partitions > 1) and non-Cartesian trajectories are refused with one line: they need a
different operator. The values are the scanner's raw ADC units; the caller normalises. Needs ``twixtools``
(the ``mri`` extra). Every problem raises :class:`TwixReadError` (a ``ValueError``) with one line naming the
file.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np


class TwixReadError(ValueError):
    """A TWIX file that cannot be read; the message is one line naming the file."""

TWIX_SUFFIXES = (".dat",)
_OTHER_DIMS = ("Ide", "Idd", "Idc", "Idb", "Ida", "Set", "Rep", "Phs", "Eco")


def _fail(path: Path, reason: str) -> TwixReadError:
    return TwixReadError(f"{path}: {reason}")


def _import_twixtools(path: Path):
    try:
        import twixtools
    except ImportError as exc:
        raise _fail(path, "reading Siemens .dat raw data needs twixtools: pip install 'wavepatch[mri]'") from exc
    return twixtools


def _image_array(path: Path):
    twixtools = _import_twixtools(path)
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            scans = twixtools.map_twix(twixtools.read_twix(str(path), verbose=False), verbose=False)
    except Exception as exc:  # twixtools raises anything from struct.error to IndexError on a bad file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise _fail(path, f"not a readable Siemens TWIX raw-data file ({type(exc).__name__}: {first})") from exc
    scans = scans if isinstance(scans, list) else [scans]
    for scan in reversed(scans):  # the last measurement is the imaging scan; earlier ones are adjustments
        arr = scan.get("image") if isinstance(scan, dict) else None
        if arr is not None and int(np.prod(arr.shape)) > 0:
            return arr, scan.get("hdr", {})
    raise _fail(path, "holds no image scans (only noise/adjustment data?)")


def _trajectory(hdr) -> int:
    try:
        return int(hdr["MeasYaps"]["sKSpace"]["ucTrajectory"])
    except (KeyError, TypeError, ValueError):
        return 1


def read_twix(path, slice: int | None = None) -> tuple[np.ndarray, dict]:
    """Read one 2D slice of Cartesian k-space from a Siemens TWIX ``.dat`` file -> (complex64 ``(C, H, W)``,
    info: the sizes found, the slice read and what was dropped)."""
    p = Path(path)
    arr, hdr = _image_array(p)
    if _trajectory(hdr) != 1:
        raise _fail(p, "is a non-Cartesian (radial/spiral) acquisition; only Cartesian k-space is read")
    arr.flags["remove_os"] = True
    arr.flags["regrid"] = True
    arr.flags["zf_missing_lines"] = True
    dims = list(arr.dim_order)
    shape = dict(zip(dims, (int(s) for s in arr.shape), strict=True))
    if shape.get("Par", 1) > 1:
        raise _fail(p, f"is a 3D acquisition ({shape['Par']} partitions); only 2D (multi-slice) data is read")
    n_slices = shape.get("Sli", 1)
    sli = n_slices // 2 if slice is None else int(slice)
    if not 0 <= sli < n_slices:
        raise _fail(p, f"slice {sli} out of range: the file holds {n_slices} slice(s)")
    index = []
    dropped = {}
    for d in dims:
        if d == "Sli":
            index.append(sli)
        elif d in ("Lin", "Cha", "Col"):
            index.append(np.s_[:])
        else:
            index.append(0)
            if shape[d] > 1 and d in _OTHER_DIMS:
                dropped[d] = shape[d]
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            data = np.asarray(arr[tuple(index)])
    except Exception as exc:
        raise _fail(p, f"raw data could not be assembled ({type(exc).__name__}: {exc})") from exc
    data = np.squeeze(data)
    if data.ndim == 2:  # one coil: (Lin, Col)
        data = data[:, None, :]
    if data.ndim != 3:
        raise _fail(p, f"unexpected image-scan layout {dims} sizes {arr.shape}")
    k = np.ascontiguousarray(np.transpose(data, (1, 2, 0)), dtype=np.complex64)  # (Cha, Col, Lin)
    if not np.all(np.isfinite(k)):
        raise _fail(p, "raw data hold NaN/Inf values")
    info = {"format": "siemens-twix", "slice": sli, "slices": n_slices, "coils": int(k.shape[0]),
            "readout": int(k.shape[1]), "lines": int(k.shape[2]), "dropped": dropped}
    return k, info
