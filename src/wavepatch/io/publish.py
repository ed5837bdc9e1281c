"""Publishing a run's output folder as a whole: staged, locked, and never mixed with another run's files.

``staged_output(out)`` yields a hidden temporary folder next to ``out``; every file of the run is written there.
Only when the body finishes does the folder become ``out`` (one rename; a previous run's folder is moved aside
first and deleted after), so ``out`` always holds the files of exactly one complete run:

- a failure (bad option found late, NaN result, disk full, Ctrl-C) leaves ``out`` as it was;
- files of an earlier run (``std.npy``, a DICOM series) never survive next to a new run's results;
- two runs into one ``out`` at the same time: the second is refused (an ``flock`` on a hidden lock file);
- an existing ``out`` is replaced only if it is empty or a previous wavepatch output (it holds the manifest
  ``.wavepatch-output.json``), and never when an input lies inside it: unrelated files are never deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from wavepatch.io.atomic import PathLike, _temp_sibling, check_not_input

MANIFEST = ".wavepatch-output.json"


class OutputBusyError(OSError):
    """Another wavepatch run holds the lock of this output folder."""


@contextlib.contextmanager
def output_lock(out: PathLike) -> Iterator[None]:
    """Hold an exclusive lock for writing ``out`` (a folder); refuse at once if another run holds it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.wavepatch-lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusyError(f"another wavepatch run is writing {out}; wait for it or choose another --out") \
                from None
        yield
    finally:
        os.close(fd)  # closing releases the lock; the empty lock file stays (unlinking it would race)


def check_replaceable(out: PathLike, protect: Iterable[PathLike | None] = ()) -> None:
    """ValueError unless ``out`` is absent, an empty folder or an earlier wavepatch output without inputs inside."""
    out = Path(out)
    protect = [p for p in protect if p is not None]
    check_not_input(out, protect)
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    resolved = out.resolve()
    for p in protect:
        if resolved in Path(p).expanduser().resolve().parents:
            raise ValueError(f"--out {out} holds the input {p}; choose another folder")
    entries = list(out.iterdir())
    if entries and not (out / MANIFEST).is_file():
        raise ValueError(f"--out {out} holds files not written by wavepatch (e.g. {entries[0].name!r}); "
                         "choose a new or empty folder")


@contextlib.contextmanager
def staged_output(out: PathLike, protect: Iterable[PathLike | None] = (), command: str = "") -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``out`` as a whole (see the module docstring).

    ``protect``: input paths that must not be overwritten or deleted. The folder gets a manifest listing its
    files, the command and the time; on any error the temporary folder is removed and ``out`` is untouched."""
    out = Path(out)
    protect = list(protect)
    check_replaceable(out, protect)
    with output_lock(out):
        check_replaceable(out, protect)  # again under the lock: another run may have published meanwhile
        tmp = _temp_sibling(out, "staging")
        tmp.mkdir()
        try:
            yield tmp
            files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
            manifest = {"command": command, "files": files, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            _publish(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _publish(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = _temp_sibling(out, "old")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
