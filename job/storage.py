"""The storage seam: every run artifact is written through a `Store`, a local folder or gs://.

Training always writes into a local staging folder (Keras and TensorFlow want real paths); the
store is where those files are published. For a local output the staging folder *is* the run
folder, so publishing is a no-op; for gs:// the files go up through google-cloud-storage
(`job.gcs`), never through TensorFlow's own gs:// filesystem, which cannot be pointed at a test
server.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Protocol

from job.errors import OutputError, UsageError
from job.faults import write_atomically

GCS_URL = re.compile(r"^gs://(?P<bucket>[a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(?:/(?P<prefix>.*))?$")


class Store(Protocol):
    """A place that holds files under string keys ("metrics.jsonl", "model/saved_model.pb")."""

    url: str

    def child(self, name: str) -> Store: ...
    def local_root(self) -> Path | None: ...
    def check_writable(self) -> None: ...
    def read_bytes(self, key: str) -> bytes | None: ...
    def write_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> None: ...
    def upload_file(self, key: str, source: Path) -> None: ...
    def upload_tree(self, prefix: str, source_dir: Path) -> None: ...
    def download_tree(self, prefix: str, target_dir: Path) -> int: ...
    def list_keys(self, prefix: str = "") -> list[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...


def is_gcs(location: str) -> bool:
    return location.startswith("gs:")


def parse_gcs_url(url: str) -> tuple[str, str]:
    """Split gs://bucket/some/prefix into (bucket, "some/prefix"); reject malformed URLs.

    Every form people and Vertex AI write is accepted: gs://BUCKET, gs://BUCKET/, gs://BUCKET/PREFIX and
    gs://BUCKET/PREFIX/ (Vertex sets AIP_MODEL_DIR to <baseOutputDirectory>/model/). Empty segments
    (gs://BUCKET//PREFIX) are dropped: an object name never gets a doubled slash.
    """
    match = GCS_URL.match(url.strip())
    if not match:
        raise UsageError(
            f"malformed Cloud Storage URL {url!r}: use gs://BUCKET or gs://BUCKET/PREFIX "
            "(bucket names are 3-222 lowercase letters, digits, '.', '-' or '_')"
        )
    return match["bucket"], "/".join(segment for segment in (match["prefix"] or "").split("/") if segment)


def gcs_url(bucket: str, prefix: str) -> str:
    """The one spelling of a location: gs://bucket or gs://bucket/prefix, no trailing slash."""
    return f"gs://{bucket}/{prefix}".rstrip("/")


def check_output_location(location: str) -> None:
    """Reject what can never be an output: a malformed gs:// URL or another scheme (exit 2)."""
    if is_gcs(location):
        parse_gcs_url(location)
    elif "://" in location:
        raise UsageError(f"unsupported output {location!r}: use a local folder or gs://BUCKET/PREFIX")


def open_store(location: str) -> Store:
    """A store for a local folder or a gs:// URL (google-cloud-storage is imported only then)."""
    check_output_location(location)
    if is_gcs(location):
        from job.gcs import GcsStore

        bucket, prefix = parse_gcs_url(location)
        return GcsStore(bucket, prefix)
    return LocalStore(Path(location))


class LocalStore:
    """A folder on the local disk (or a mounted volume)."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()
        self.url = str(self.root)

    def child(self, name: str) -> LocalStore:
        return LocalStore(self.root / name)

    def local_root(self) -> Path | None:
        return self.root

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
        path = self.root / key
        if not create_only:
            write_atomically(path, data)  # Readers never see a half-written file.
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.partial")
        temporary.write_bytes(data)
        try:
            os.link(temporary, path)  # Atomic create-if-absent, like if_generation_match=0.
        except FileExistsError:
            raise OutputError(f"{path} already exists: another job published this run first") from None
        finally:
            temporary.unlink()

    def upload_file(self, key: str, source: Path) -> None:
        target = self.root / key
        if target.absolute() == source.absolute():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)

    def upload_tree(self, prefix: str, source_dir: Path) -> None:
        target = self.root / prefix
        if target.absolute() != source_dir.absolute():
            shutil.copytree(source_dir, target, dirs_exist_ok=True)

    def download_tree(self, prefix: str, target_dir: Path) -> int:
        source = self.root / prefix
        if not source.is_dir():
            return 0
        if source.absolute() != target_dir.absolute():
            shutil.copytree(source, target_dir, dirs_exist_ok=True)
        return sum(1 for path in source.rglob("*") if path.is_file())

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(str(path.relative_to(self.root)) for path in base.rglob("*") if path.is_file())

    def delete_prefix(self, prefix: str) -> None:
        target = self.root / prefix
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
