"""Writing a run or export folder so that an interruption never leaves one that looks finished.

A job writes into a staging folder beside its target, ``.NAME.partial``, marked by a file that says what was being
written and how to go on; loaders refuse a folder so marked (:func:`check_complete`). When the folder is complete the
mark is removed and the folder renamed into place; an earlier folder (``--overwrite``) is renamed aside
(``.NAME.old``) just before and deleted just after, so a kill at any moment leaves the earlier folder or the new one
whole. :func:`recover`, run by the next job that writes the same target, finishes or undoes a swap that a kill cut
short. A staging folder without the mark counts as complete only when it holds files: the mark is written just after
the folder is made, and a staging folder is deleted with its mark last.

A lock beside the target, ``.NAME.lock``, keeps a second writer out: it is held with ``flock``, which the kernel
releases when its holder dies (so a killed job's lock is taken over), and names its holder's pid for the message.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fineprune.errors import UsageError

PARTIAL_MARKER = ".fineprune-partial"


def staging_path(target: Path) -> Path:
    """Where a job writes ``target`` until it is complete: beside it, on the same file system, so a rename moves it."""
    return target.parent / f".{target.name}.partial"


def _aside_path(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def check_complete(folder: str | Path) -> None:
    """Refuse a folder whose job was interrupted, or a missing one whose staging folder is there: in one line that
    says how to go on."""
    folder = Path(folder)
    staging = staging_path(folder)
    marked, where = (folder, "") if folder.exists() else (staging, f" (its files are in {staging})")
    marker = marked / PARTIAL_MARKER
    if marker.is_file():
        raise UsageError(f"{folder}: unfinished, its job was interrupted{where}: {marker.read_text().strip()}")


def is_nonempty(target: Path) -> bool:
    return target.is_file() or (target.is_dir() and any(target.iterdir()))


@contextmanager
def locked(target: Path) -> Iterator[None]:
    """Hold the lock of ``target`` for the duration; refuse at once if another live process holds it."""
    import fcntl  # POSIX: imported here so that fineprune's other parts still import where there is no flock

    if target.name in ("", ".", ".."):
        raise UsageError(f"{target}: name the folder itself, not . or .. (it is written beside, in its parent)")
    if target.is_mount():
        raise UsageError(f"{target} is a mount point, which cannot be renamed into place: write into a folder in it")
    target.parent.mkdir(parents=True, exist_ok=True)
    path = _lock_path(target)
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise UsageError(
                f"{target} is being written by another process (pid {holder}, lock {path}): wait for it to finish"
            ) from None
        try:  # the holder we waited on may have removed the file before we locked it: lock the file now there
            if os.stat(path).st_ino == os.fstat(handle).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(handle)
    os.ftruncate(handle, 0)
    os.write(handle, f"{os.getpid()}\n".encode())
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked: a waiting process then finds the file gone and retries
        os.close(handle)


def recover(target: Path) -> None:
    """Put ``target`` back in order after a kill during :func:`publish`: a complete staging folder (unmarked, not
    empty) is moved in, an earlier folder left aside is deleted once a newer one is in place, or renamed back if none
    is. Call it holding the lock. A staging folder still marked unfinished is left to its job (resumed or started
    afresh); an empty one (killed between making it and marking it) is removed."""
    staging, aside = staging_path(target), _aside_path(target)
    if staging.is_dir() and not (staging / PARTIAL_MARKER).exists():
        if any(staging.iterdir()):
            _swap(staging, target)
        else:
            staging.rmdir()
    if _exists(aside):
        if _exists(target):
            _remove(aside)
        else:
            aside.rename(target)


def mark(folder: Path, note: str) -> None:
    """Mark ``folder`` unfinished; ``note`` says how to go on (:func:`check_complete` prints it)."""
    (folder / PARTIAL_MARKER).write_text(note.strip() + "\n")


def start(target: Path, note: str) -> Path:
    """A fresh staging folder for ``target``, marked unfinished; whatever an earlier interrupted job left there is
    removed."""
    staging = staging_path(target)
    if staging.exists():
        discard(staging)
    staging.mkdir(parents=True)
    mark(staging, note)
    return staging


def discard(staging: Path) -> None:
    """Delete a staging folder, its mark last: killed half-way, it still reads as unfinished, never as complete."""
    for path in staging.iterdir():
        if path.name != PARTIAL_MARKER:
            _remove(path)
    shutil.rmtree(staging)


def publish(staging: Path, target: Path) -> None:
    """Move the complete ``staging`` folder into place at ``target``, replacing what was there."""
    (staging / PARTIAL_MARKER).unlink()  # the commit: from here on the staging folder counts as complete
    _swap(staging, target)


def _swap(staging: Path, target: Path) -> None:
    aside = _aside_path(target)
    if _exists(target):
        if _exists(aside):  # left by a kill after an earlier swap had put its new folder in place
            _remove(aside)
        target.rename(aside)
    staging.rename(target)
    if _exists(aside):
        _remove(aside)


def _exists(path: Path) -> bool:
    """Whether anything is at ``path``, a dangling link included."""
    return path.is_symlink() or path.exists()


def _remove(path: Path) -> None:
    """Delete a folder, or a file or link (a link's own target is left alone)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@contextmanager
def writing(target: str | Path, overwrite: bool = False, note: str = "run its command again") -> Iterator[Path]:
    """Write the folder ``target``: yields the staging folder to write into, which replaces ``target`` only when the
    block ends without an error (and is deleted when it raises); ``note`` says how to go on if it is killed.
    Refuses a non-empty ``target`` unless ``overwrite``, and a target another process is writing."""
    target = Path(target)
    with locked(target):
        recover(target)
        if is_nonempty(target) and not overwrite:
            raise UsageError(f"{target} is not empty: pass --overwrite to replace it")
        staging = start(target, note)
        try:
            yield staging
        except BaseException:
            discard(staging)
            raise
        publish(staging, target)
