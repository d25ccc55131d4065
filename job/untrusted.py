"""Names and sizes that come from data or a bucket, checked before they become paths or memory.

Whoever can write the data a job reads (a shared bucket, a downloaded tarball) or an output prefix it
resumes from chooses object names, member names and sizes. A name becomes a path only through
`contained_path`, and every download or read is bounded first, so such a writer can neither place a
file outside the folder meant for it nor exhaust memory or disk with a decompression bomb.
See docs/security.md for the threat model.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from job.errors import JobError

if TYPE_CHECKING:
    import numpy as np

MiB = 1 << 20
GiB = 1 << 30
# The official batches are 31 MB each; a pickle larger than this is not CIFAR-10 (or is built to exhaust memory).
MAX_PICKLE_BYTES = 256 * MiB
# Any one data file, tar member, gs:// object or .npz array, and the sum of all of them: the whole CIFAR-10
# decoded is 184 MB, its tarball 163 MB. 2 GiB also fits the same images at 64×64.
MAX_DATA_BYTES = 2 * GiB
# Entries of a tarball and objects of a gs:// data folder (the official tarball has 9).
MAX_DATA_ENTRIES = 1000


def size_text(size: int) -> str:
    return f"{size // MiB:,} MiB" if size % MiB == 0 else f"{size:,} bytes"


def check_size(size: int, limit: int, what: str, error: type[JobError]) -> None:
    """Refuse something that declares more bytes than limit, before any of it is read."""
    if size > limit:
        raise error(
            f"{what} is {size_text(size)}, more than the {size_text(limit)} any CIFAR-10 file needs: "
            "it is not CIFAR-10 data (or it is built to exhaust memory); use the official cifar-10-python.tar.gz"
        )


def npy_header(stream: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """An .npy array's (shape, fortran_order, dtype), read from its header alone, so a size can be bounded before
    the array is read; ValueError for a malformed header or a version other than 1.0 and 2.0."""
    import numpy as np  # Here, so that importing this module stays cheap (`--help` never loads numpy).

    version = np.lib.format.read_magic(stream)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"a version {version} .npy array")
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(stream)


def check_name(name: str, where: str, error: type[JobError]) -> None:
    """A relative name of plain segments: no '..', '.', empty segment, leading '/' or NUL."""
    if not name or "\0" in name or any(segment in ("", ".", "..") for segment in name.split("/")):
        raise error(
            f"{where} holds an object named {name!r}, which is not a plain relative path (it has an empty, '.' or "
            "'..' segment, or starts with '/'): refusing to download anything from it; remove or rename that object"
        )


def contained_path(root: Path, name: str, where: str, error: type[JobError]) -> Path:
    """root/name, refused unless name is plain and the result (symlinks resolved) stays inside root."""
    check_name(name, where, error)
    target = root / name
    resolved_root = root.resolve()
    if not target.resolve().is_relative_to(resolved_root):
        raise error(
            f"{where} holds an object named {name!r}, which would be written to {target.resolve()}, outside "
            f"{resolved_root}: refusing to download anything from it"
        )
    return target


def check_names(names: Iterable[str], where: str, error: type[JobError]) -> None:
    """Every name is plain, and no name is also a folder of another (a file and a folder cannot share a path)."""
    names = list(names)
    for name in names:
        check_name(name, where, error)
    folders = {name.rsplit("/", depth)[0] for name in names for depth in range(1, name.count("/") + 1)}
    clash = next((name for name in names if name in folders), None)
    if clash is not None:
        raise error(
            f"{where} holds both an object {clash!r} and objects below {clash + '/'!r}: they cannot both "
            "be files on disk; remove one"
        )
