"""Measured MRI k-space in: ``.npy``, BART ``.cfl``/``.hdr``, fastMRI-style HDF5 and Siemens TWIX ``.dat``
(:mod:`wavepatch.io.twix`); out: ``.npy`` (atomic).

Everything is returned as a :class:`KSpace` whose ``data`` is complex64 ``(C, H, W)``: coils, readout rows,
phase-encode columns (``C = 1`` for single-coil data). K-space is expected in the CENTRED layout used by
``wavepatch.physics.mri`` (DC at ``(H // 2, W // 2)``), which is how fastMRI and BART store it; phase-encode
undersampling is along W (whole columns missing).

Formats (picked by extension; an unknown extension is sniffed for the npy/HDF5 magic bytes):

* ``.npy``: a complex array ``(H, W)`` or ``(C, H, W)``; real dtypes and pickled objects are refused.
* BART ``name.cfl`` + ``name.hdr`` (pass either file, or the common base name): the header's
  ``# Dimensions`` line gives BART's dims ``[x(read), y(phase 1), z(phase 2/slices), coils, ...]``; the cfl
  holds complex64 in Fortran order. ``z > 1`` needs ``slice``; any dimension past coils must be 1.
* HDF5 (``.h5``/``.hdf5``), fastMRI layout: dataset ``kspace`` (or ``dataset=``) of shape
  ``(slices, coils, H, W)`` (multi-coil) or ``(slices, H, W)`` (single-coil), ``(H, W)`` also accepted;
  ``slice`` picks one (default: the middle one). An optional ``mask`` dataset ((W,) or (H, W), 0/1) becomes
  ``KSpace.mask``. Needs ``h5py``.

* Siemens ``.dat`` (TWIX VB/VD/VE): read by :func:`wavepatch.io.twix.read_twix` (needs ``twixtools``).

ISMRMRD raw data (``dataset/data`` acquisitions) is not read: it is detected and refused with a hint.

Every problem raises :class:`KSpaceReadError` (a ``ValueError``) with one line that names the file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wavepatch.io.atomic import PathLike, atomic_path

_NPY_MAGIC = b"\x93NUMPY"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_H5_SUFFIXES = (".h5", ".hdf5", ".hdf")


class KSpaceReadError(ValueError):
    """A k-space (or mask) file that cannot be read; the message is one line naming the file."""


@dataclass
class KSpace:
    """Measured k-space: ``data`` complex64 ``(C, H, W)`` (centred layout), the format it came from
    (``"npy"``, ``"cfl"``, ``"hdf5"``), format details in ``info`` and, when the file holds one, the
    sampling ``mask`` as bool ``(H, W)``."""

    data: np.ndarray
    source: str
    info: dict[str, Any] = field(default_factory=dict)
    mask: np.ndarray | None = None

    @property
    def n_coils(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of one coil's k-space."""
        return int(self.data.shape[1]), int(self.data.shape[2])


def _fail(path: PathLike, reason: str) -> KSpaceReadError:
    return KSpaceReadError(f"{path}: {' '.join(str(reason).split())}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _to_complex64(path: PathLike, arr: np.ndarray, what: str) -> np.ndarray:
    """Check a complex, finite, non-empty array and return it as contiguous complex64."""
    if arr.dtype.names is not None:
        arr = _compound_to_complex(path, arr)
    if not np.iscomplexobj(arr):
        raise _fail(path, f"{what} has real dtype {arr.dtype}; k-space must be complex (complex64 or complex128)")
    if arr.size == 0:
        raise _fail(path, f"{what} is empty (shape {arr.shape})")
    out = np.ascontiguousarray(arr, dtype=np.complex64)
    if not np.all(np.isfinite(out)):
        raise _fail(path, f"{what} holds NaN/Inf values")
    return out


def _compound_to_complex(path: PathLike, arr: np.ndarray) -> np.ndarray:
    """Compound (real, imag) records, as some HDF5 writers store complex numbers -> complex128."""
    names = {n.lower(): n for n in arr.dtype.names or ()}
    for re_name, im_name in (("r", "i"), ("real", "imag"), ("re", "im")):
        if re_name in names and im_name in names and len(names) == 2:
            return arr[names[re_name]].astype(np.float64) + 1j * arr[names[im_name]].astype(np.float64)
    raise _fail(path, f"compound dtype {arr.dtype} is not a (real, imag) pair")


# ----------------------------------------------------------------------------------------------- npy


def _read_npy(path: Path, slice: int | None) -> KSpace:
    if slice is not None:
        raise _fail(path, "slice= applies to multi-slice files (cfl with z > 1, HDF5); a .npy holds one slice")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode=None)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise _fail(path, "holds pickled Python objects; expected a complex array (H, W) or (C, H, W)") from exc
        raise _fail(path, f"not a readable .npy array ({_first_line(exc)})") from exc
    except (OSError, EOFError) as exc:
        raise _fail(path, f"not a readable .npy array ({_first_line(exc)})") from exc
    if not isinstance(arr, np.ndarray):  # np.load on an .npz returns an NpzFile
        raise _fail(path, "is an .npz archive, not a .npy array; expected a complex array (H, W) or (C, H, W)")
    if arr.ndim not in (2, 3):
        raise _fail(path, f"array has shape {arr.shape}; expected complex k-space (H, W) or (C, H, W)")
    data = _to_complex64(path, arr, "array")
    if data.ndim == 2:
        data = data[None]
    return KSpace(data=data, source="npy", info={"file": str(path), "dtype_on_disk": str(arr.dtype)})


# ------------------------------------------------------------------------------------------ BART cfl


def _cfl_pair(path: Path) -> tuple[Path, Path]:
    base = path.with_suffix("") if path.suffix.lower() in (".cfl", ".hdr") else path
    return base.with_name(base.name + ".cfl"), base.with_name(base.name + ".hdr")


def _read_hdr(hdr: Path) -> list[int]:
    try:
        text = hdr.read_text(encoding="ascii", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(hdr, f"cannot read BART header ({_first_line(exc)})") from exc
    lines = [line.strip() for line in text.splitlines()]
    dims_line = None
    for i, line in enumerate(lines):
        if line.lower().startswith("# dimensions"):
            dims_line = next((x for x in lines[i + 1 :] if x), None)
            break
    if dims_line is None:  # tolerate a header without the comment line: first non-comment line
        dims_line = next((x for x in lines if x and not x.startswith("#")), None)
    if dims_line is None:
        raise _fail(hdr, "BART header has no '# Dimensions' line")
    try:
        dims = [int(tok) for tok in dims_line.split()]
    except ValueError as exc:
        raise _fail(hdr, f"BART header dimensions are not integers: {dims_line[:80]!r}") from exc
    if not dims or any(d < 1 for d in dims):
        raise _fail(hdr, f"BART header dimensions must be positive integers, got {dims}")
    return dims


def _read_cfl(path: Path, slice: int | None) -> KSpace:
    cfl, hdr = _cfl_pair(path)
    for f in (hdr, cfl):
        if not f.is_file():
            raise _fail(f, "missing: a BART array needs both name.cfl and name.hdr")
    dims = _read_hdr(hdr)
    dims = dims + [1] * max(0, 4 - len(dims))
    extra = [(i, d) for i, d in enumerate(dims[4:], start=4) if d != 1]
    if extra:
        raise _fail(
            hdr,
            f"BART dims {dims[: max(i for i, _ in extra) + 1]}: only [x, y, z, coils] are supported, dimension(s) "
            f"{', '.join(str(i) for i, _ in extra)} must be 1 (split maps/echoes/frames first, e.g. bart slice)",
        )
    nx, ny, nz, nc = dims[:4]
    n = nx * ny * nz * nc
    size = cfl.stat().st_size
    if size != n * 8:
        raise _fail(
            cfl,
            f"holds {size} bytes but {hdr.name} dims {dims[:4]} need {n * 8} (complex64); truncated or mismatched",
        )
    if nz > 1 and slice is None:
        raise _fail(cfl, f"has {nz} slices/partitions (BART z dim); pass slice= (0..{nz - 1})")
    z = 0 if slice is None else slice
    if not 0 <= z < nz:
        raise _fail(cfl, f"slice {slice} out of range: the file has {nz} slice(s) (BART z dim)")
    raw = np.fromfile(cfl, dtype="<c8", count=n)
    arr = raw.reshape((nx, ny, nz, nc), order="F")[:, :, z, :]  # (x, y, coils)
    data = _to_complex64(cfl, np.transpose(arr, (2, 0, 1)), "array")
    return KSpace(data=data, source="cfl", info={"file": str(cfl), "bart_dims": dims, "slice": z, "n_slices": nz})


# ---------------------------------------------------------------------------------------------- HDF5


def _import_h5py(path: Path):
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a dependency
        raise _fail(path, "reading HDF5 k-space needs the h5py package (pip install h5py)") from exc
    return h5py


def _attrs(obj) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.attrs.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, (int, float, str, bool)):
            out[key] = value
    return out


def _mask_to_2d(path: PathLike, mask: np.ndarray, hw: tuple[int, int] | None, what: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype.kind not in "biuf":
        raise _fail(path, f"{what} has dtype {mask.dtype}; expected bool or 0/1 numbers")
    if mask.dtype.kind != "b":
        if not np.all(np.isin(mask, (0, 1))):
            raise _fail(path, f"{what} holds values other than 0 and 1")
        mask = mask != 0
    if mask.ndim not in (1, 2):
        raise _fail(path, f"{what} has shape {mask.shape}; expected (W,) or (H, W)")
    if hw is None:
        return mask
    h, w = hw
    if mask.shape not in ((w,), (h, w)):
        raise _fail(path, f"{what} has shape {mask.shape}; expected ({w},) or ({h}, {w}) to match the k-space")
    return np.ascontiguousarray(np.broadcast_to(mask, (h, w)))


def _read_h5(path: Path, slice: int | None, dataset: str | None) -> KSpace:
    h5py = _import_h5py(path)
    name = dataset or "kspace"
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise _fail(path, f"not a readable HDF5 file ({_first_line(exc)})") from exc
    with f:
        if name not in f or not isinstance(f[name], h5py.Dataset):
            keys = sorted(f.keys())
            if "dataset" in f and "data" in f["dataset"]:
                raise _fail(
                    path,
                    "looks like ISMRMRD raw data, which is not supported; convert it to a fastMRI-style "
                    "'kspace' dataset (e.g. with the ismrmrd tools) or to .npy/.cfl",
                )
            raise _fail(path, f"has no '{name}' dataset (found: {', '.join(keys) or 'nothing'})")
        ds = f[name]
        shape = tuple(ds.shape)
        if len(shape) == 4:
            layout, n_slices = "multicoil", shape[0]
        elif len(shape) == 3:
            layout, n_slices = "singlecoil", shape[0]
        elif len(shape) == 2:
            layout, n_slices = "singlecoil", 1
        else:
            raise _fail(
                path,
                f"dataset '{name}' has shape {shape}; expected (slices, coils, H, W), (slices, H, W) or (H, W)",
            )
        if n_slices == 0:
            raise _fail(path, f"dataset '{name}' holds no slices (shape {shape})")
        s = n_slices // 2 if slice is None else slice
        if not 0 <= s < n_slices:
            raise _fail(path, f"slice {slice} out of range: dataset '{name}' has {n_slices} slice(s)")
        try:
            arr = ds[()] if len(shape) == 2 else ds[s]
        except (OSError, ValueError, TypeError) as exc:
            raise _fail(path, f"cannot read dataset '{name}' ({_first_line(exc)})") from exc
        data = _to_complex64(path, np.asarray(arr), f"dataset '{name}'")
        if data.ndim == 2:
            data = data[None]
        mask = None
        if "mask" in f and isinstance(f["mask"], h5py.Dataset) and name != "mask":
            mask = _mask_to_2d(path, f["mask"][()], data.shape[1:], "dataset 'mask'")
        info = {
            "file": str(path),
            "dataset": name,
            "layout": layout,
            "slice": s,
            "n_slices": n_slices,
            "attrs": _attrs(f),
        }
    return KSpace(data=data, source="hdf5", info=info, mask=mask)


# ------------------------------------------------------------------------------------------ public


def _sniff(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(8)
    except OSError as exc:
        raise _fail(path, f"cannot read ({_first_line(exc)})") from exc


def read_kspace(path: PathLike, slice: int | None = None, dataset: str | None = None) -> KSpace:
    """Read measured k-space from ``.npy``, BART ``.cfl``/``.hdr``, fastMRI-style HDF5 or Siemens TWIX ``.dat``
    -> :class:`KSpace`.

    ``slice`` picks one slice of a multi-slice file (HDF5 default: the middle one; BART: required when
    z > 1); ``dataset`` names the HDF5 dataset (default ``kspace``). Raises :class:`KSpaceReadError`.
    """
    p = Path(path).expanduser()
    if slice is not None and (isinstance(slice, bool) or not isinstance(slice, (int, np.integer))):
        raise _fail(p, f"slice must be an integer, got {slice!r}")
    suffix = p.suffix.lower()
    if suffix in (".cfl", ".hdr") or (suffix == "" and not p.exists() and any(f.exists() for f in _cfl_pair(p))):
        if dataset is not None:
            raise _fail(p, "dataset= applies to HDF5 files only")
        return _read_cfl(p, slice)
    if p.is_dir():
        raise _fail(p, "is a folder; expected a k-space file (.npy, .cfl/.hdr, .h5, .dat)")
    if not p.exists():
        raise _fail(p, "no such file")
    magic = _sniff(p)
    if suffix == ".npy" or (suffix not in _H5_SUFFIXES and magic.startswith(_NPY_MAGIC)):
        if dataset is not None:
            raise _fail(p, "dataset= applies to HDF5 files only")
        return _read_npy(p, slice)
    if suffix in _H5_SUFFIXES or magic == _HDF5_MAGIC:
        return _read_h5(p, slice, dataset)
    if suffix == ".dat":
        if dataset is not None:
            raise _fail(p, "dataset= applies to HDF5 files only")
        from wavepatch.io.twix import TwixReadError, read_twix  # lazy: twixtools loads only for .dat

        try:
            data, info = read_twix(p, slice)
        except TwixReadError as exc:
            raise KSpaceReadError(str(exc)) from exc
        return KSpace(data=data, source="twix", info=info)
    raise _fail(p, "unknown k-space format; expected .npy, BART .cfl/.hdr, HDF5 (.h5, fastMRI layout) or "
                "Siemens TWIX .dat")


def sampling_mask(kspace: KSpace | np.ndarray) -> np.ndarray:
    """Sampled k-space locations, bool ``(H, W)``: where any coil is non-zero.

    Measured undersampled data store unsampled entries as exact zeros, so the zero pattern is the mask. For
    fully sampled data this is all True (a coincidental exact zero in every coil is vanishingly unlikely).
    """
    data = kspace.data if isinstance(kspace, KSpace) else np.asarray(kspace)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise ValueError(f"k-space must be (C, H, W) or (H, W), got shape {data.shape}")
    return np.any(data != 0, axis=0)


def read_mask(path: PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a sampling mask ``.npy`` (bool or 0/1 numbers, ``(W,)`` or ``(H, W)``) -> bool array.

    Without ``shape`` the mask keeps its own shape; with ``shape=(H, W)`` it is checked against it and
    broadcast to bool ``(H, W)``. Raises :class:`KSpaceReadError`.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise _fail(p, "no such file" if not p.exists() else "is not a file")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = "holds pickled Python objects" if "pickle" in str(exc).lower() else _first_line(exc)
        raise _fail(p, f"not a readable .npy mask ({reason}); expected bool or 0/1 (W,) or (H, W)") from exc
    if not isinstance(arr, np.ndarray):
        raise _fail(p, "is an .npz archive; expected a .npy mask, bool or 0/1 (W,) or (H, W)")
    if arr.ndim not in (1, 2):
        raise _fail(p, f"mask has shape {arr.shape}; expected (W,) or (H, W)")
    return _mask_to_2d(p, arr, None if shape is None else (int(shape[0]), int(shape[1])), "mask")


def save_kspace_npy(path: PathLike, data, protect=()) -> Path:
    """Write complex k-space ``(C, H, W)`` or ``(H, W)`` (numpy or torch) to ``path`` as complex64 ``.npy``,
    atomically; ``protect`` lists input paths that must not be overwritten. Returns the path."""
    if hasattr(data, "detach"):  # torch tensor, without importing torch here
        data = data.detach().cpu().numpy()
    arr = np.asarray(data)
    if not np.iscomplexobj(arr):
        raise ValueError(f"{path}: k-space must be complex, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"{path}: k-space must be (C, H, W) or (H, W), got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.complex64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: k-space holds NaN/Inf values, refusing to write")
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    with atomic_path(path, protect) as tmp, open(tmp, "wb") as fh:
        fh.write(buf.getvalue())
    return Path(path)
