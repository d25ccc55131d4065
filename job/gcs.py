"""Cloud Storage behind gs:// URLs: the `Store` that publishes run folders, and the data fetcher.

Everything goes through google-cloud-storage, never TensorFlow's gs:// filesystem (which cannot be
pointed at a test server). Authentication is Application Default Credentials; with
STORAGE_EMULATOR_HOST set, the client talks to that emulator (fake-gcs-server in the tests) anonymously:

    STORAGE_EMULATOR_HOST=http://127.0.0.1:4443 python -m job runs list gs://bucket/runs

Only `job.storage.open_store` and the data loader import this module, so plain local runs never
import google-cloud-storage.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Any

import google.auth
import google_crc32c
import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.auth import compute_engine
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.transport.requests import Request
from google.cloud import storage
from google.cloud.storage import transfer_manager
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from google.cloud.storage.retry import DEFAULT_RETRY, _should_retry

from job.errors import DataError, EnvironmentNotReady, JobError, OutputError, UsageError
from job.storage import parse_gcs_url
from job.untrusted import MAX_DATA_BYTES, MAX_DATA_ENTRIES, check_names, check_size, contained_path

# The library retries 429, 408, 5xx and connection errors with exponential backoff (1 s doubling to
# 60 s); this caps how long one request keeps trying before the job gives up with exit 4.
DEFAULT_RETRY_DEADLINE = 120.0
REQUEST_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds for each HTTP request.
# Eight threads: requests keeps ten pooled connections per host, so more threads would only queue.
MAX_WORKERS = 8
HINT_CREDENTIALS = (
    "set GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth application-default login`, "
    "or give the pod a Workload Identity service account"
)
HINT_METADATA = (
    "the pod's metadata server did not answer: on GKE the Workload Identity metadata server is not ready "
    "(the Job retries on a new pod); elsewhere set GOOGLE_APPLICATION_CREDENTIALS to a key file"
)
# GKE documents that its metadata server may take a few seconds to accept requests on a new pod and that
# retrying helps: in a pod, credentials are retried this long (JOB_CREDENTIALS_WAIT) before exiting 6.
DEFAULT_CREDENTIALS_WAIT = 30.0
HINT_ROLE = (
    "the job's identity needs roles/storage.objectUser on bucket {bucket} (storage.objects.create/get/list/delete)"
)


def retry_deadline() -> float:
    """Seconds to keep retrying transient errors: JOB_GCS_RETRY_DEADLINE, default 120."""
    return positive_seconds("JOB_GCS_RETRY_DEADLINE", DEFAULT_RETRY_DEADLINE)


def retry_policy(deadline: float) -> Retry:
    """DEFAULT_RETRY for one operation, with one budget shared by all its threads.

    Retrying stops `deadline` seconds after the operation's first transient error, so 100 parallel
    uploads to a dead endpoint fail after `deadline` seconds, not after 100 / MAX_WORKERS × deadline.
    """
    lock = threading.Lock()
    first_error: list[float] = []

    def should_retry(error: Exception) -> bool:
        if not _should_retry(error):  # The library's own test: 408, 429, 5xx, connection errors, timeouts.
            return False
        with lock:
            first_error[:] = first_error or [time.monotonic()]
            return time.monotonic() - first_error[0] < deadline

    return DEFAULT_RETRY.with_predicate(should_retry).with_timeout(deadline)


def positive_seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable `name`, else `default` (exit 2 if malformed)."""
    text = os.environ.get(name, "")
    try:
        seconds = float(text) if text else default
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UsageError(f"{name} must be a positive number of seconds, got {text!r}")
    return seconds


def make_client(error: type[JobError] = OutputError) -> storage.Client:
    """A client with Application Default Credentials, or anonymous when STORAGE_EMULATOR_HOST is set."""
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        project = os.environ.get("GOOGLE_CLOUD_PROJECT") or "local-emulator"
        return storage.Client(project=project, credentials=AnonymousCredentials())
    # No project needed (None means none, not "look one up"): the job only uses objects in existing buckets.
    return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"), credentials=google_credentials(error))


def in_pod() -> bool:
    """Running in a Kubernetes pod (the kubelet sets KUBERNETES_SERVICE_HOST in every container)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def google_credentials(error: type[JobError]) -> Credentials:
    """Application Default Credentials; in a pod, waiting for a metadata server that does not answer yet.

    Outside a pod, missing credentials are a configuration problem: `error` at once, naming the fixes. In a pod
    whose credentials come from the metadata server (no GOOGLE_APPLICATION_CREDENTIALS), a server that does not
    answer is retried for JOB_CREDENTIALS_WAIT seconds (1, 2, 4, 8 s apart), then EnvironmentNotReady (exit 6):
    the Job tries a new pod. A server that answers with a refusal (403, no binding) is `error`, as before.
    """
    wait = positive_seconds("JOB_CREDENTIALS_WAIT", DEFAULT_CREDENTIALS_WAIT) if in_pod() else 0.0
    give_up, delay = time.monotonic() + wait, 1.0
    while True:
        try:
            credentials, _ = google.auth.default()
            if isinstance(credentials, compute_engine.Credentials):
                credentials.refresh(Request())  # Proves the metadata server answers before any work starts.
            return credentials
        except auth_exceptions.GoogleAuthError as cause:
            if not metadata_unreachable(cause):
                raise error(f"no Google credentials ({describe(cause)}): {HINT_CREDENTIALS}") from None
            if time.monotonic() + delay > give_up:
                if in_pod():
                    silent = isinstance(cause, auth_exceptions.DefaultCredentialsError)
                    detail = "no answer from the metadata server" if silent else describe(cause)
                    raise EnvironmentNotReady(
                        f"no Google credentials after {wait:g} s ({detail}): {HINT_METADATA}"
                    ) from None
                raise error(f"no Google credentials ({describe(cause)}): {HINT_CREDENTIALS}") from None
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


def metadata_unreachable(cause: BaseException) -> bool:
    """Whether credentials failed because the metadata server did not answer (retryable), not because of a setting.

    ADC found nothing (no key file named, no gcloud login) after the metadata server's ping went unanswered;
    or the metadata server's token request failed to connect, timed out or kept answering 5xx.
    """
    if isinstance(cause, auth_exceptions.DefaultCredentialsError):
        return not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") and "were not found" in str(cause)
    seen: BaseException | None = cause
    while seen is not None:
        if isinstance(seen, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
            return True
        if isinstance(seen, auth_exceptions.TransportError) and "server unavailable" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def describe(cause: BaseException) -> str:
    """The cause as one short line: HTTP status and server message, or the socket error."""
    if isinstance(cause, api_exceptions.RetryError) and cause.cause is not None:
        return describe(cause.cause)
    if isinstance(cause, api_exceptions.GoogleAPICallError) and cause.code:
        detail = re.sub(r"^[A-Z]+ \S+: ", "", cause.message or "")  # Drop the echoed "GET http://...".
        try:
            phrase = HTTPStatus(cause.code).phrase
        except ValueError:
            phrase = ""
        text = " ".join(part for part in (f"HTTP {cause.code}", phrase) if part)
        if detail and detail.lower() != phrase.lower():
            text = f"{text}: {detail}"
    else:
        text = str(cause) or type(cause).__name__
        socket_error = re.search(r"\[Errno -?\d+\][^'\")]*", text)
        text = socket_error.group(0) if socket_error else text
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:199] + "…"


@contextlib.contextmanager
def gcs_errors(action: str, url: str, bucket: str, error: type[JobError] = OutputError) -> Iterator[None]:
    """Turn any Cloud Storage failure into one line naming the action, the object and the cause."""
    try:
        yield
    except api_exceptions.NotFound:
        # Reads handle a missing object themselves, so a 404 here is a missing bucket.
        raise error(f"bucket {bucket} does not exist ({action} {url}): create it or fix the gs:// URL") from None
    except (api_exceptions.Forbidden, api_exceptions.Unauthorized) as cause:
        raise error(
            f"permission denied {action} {url} ({describe(cause)}): {HINT_ROLE.format(bucket=bucket)}"
        ) from None
    except api_exceptions.RetryError as cause:
        raise error(f"gave up {action} {url} after retrying: {describe(cause)}") from None
    except auth_exceptions.GoogleAuthError as cause:
        if in_pod() and metadata_unreachable(cause):  # A token refresh during the run: the node's metadata server.
            raise EnvironmentNotReady(f"could not obtain Google credentials {action} {url}: {HINT_METADATA}") from None
        raise error(
            f"could not obtain Google credentials {action} {url} ({describe(cause)}): {HINT_CREDENTIALS}"
        ) from None
    except (
        api_exceptions.GoogleAPIError,
        InvalidResponse,
        DataCorruption,
        requests.RequestException,
        ConnectionError,
    ) as cause:
        verb = "gave up" if _should_retry(cause) else "failed"  # Transient, but out of retry budget.
        raise error(f"{verb} {action} {url}: {describe(cause)}") from None


class GcsStore:
    """gs://bucket/prefix as a `job.storage.Store`: keys are object names below the prefix."""

    def __init__(self, bucket: str, prefix: str = "", client: storage.Client | None = None) -> None:
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.url = f"gs://{bucket}/{self.prefix}".rstrip("/")
        self._client = client or make_client()
        self._bucket = self._client.bucket(bucket)
        self._deadline = retry_deadline()

    def child(self, name: str) -> GcsStore:
        return GcsStore(self.bucket_name, self._name(name), self._client)

    def local_root(self) -> Path | None:
        return None

    def check_writable(self) -> None:
        """Create and delete a probe object: proves the bucket exists and the job may write there."""
        probe = self._bucket.blob(self._name(f".write-probe-{secrets.token_hex(4)}"))
        with self._errors("checking write access to", ""):
            probe.upload_from_string(b"", if_generation_match=0, retry=self._policy(), timeout=REQUEST_TIMEOUT)
            probe.delete(retry=self._policy(), timeout=REQUEST_TIMEOUT)

    def read_bytes(self, key: str) -> bytes | None:
        blob = self._bucket.blob(self._name(key))
        with self._errors("reading", key):
            try:
                return bytes(blob.download_as_bytes(retry=self._policy(), timeout=REQUEST_TIMEOUT))
            except api_exceptions.NotFound:
                return None

    def write_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        """Replace the object; with create_only, refuse (exit 4) if it exists (if_generation_match=0)."""
        blob = self._bucket.blob(self._name(key))
        precondition = {"if_generation_match": 0} if create_only else {}
        with self._errors("writing", key):
            try:
                blob.upload_from_string(data, retry=self._policy(), timeout=REQUEST_TIMEOUT, **precondition)
            except api_exceptions.PreconditionFailed:
                if self._holds(blob, data):
                    return  # A retried create whose first attempt had landed: the object is ours.
                raise OutputError(
                    f"{self.url}/{key} already exists: another job published this run first "
                    "(create-only write refused; choose another --run-id)"
                ) from None

    def upload_file(self, key: str, source: Path) -> None:
        with self._errors("uploading", key):
            blob = self._bucket.blob(self._name(key))
            blob.upload_from_filename(str(source), retry=self._policy(), timeout=REQUEST_TIMEOUT)

    def upload_tree(self, prefix: str, source_dir: Path) -> None:
        """Upload every file below source_dir in parallel threads, largest first."""
        files = sorted(
            (path for path in source_dir.rglob("*") if path.is_file()), key=lambda path: -path.stat().st_size
        )
        if not files:
            return
        with self._errors(f"uploading {len(files)} files to", self._folder_key(prefix)):
            transfer_manager.upload_many_from_filenames(
                self._bucket,
                [path.relative_to(source_dir).as_posix() for path in files],
                source_directory=str(source_dir),
                blob_name_prefix=self._folder(prefix),
                upload_kwargs={"retry": self._policy(), "timeout": REQUEST_TIMEOUT},
                raise_exception=True,
                worker_type=transfer_manager.THREAD,
                max_workers=MAX_WORKERS,
            )

    def download_tree(self, prefix: str, target_dir: Path) -> int:
        """Download every object below prefix into target_dir in parallel; return how many."""
        folder = self._folder(prefix)
        with self._errors("downloading", self._folder_key(prefix)):
            names = [blob.name[len(folder) :] for blob in self._list(folder)]
            # The names are whoever could write the bucket's choice: none may lead outside target_dir.
            where = f"{self.url}/{self._folder_key(prefix)}"
            check_names(names, where, OutputError)
            for name in names:
                contained_path(target_dir, name, where, OutputError)
            transfer_manager.download_many_to_path(
                self._bucket,
                names,
                destination_directory=str(target_dir),
                blob_name_prefix=folder,
                download_kwargs={"retry": self._policy(), "timeout": REQUEST_TIMEOUT},
                create_directories=True,
                raise_exception=True,
                worker_type=transfer_manager.THREAD,
                max_workers=MAX_WORKERS,
            )
        return len(names)

    def list_keys(self, prefix: str = "") -> list[str]:
        root = self._folder("")
        with self._errors("listing", self._folder_key(prefix)):
            return sorted(blob.name[len(root) :] for blob in self._list(self._folder(prefix)))

    def delete_prefix(self, prefix: str) -> None:
        """Delete the object named prefix and everything below it, blob by blob (no batch requests)."""
        with self._errors("deleting", self._folder_key(prefix)):
            blobs = list(self._list(self._folder(prefix)))
            if self._name(prefix):
                blobs.append(self._bucket.blob(self._name(prefix)))
            with ThreadPoolExecutor(MAX_WORKERS) as pool:
                retry = self._policy()
                list(pool.map(lambda blob: self._delete(blob, retry), blobs))

    def _delete(self, blob: storage.Blob, retry: Retry) -> None:
        with contextlib.suppress(api_exceptions.NotFound):
            blob.delete(retry=retry, timeout=REQUEST_TIMEOUT)

    def _holds(self, blob: storage.Blob, data: bytes) -> bool:
        """Whether the stored object has exactly these bytes (by MD5)."""
        stored = self._bucket.get_blob(blob.name, retry=self._policy(), timeout=REQUEST_TIMEOUT)
        return stored is not None and stored.md5_hash == base64.b64encode(hashlib.md5(data).digest()).decode()

    def _policy(self) -> Retry:
        return retry_policy(self._deadline)

    def _list(self, folder: str) -> Iterator[storage.Blob]:
        blobs = self._client.list_blobs(self.bucket_name, prefix=folder, retry=self._policy(), timeout=REQUEST_TIMEOUT)
        return (blob for blob in blobs if not blob.name.endswith("/"))  # Skip console "folder" placeholders.

    def _name(self, key: str) -> str:
        return "/".join(part for part in (self.prefix, key.strip("/")) if part)

    def _folder(self, prefix: str) -> str:
        name = self._name(prefix)
        return f"{name}/" if name else ""

    def _folder_key(self, prefix: str) -> str:
        return f"{prefix.strip('/')}/" if prefix.strip("/") else ""

    @contextlib.contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        with gcs_errors(action, f"{self.url}/{key}", self.bucket_name):
            yield


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
    retry = retry_policy(retry_deadline())
    with gcs_errors("reading data", url, bucket_name, DataError):
        blob = client.bucket(bucket_name).get_blob(name, retry=retry, timeout=REQUEST_TIMEOUT)
        if blob is not None:
            blobs = [blob]
        else:
            listing = client.list_blobs(bucket_name, prefix=f"{name}/", retry=retry, timeout=REQUEST_TIMEOUT)
            blobs = [blob for blob in itertools.islice(listing, MAX_DATA_ENTRIES + 1) if not blob.name.endswith("/")]
        if not blobs:
            raise DataError(
                f"data source {url} does not exist: no object or folder by that name in bucket {bucket_name} "
                "(upload cifar-10-python.tar.gz, its cifar-10-batches-py folder, or an .npz there)"
            )
        places = _cache_places(url, blobs, cache_dir / "gcs" / bucket_name, cache_dir / "gcs-verified" / bucket_name)
        for blob, (target, record) in zip(blobs, places, strict=True):
            fetch_blob(blob, target, record)
    return cache_dir / "gcs" / bucket_name / name


def _cache_places(url: str, blobs: list[storage.Blob], root: Path, records: Path) -> list[tuple[Path, Path]]:
    """Where each object and its verification record go, refused as a whole if any name or size is unsafe."""
    if len(blobs) > MAX_DATA_ENTRIES:
        raise DataError(
            f"data folder {url} holds more than {MAX_DATA_ENTRIES} objects: it is not CIFAR-10; "
            "point --data at the tarball, the cifar-10-batches-py folder or an .npz"
        )
    check_names([blob.name for blob in blobs], f"data source {url}", DataError)
    for blob in blobs:
        check_size(blob.size or 0, MAX_DATA_BYTES, f"gs://{blob.bucket.name}/{blob.name}", DataError)
    check_size(sum(blob.size or 0 for blob in blobs), MAX_DATA_BYTES, f"data source {url}", DataError)
    return [
        (
            contained_path(root, blob.name, f"data source {url}", DataError),
            contained_path(records, f"{blob.name}.json", f"data source {url}", DataError),
        )
        for blob in blobs
    ]


def fetch_blob(blob: storage.Blob, target: Path, record_path: Path) -> None:
    """Download one object to target via a temporary name, unless a verified copy is already there."""
    expected = {"generation": blob.generation, "size": blob.size, "crc32c": blob.crc32c, "md5": blob.md5_hash}
    if target.is_file() and record_path.is_file() and read_record(record_path) == expected == digests(target, blob):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        # Pinning the generation means an object replaced mid-download fails instead of mixing versions.
        blob.download_to_filename(
            temporary,
            if_generation_match=blob.generation,
            retry=retry_policy(retry_deadline()),
            timeout=REQUEST_TIMEOUT,
        )
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


def read_record(path: Path) -> dict[str, Any] | None:
    """The cache's sidecar record, or None when unreadable."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


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
