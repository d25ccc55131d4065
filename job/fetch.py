"""The gs:// data fetcher: `--data gs://...` downloaded once into a local cache (docs/security.md for its checks)."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import google_crc32c
from google.cloud import storage

from job.errors import DataError
from job.gcs import gcs_errors, make_client, request_options
from job.untrusted import MAX_DATA_BYTES, MAX_DATA_ENTRIES, check_names, check_size, contained_path
from job.uri import parse_gcs_url


def default_cache_dir() -> Path:
    """$JOB_CACHE_DIR, or ~/.cache/cifar10-job."""
    return Path(os.environ.get("JOB_CACHE_DIR") or Path.home() / ".cache" / "cifar10-job").expanduser()


def fetch_data(url: str, cache_dir: Path) -> Path:
    """Download a gs:// object or folder into cache_dir once, verified by checksum; return the local path.

    gs://b/data/cifar-10-python.tar.gz → CACHE/gcs/b/data/cifar-10-python.tar.gz;
    gs://b/data/cifar-10-batches-py → CACHE/gcs/b/data/cifar-10-batches-py/ (every object below it).
    A cached copy is reused while the object's generation is unchanged and its CRC32C still matches.
    Object names and sizes are the bucket writer's choice: all are checked before any byte is written.
    """
    bucket_name, name = parse_gcs_url(url)
    if not name:
        raise DataError(f"--data {url} names a whole bucket: point it at the tarball, .npz or folder inside it")
    client = make_client(DataError)
    request = request_options()
    root, records = cache_dir / "gcs" / bucket_name, cache_dir / "gcs-verified" / bucket_name
    where = f"data source {url}"
    with gcs_errors("reading data", url, bucket_name, DataError):
        blob = client.bucket(bucket_name).get_blob(name, **request)  # The object, else the folder of that name.
        listing = [blob] if blob is not None else client.list_blobs(bucket_name, prefix=f"{name}/", **request)
        blobs = [blob for blob in itertools.islice(listing, MAX_DATA_ENTRIES + 1) if not blob.name.endswith("/")]
        if not blobs:
            raise DataError(
                f"data source {url} does not exist: no object or folder by that name in bucket {bucket_name} "
                "(upload cifar-10-python.tar.gz, its cifar-10-batches-py folder, or an .npz there)"
            )
        if len(blobs) > MAX_DATA_ENTRIES:
            raise DataError(
                f"data folder {url} holds more than {MAX_DATA_ENTRIES} objects: it is not CIFAR-10; "
                "point --data at the tarball, the cifar-10-batches-py folder or an .npz"
            )
        # Every name and size is checked, and every place worked out, before the first download.
        check_names([blob.name for blob in blobs], where, DataError)
        for blob in blobs:
            check_size(blob.size or 0, MAX_DATA_BYTES, f"gs://{bucket_name}/{blob.name}", DataError)
        check_size(sum(blob.size or 0 for blob in blobs), MAX_DATA_BYTES, where, DataError)
        place = functools.partial(contained_path, where=where, error=DataError)
        places = [(blob, place(root, blob.name), place(records, f"{blob.name}.json")) for blob in blobs]
        for blob, target, record in places:
            fetch_blob(blob, target, record)
    return root / name


def fetch_blob(blob: storage.Blob, target: Path, record_path: Path) -> None:
    """Download one object to target via a temporary name, unless a verified copy is already there."""
    expected = {"generation": blob.generation, "size": blob.size, "crc32c": blob.crc32c, "md5": blob.md5_hash}
    record = None
    with contextlib.suppress(OSError, ValueError):  # A missing or unreadable record: downloaded again.
        record = json.loads(record_path.read_text())
    if target.is_file() and record == expected == digests(target, blob):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        # Pinning the generation means an object replaced mid-download fails instead of mixing versions.
        blob.download_to_filename(temporary, if_generation_match=blob.generation, **request_options())
        actual = digests(temporary, blob)
        if actual != expected:
            raise DataError(
                f"gs://{blob.bucket.name}/{blob.name} failed verification after download "
                f"(expected crc32c {blob.crc32c} md5 {blob.md5_hash} size {blob.size}, got crc32c {actual['crc32c']} "
                f"md5 {actual['md5']} size {actual['size']}): retry, or re-upload the object"
            )
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(expected))


def digests(path: Path, blob: storage.Blob) -> dict[str, Any]:
    """The local file's generation/size/CRC32C/MD5 in the blob's format (MD5 only if the blob has one)."""
    crc32c = google_crc32c.Checksum()
    md5 = hashlib.md5()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            crc32c.update(chunk)
            if blob.md5_hash:  # Composite objects have no MD5, only CRC32C.
                md5.update(chunk)
    return {
        "generation": blob.generation,
        "size": path.stat().st_size,
        "crc32c": base64.b64encode(crc32c.digest()).decode(),
        "md5": base64.b64encode(md5.digest()).decode() if blob.md5_hash else None,
    }
