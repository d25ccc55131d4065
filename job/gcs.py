"""Cloud Storage behind gs:// URLs: the client, its retries and errors, and the `Store` that publishes runs.

Everything goes through google-cloud-storage, never TensorFlow's gs:// filesystem (which cannot be
pointed at a test server). Authentication is Application Default Credentials; with
STORAGE_EMULATOR_HOST set, the client talks to that emulator (fake-gcs-server in the tests) anonymously:

    STORAGE_EMULATOR_HOST=http://127.0.0.1:4443 python -m job runs list gs://bucket/runs

Only `job.storage.open_store`, the data fetcher (`job.fetch`), the lease and `predict` import this module,
and only for gs://, so plain local runs never import google-cloud-storage.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Any

import google.auth
import requests
import urllib3
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.auth import compute_engine
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.transport.requests import Request
from google.cloud import storage
from google.cloud.storage import transfer_manager
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

from job.errors import EnvironmentNotReady, JobError, OutputError, UsageError
from job.untrusted import check_names, contained_path
from job.uri import gcs_url

# Transient errors (429, 408, 5xx, connection errors, timeouts) are retried with exponential backoff (1 s
# doubling to 60 s); this caps how long one request keeps trying before the job gives up with exit 4.
DEFAULT_RETRY_DEADLINE = 120.0
REQUEST_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds for each HTTP request.
# Eight threads: requests keeps ten pooled connections per host, so more threads would only queue.
MAX_WORKERS = 8
THREADS = {"raise_exception": True, "worker_type": transfer_manager.THREAD, "max_workers": MAX_WORKERS}
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


# What google-cloud-storage 3.17's own retry predicate treats as transient, written here with public names
# only (the library's is private: google.cloud.storage.retry._should_retry). tests/test_gcs_store.py pins it.
TRANSIENT_ERRORS = (
    api_exceptions.TooManyRequests,
    api_exceptions.InternalServerError,
    api_exceptions.BadGateway,
    api_exceptions.ServiceUnavailable,
    api_exceptions.GatewayTimeout,
    ConnectionError,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.Timeout,
    http.client.BadStatusLine,
    http.client.IncompleteRead,
    http.client.ResponseNotReady,
    urllib3.exceptions.PoolError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.SSLError,
    urllib3.exceptions.TimeoutError,
)
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


def is_transient(error: BaseException) -> bool:
    """Whether a failed request may succeed if sent again."""
    if isinstance(error, TRANSIENT_ERRORS):
        return True
    if isinstance(error, api_exceptions.GoogleAPICallError):
        return error.code in TRANSIENT_STATUS
    if isinstance(error, InvalidResponse):
        return error.response.status_code in TRANSIENT_STATUS
    if isinstance(error, auth_exceptions.TransportError) and error.args:
        return isinstance(error.args[0], BaseException) and is_transient(error.args[0])
    return False


def retry_deadline() -> float:
    """Seconds to keep retrying transient errors: JOB_GCS_RETRY_DEADLINE, default 120."""
    return positive_seconds("JOB_GCS_RETRY_DEADLINE", DEFAULT_RETRY_DEADLINE)


def retry_policy(deadline: float | None = None) -> Retry:
    """Exponential backoff on transient errors for one operation, with one budget shared by all its threads.

    Retrying stops `deadline` (default `retry_deadline()`) seconds after the operation's first transient error,
    so 100 parallel uploads to a dead endpoint fail after `deadline` seconds, not after 100 / MAX_WORKERS × that.
    """
    deadline = retry_deadline() if deadline is None else deadline
    lock = threading.Lock()
    first_error: list[float] = []

    def should_retry(error: Exception) -> bool:
        if not is_transient(error):
            return False
        with lock:
            first_error[:] = first_error or [time.monotonic()]
            return time.monotonic() - first_error[0] < deadline

    return Retry(predicate=should_retry, timeout=deadline)


def request_options(deadline: float | None = None) -> dict[str, Any]:
    """The keyword arguments of one operation's requests: its own `retry_policy(deadline)`, and the timeouts."""
    return {"retry": retry_policy(deadline), "timeout": REQUEST_TIMEOUT}


def positive_seconds(name: str, default: float, most: float = math.inf) -> float:
    """Seconds above 0 (and at most `most`) from the environment variable `name`, else `default` (exit 2 if not)."""
    text = os.environ.get(name, "").strip()
    try:
        seconds = float(text) if text else default
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= most:
        bound = f" up to {most:g}" if most < math.inf else ""
        raise UsageError(f"{name}={text!r} is not a number of seconds above 0{bound}: unset it or fix it")
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
            unreachable = metadata_unreachable(cause)
            if unreachable and time.monotonic() + delay <= give_up:
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
                continue
            if unreachable and in_pod():
                silent = isinstance(cause, auth_exceptions.DefaultCredentialsError)
                detail = "no answer from the metadata server" if silent else describe(cause)
                raise EnvironmentNotReady(
                    f"no Google credentials after {wait:g} s ({detail}): {HINT_METADATA}"
                ) from None
            raise error(f"no Google credentials ({describe(cause)}): {HINT_CREDENTIALS}") from None


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
        phrase = next((status.phrase for status in HTTPStatus if status == cause.code), "")
        text = f"HTTP {cause.code} {phrase}".rstrip()
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
            f"permission denied {action} {url} ({describe(cause)}): the job's identity needs roles/storage.objectUser "
            f"on bucket {bucket} (storage.objects.create/get/list/delete)"
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
        verb = "gave up" if is_transient(cause) else "failed"  # Transient, but out of retry budget.
        raise error(f"{verb} {action} {url}: {describe(cause)}") from None


class GcsStore:
    """gs://bucket/prefix as a `job.storage.Store`: keys are object names below the prefix."""

    def __init__(self, bucket: str, prefix: str = "", client: storage.Client | None = None) -> None:
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.url = gcs_url(bucket, self.prefix)
        self._client = client or make_client()
        self._bucket = self._client.bucket(bucket)
        self._deadline = retry_deadline()

    def child(self, name: str) -> GcsStore:
        return GcsStore(self.bucket_name, self._name(name), self._client)

    def staging(self, copy: Path) -> Path:
        return copy

    def is_copy(self, folder: Path) -> bool:
        return True

    def is_listable(self) -> bool:
        return True  # A missing bucket fails the listing itself; an empty prefix lists nothing.

    def check_writable(self) -> None:
        """Create and delete a probe object: proves the bucket exists and the job may write there."""
        probe = self._bucket.blob(self._name(f".write-probe-{secrets.token_hex(4)}"))
        with self._errors("checking write access to", ""):
            probe.upload_from_string(b"", if_generation_match=0, **self._request())
            probe.delete(**self._request())

    def read_bytes(self, key: str) -> bytes | None:
        blob = self._bucket.blob(self._name(key))
        with self._errors("reading", key):
            try:
                return bytes(blob.download_as_bytes(**self._request()))
            except api_exceptions.NotFound:
                return None

    def write_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        """Replace the object; with create_only, refuse (exit 4) if it exists (if_generation_match=0)."""
        blob = self._bucket.blob(self._name(key))
        with self._errors("writing", key):
            try:
                blob.upload_from_string(data, if_generation_match=0 if create_only else None, **self._request())
            except api_exceptions.PreconditionFailed:
                stored = self._bucket.get_blob(blob.name, **self._request())
                if stored is not None and stored.md5_hash == base64.b64encode(hashlib.md5(data).digest()).decode():
                    return  # A retried create whose first attempt had landed (same MD5): the object is ours.
                raise OutputError(
                    f"{self.url}/{key} already exists: another job published this run first "
                    "(create-only write refused; choose another --run-id)"
                ) from None

    def upload_file(self, key: str, source: Path) -> None:
        with self._errors("uploading", key):
            self._bucket.blob(self._name(key)).upload_from_filename(str(source), **self._request())

    def upload_tree(self, prefix: str, source_dir: Path, *, prune: bool = False) -> None:
        """Upload every file below source_dir in parallel threads, largest first; `prune` deletes what it lacks."""
        files = sorted(
            (path for path in source_dir.rglob("*") if path.is_file()), key=lambda path: -path.stat().st_size
        )
        if files:
            with self._errors(f"uploading {len(files)} files to", self._folder_key(prefix)):
                transfer_manager.upload_many_from_filenames(
                    self._bucket,
                    [path.relative_to(source_dir).as_posix() for path in files],
                    source_directory=str(source_dir),
                    blob_name_prefix=self._folder(prefix),
                    upload_kwargs=self._request(),
                    **THREADS,
                )
        if prune:  # After the upload, so a kill in between leaves extra objects, never missing ones.
            local = {self._folder_key(prefix) + path.relative_to(source_dir).as_posix() for path in files}
            for key in self.list_keys(prefix):
                if key not in local:
                    self.delete_prefix(key)

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
                download_kwargs=self._request(),
                create_directories=True,
                **THREADS,
            )
        return len(names)

    def list_keys(self, prefix: str = "", *, depth: int | None = None) -> list[str]:
        root, folder = self._folder(""), self._folder(prefix)
        with self._errors("listing", self._folder_key(prefix)):
            names = [blob.name for blob in self._list(folder)]
        return sorted(name[len(root) :] for name in names if depth is None or name[len(folder) :].count("/") < depth)

    def delete_prefix(self, prefix: str) -> None:
        """Delete the object named prefix and everything below it, blob by blob (no batch requests)."""
        with self._errors("deleting", self._folder_key(prefix)):
            blobs = list(self._list(self._folder(prefix)))
            if self._name(prefix):
                blobs.append(self._bucket.blob(self._name(prefix)))
            with ThreadPoolExecutor(MAX_WORKERS) as pool:
                request = self._request()
                list(pool.map(lambda blob: self._delete(blob, request), blobs))

    def _delete(self, blob: storage.Blob, request: dict[str, Any]) -> None:
        with contextlib.suppress(api_exceptions.NotFound):
            blob.delete(**request)

    def _request(self) -> dict[str, Any]:
        return request_options(self._deadline)

    def _list(self, folder: str) -> Iterator[storage.Blob]:
        blobs = self._client.list_blobs(self.bucket_name, prefix=folder, **self._request())
        return (blob for blob in blobs if not blob.name.endswith("/"))  # Skip console "folder" placeholders.

    def _name(self, key: str) -> str:
        return "/".join(part for part in (self.prefix, key.strip("/")) if part)

    def _folder(self, prefix: str) -> str:
        name = self._name(prefix)
        return f"{name}/" if name else ""

    def _folder_key(self, prefix: str) -> str:
        return f"{prefix.strip('/')}/" if prefix.strip("/") else ""

    def _errors(self, action: str, key: str) -> contextlib.AbstractContextManager[None]:
        return gcs_errors(action, f"{self.url}/{key}", self.bucket_name)
