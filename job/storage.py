"""The storage seam: every run artifact is written through a `Store`, a local folder or gs://.

Training always writes into a local staging folder (Keras and TensorFlow want real paths); the store is
where those files are published, and it decides where staging is. For a local output the staging folder
*is* the run folder, so publishing copies nothing; for gs:// it is a copy whose files go up through `job.gcs`
(google-cloud-storage, never TensorFlow's gs:// filesystem).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from job.errors import OutputError
from job.faults import write_atomically
from job.uri import check_output_location, is_gcs, parse_gcs_url


class Store(Protocol):
    """A place that holds files under string keys ("metrics.jsonl", "model/saved_model.pb").

    Files are written into `staging(copy)` first: a local store's own folder, else the local `copy`, whose
    files `is_copy` says still have to be published. `upload_tree(prune=True)` also deletes stored files below
    the prefix that the folder no longer has; `list_keys(depth=N)` stops N levels below the prefix.
    """

    url: str

    def child(self, name: str) -> Store: ...
    def staging(self, copy: Path) -> Path: ...
    def is_copy(self, folder: Path) -> bool: ...
    def is_listable(self) -> bool: ...  # A local folder must exist; a gs:// prefix always can be listed.
    def check_writable(self) -> None: ...
    def read_bytes(self, key: str) -> bytes | None: ...
    def write_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> None: ...
    def upload_file(self, key: str, source: Path) -> None: ...
    def upload_tree(self, prefix: str, source_dir: Path, *, prune: bool = False) -> None: ...
    def download_tree(self, prefix: str, target_dir: Path) -> int: ...
    def list_keys(self, prefix: str = "", *, depth: int | None = None) -> list[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...


def open_store(location: str) -> Store:
    """A store for a local folder or a gs:// URL (google-cloud-storage is imported only then)."""
    check_output_location(location)
    if is_gcs(location):
        from job.gcs import GcsStore

        return GcsStore(*parse_gcs_url(location))
    return LocalStore(Path(location))


def check_out(store: Store, folder: Path, trees: Iterable[str] = (), files: Iterable[str] = ()) -> None:
    """Make `folder` a fresh local copy of these stored trees and files; the store's own folder already is one."""
    copy = store.is_copy(folder)
    if copy and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not copy:
        return
    for name in trees:
        store.download_tree(name, folder / name)
    for name in files:
        data = store.read_bytes(name)
        if data is not None:
            (folder / name).write_bytes(data)


def discard_copy(store: Store, folder: Path) -> None:
    """Delete a local copy once it is published; never the store's own folder."""
    if store.is_copy(folder) and folder.exists():
        shutil.rmtree(folder, ignore_errors=True)


class LocalStore:
    """A folder on the local disk (or a mounted volume): the staging folder of its runs, so nothing is copied."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()
        self.url = str(self.root)

    def child(self, name: str) -> LocalStore:
        return LocalStore(self.root / name)

    def staging(self, copy: Path) -> Path:
        return self.root

    def is_copy(self, folder: Path) -> bool:
        return folder.absolute() != self.root

    def is_listable(self) -> bool:
        return self.root.is_dir()

    def check_writable(self) -> None:
        existing = self.root
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(
                f"output folder {self.root} is not writable ({existing} is not a writable folder): "
                "choose another --output or fix its permissions"
            )

    def read_bytes(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def write_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        try:
            write_atomically(self.root / key, data, create_only=create_only)  # Never a half-written file.
        except FileExistsError:
            if not create_only:
                raise
            raise OutputError(f"{self.root / key} already exists: another job published this run first") from None

    def upload_file(self, key: str, source: Path) -> None:
        target = self.root / key
        if target.absolute() == source.absolute():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)

    def upload_tree(self, prefix: str, source_dir: Path, *, prune: bool = False) -> None:
        target = self.root / prefix
        if target.absolute() == source_dir.absolute():
            return  # Staging is the destination: the files are already here.
        if prune:
            shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source_dir, target, dirs_exist_ok=True)

    def download_tree(self, prefix: str, target_dir: Path) -> int:
        source = self.root / prefix
        if not source.is_dir():
            return 0
        if source.absolute() != target_dir.absolute():
            shutil.copytree(source, target_dir, dirs_exist_ok=True)
        return sum(1 for path in source.rglob("*") if path.is_file())

    def list_keys(self, prefix: str = "", *, depth: int | None = None) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        # A bounded depth globs level by level, so listing runs never walks their checkpoints and models.
        levels = [["*"] * level for level in range(1, depth + 1)] if depth is not None else [["**", "*"]]
        found = (path for level in levels for path in base.glob("/".join(level)) if path.is_file())
        return sorted(str(path.relative_to(self.root)) for path in found)

    def delete_prefix(self, prefix: str) -> None:
        target = self.root / prefix
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
