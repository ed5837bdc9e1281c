"""Atomic file and folder writes, and the guard that keeps outputs off their inputs.

Every writer in ``wavepatch.io`` goes through here so that an interrupted run never leaves a half-written
output where a complete one is expected: data go to a hidden temporary sibling (same folder, so the final
``os.replace`` is a rename on one file system, which POSIX makes atomic), and only a finished file is moved
into place.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

PathLike = str | os.PathLike


def check_not_input(out_path: PathLike, input_paths: Iterable[PathLike | None]) -> None:
    """Raise ``ValueError`` if ``out_path`` would overwrite, or write inside, one of ``input_paths``.

    An output is refused when it is the same file as an input (also through links or different spellings of
    the path) or when it lies inside an input folder (a DICOM series folder, say: a derived file there would
    be read back as part of the series). ``None`` entries are ignored so callers can pass optional inputs.
    """
    out = Path(out_path).expanduser().resolve()
    for raw in input_paths:
        if raw is None:
            continue
        inp = Path(raw).expanduser().resolve()
        same = out == inp or (out.exists() and inp.exists() and os.path.samefile(out, inp))
        if same:
            raise ValueError(f"refusing to write {out_path}: it is the input {raw}")
        if inp.is_dir() and inp in out.parents:
            raise ValueError(f"refusing to write {out_path}: it is inside the input folder {raw}")


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def _temp_sibling(path: Path, tag: str) -> Path:
    # The real name stays at the end so writers that pick a format from the extension (nibabel, Pillow)
    # still see it; the leading dot hides the file from folder listings and from read_image's series scan.
    return path.parent / f".{tag}-{secrets.token_hex(6)}-{path.name}"


@contextlib.contextmanager
def atomic_path(path: PathLike, protect: Iterable[PathLike | None] = ()) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``, on error delete it.

    The temporary file already exists (empty, created with the process umask) when the body runs; the body
    overwrites it by name. ``protect`` lists input paths that must not be overwritten (see
    ``check_not_input``). The parent folder is created if needed.
    """
    target = Path(path)
    check_not_input(target, protect)
    if target.is_dir():
        raise ValueError(f"refusing to write {path}: it is an existing folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(target, "tmp")
    # O_EXCL: never clobber a file someone else created under the same random name; mode 0o666 lets the
    # umask decide the final permissions, as for a file opened normally.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        # a body that recreates the file by name (safetensors' save_file does, with mode 0600) must not leave it
        # unreadable to others: give it the mode a normally opened file gets
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError":
            # disk full, file size limit, permissions: name the file the user asked for, not the temporary one
            reason = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
            raise OSError(getattr(exc, "errno", None), f"cannot write: {reason}", str(target)) from exc
        raise


def atomic_write_bytes(path: PathLike, data: bytes, protect: Iterable[PathLike | None] = ()) -> Path:
    """Write ``data`` to ``path`` atomically; return the path written."""
    with atomic_path(path, protect) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(
    path: PathLike,
    protect: Iterable[PathLike | None] = (),
    overwrite: bool = False,
    replaceable_suffixes: tuple[str, ...] = (".dcm",),
) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it becomes ``path`` in one rename.

    Used for multi-file outputs (a DICOM series): readers never see a folder holding half a series.
    An existing non-empty ``path`` is an error unless ``overwrite`` is true, and even then it is only
    replaced when it holds nothing but plain files ending in ``replaceable_suffixes`` (so a mistyped output
    folder cannot wipe unrelated work). The old folder is deleted only after the new one is in place.
    """
    target = Path(path)
    check_not_input(target, protect)
    if target.exists():
        if not target.is_dir():
            raise ValueError(f"refusing to write folder {path}: a file with that name exists")
        entries = list(target.iterdir())
        if entries and not overwrite:
            raise ValueError(f"refusing to write into {path}: folder is not empty (pass overwrite=True)")
        foreign = [e.name for e in entries if not (e.is_file() and e.name.endswith(replaceable_suffixes))]
        if foreign:
            raise ValueError(
                f"refusing to replace {path}: it holds entries other than {'/'.join(replaceable_suffixes)} "
                f"files (e.g. {foreign[0]!r})"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(target, "tmpdir")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = _temp_sibling(target, "old")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
