"""A failed write to the run's files is exit 4 with one line naming the path and the fix, never a traceback.

The storage under a run can fill up (ENOSPC, EDQUOT), turn read-only (EROFS), refuse us (EACCES, EPERM) or
lose a folder (ENOENT). Python reports these as OSError; TensorFlow's file system (checkpoints, TensorBoard,
SavedModel export) as an OpError whose message carries the path and the C library's text. Either is an
output fault when the path lies in the run's folder or its staging folder; anything else is left alone
(an unexpected error keeps its traceback and exit 1). What was saved before the fault stays resumable.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from job.errors import OutputError

# errno → (what happened, what to do).
REASONS = {
    errno.ENOSPC: ("no space left on the device", "free space or give the job a larger volume"),
    errno.EDQUOT: ("the disk quota is exceeded", "free space or raise the quota"),
    errno.EROFS: ("the file system is read-only", "mount it writable or choose another --output"),
    errno.EACCES: ("permission denied", "fix the folder's permissions or choose another --output"),
    errno.EPERM: ("the operation is not permitted there", "choose another --output"),
    errno.ENOENT: ("a folder on the way does not exist or cannot be created", "choose another --output"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another --output"),
    errno.EIO: ("the device reported an I/O error", "check the disk or volume"),
}
# How TensorFlow's messages spell the same failures (it appends strerror() to the path).
MESSAGE_ERRNOS = {os.strerror(number): number for number in REASONS}


def fault_errno(error: BaseException, roots: list[str]) -> tuple[int, str] | None:
    """(errno, the path below one of roots it failed on) for a file-system failure, from Python or TensorFlow."""
    if isinstance(error, OSError) and error.errno in REASONS:
        paths = [str(name) for name in (error.filename, error.filename2) if name is not None]
        return next(((error.errno, path) for path in paths if any(root in path for root in roots)), None)
    if type(error).__module__.startswith("tensorflow") and hasattr(error, "message"):
        message = str(error.message)  # "{{function_node ...}} /path/to/file; No space left on device [Op:SaveV2]"
        number = next((number for text, number in MESSAGE_ERRNOS.items() if text in message), None)
        tokens = message.replace(";", " ").split()
        path = next((token for token in tokens if any(root in token for root in roots)), None)
        return (number, path.rstrip(":,")) if number is not None and path is not None else None
    return None


@contextlib.contextmanager
def output_faults(places: list[Path]) -> Iterator[None]:
    """Turn a failed write inside places into one line, OutputError (exit 4); let everything else through."""
    try:
        yield
    except Exception as error:
        found = fault_errno(error, [str(place.absolute()) for place in places])
        if found is None:
            raise
        problem, fix = REASONS[found[0]]
        raise OutputError(
            f"cannot write {found[1]}: {problem}: {fix}, then rerun the same command; "
            "what was saved before is kept and the run resumes from its last checkpoint"
        ) from None


def write_atomically(path: Path, data: bytes, *, create_only: bool = False) -> None:
    """Write data under a temporary name in the same folder, flush it to disk, then rename it into place.

    Whoever reads path (a resume after kill -9, `runs show`) sees the old content or the new, never half.
    With create_only the temporary file is hard-linked instead, an atomic create-if-absent (like
    if_generation_match=0 on gs://): FileExistsError if path exists.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with temporary.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if create_only:
            os.link(temporary, path)
        else:
            temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def append_whole(path: Path, data: bytes) -> None:
    """Append data (whole lines) with one write(2) on an O_APPEND descriptor: no buffer splits a record.

    A kill can still cut a write short, or a full disk take only part of it; readers drop a torn last line.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:  # A regular file takes the whole buffer unless the disk fills; then write raises.
            view = view[os.write(descriptor, view) :]
    finally:
        os.close(descriptor)
