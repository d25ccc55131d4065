"""One writer per run: a lease taken before anything of the run is staged, held to the end, then released.

Two processes on one run id (two `make run --run-id X`, a laptop and a pod on one gs:// prefix, a Job
re-created by hand while its old pod still terminates) would train into the same folder and publish a
metrics.jsonl holding every epoch twice. The second one now exits 4 at once, naming the holder.

- Local output: `flock` on `OUTPUT/.RUN_ID.lock`. The kernel releases it when the holder dies, however; a
  clean exit also removes the file.
- gs:// output: the object `PREFIX/.RUN_ID.lease`, created only if absent (`if_generation_match=0`), holding
  the owner and its lease time. The holder rewrites it every third of that time, conditional on the
  generation it wrote last; a holder killed with -9 stops renewing, and its lease expires
  $JOB_LEASE_SECONDS (default 60) after the last renewal, measured on the server's clock. A pod of the same
  Kubernetes Job (same controller uid) is the holder's successor, never a second writer (the Job controller
  starts a replacement only once a pod has failed), so it takes over at once; so is a restarted replica of
  the same Vertex AI CustomJob (same CLOUD_ML_JOB_ID).
Both sit beside the run folder, not in it, so `--overwrite` can empty the folder while holding the lease.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from job import progress
from job.artifacts import parse_json
from job.errors import EXIT_OUTPUT, OutputError
from job.uri import is_gcs, parse_gcs_url

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 60.0


class Lease(Protocol):
    def release(self) -> None: ...


def owner() -> dict[str, Any]:
    """Who holds a lease: enough for a person to find the process, and for a retried pod to know its Job."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pod": os.environ.get("POD_NAME", ""),
        "job_uid": job_uid(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def job_uid() -> str:
    """What every attempt of one job shares: the Kubernetes Job's controller uid, or the Vertex AI CustomJob's id.

    A restarted Vertex replica (preempted VM, worker restart) is its predecessor's successor, like a retried pod.
    """
    if os.environ.get("JOB_CONTROLLER_UID"):
        return os.environ["JOB_CONTROLLER_UID"]
    vertex_job = os.environ.get("CLOUD_ML_JOB_ID", "").strip()
    return f"vertex-ai/{vertex_job}" if vertex_job else ""


def describe(holder: dict[str, Any]) -> str:
    pod = f", pod {holder['pod']}" if holder.get("pod") else ""
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}{pod}, since {holder.get('since', '?')}"


def busy(url: str, holder: dict[str, Any], until: str = "") -> OutputError:
    expiry = f"; its lease expires at {until} unless it is renewed" if until else ""
    return OutputError(
        f"run {url} is being written by another process ({describe(holder)}{expiry}): two writers would corrupt "
        "it; wait for that one to finish or stop it, or pick another --run-id"
    )


def acquire(output: str, run_id: str) -> Lease:
    """Take the run's lease, or raise OutputError (exit 4) naming the process that holds it."""
    if is_gcs(output):
        from job.gcs import positive_seconds

        return GcsLease(output, run_id, positive_seconds("JOB_LEASE_SECONDS", DEFAULT_LEASE_SECONDS, most=3600))
    return LocalLease(Path(output).expanduser().absolute(), run_id)


class LocalLease:
    """An exclusive flock on OUTPUT/.RUN_ID.lock, which records its holder for the refusal message."""

    def __init__(self, output: Path, run_id: str) -> None:
        output.mkdir(parents=True, exist_ok=True)
        self.path = output / f".{run_id}.lock"
        self.descriptor: int | None = None
        while self.descriptor is None:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read_holder()
                os.close(descriptor)
                raise busy(str(output / run_id), holder) from None
            if self._still_linked(descriptor):
                self.descriptor = descriptor
            else:  # The holder released it and removed the file between our open and our lock: lock anew.
                os.close(descriptor)
        os.ftruncate(self.descriptor, 0)
        os.pwrite(self.descriptor, json.dumps(owner()).encode(), 0)

    def _still_linked(self, descriptor: int) -> bool:
        try:
            return self.path.stat().st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            return False

    def _read_holder(self) -> dict[str, Any]:
        try:
            return parse_json(self.path.read_bytes()) or {}
        except OSError:
            return {}

    def release(self) -> None:
        """Remove the lock file, then drop the lock: a process that opened the old file sees it unlinked."""
        if self.descriptor is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.descriptor)
            self.descriptor = None


class GcsLease:
    """A lease object renewed by a background thread; losing it stops the process with exit 4 at once."""

    def __init__(self, output: str, run_id: str, seconds: float) -> None:
        """Take the lease on OUTPUT/RUN_ID (the object OUTPUT/.RUN_ID.lease) and start renewing it."""
        from google.api_core import exceptions

        from job.gcs import gcs_errors, make_client, retry_deadline, retry_policy

        bucket, prefix = parse_gcs_url(output)
        name = "/".join(part for part in (prefix, f".{run_id}.lease") if part)
        self.url = f"gs://{bucket}/{name}"
        self.blob = make_client().bucket(bucket).blob(name)
        self.seconds = seconds
        self.retry = retry_policy(min(retry_deadline(), seconds / 3))
        self.generation = 0
        self.stopped = threading.Event()
        self.holder = owner()
        run_url = f"{output.rstrip('/')}/{run_id}"
        with gcs_errors("taking the run's lease", self.url, bucket):
            for _ in range(3):  # The holder may release or renew between our reads: look again.
                with contextlib.suppress(exceptions.PreconditionFailed):
                    self._write(if_generation_match=0)
                    break
                current = self.blob.bucket.get_blob(self.blob.name, retry=self.retry)
                if current is None:
                    continue
                with contextlib.suppress(exceptions.PreconditionFailed, exceptions.NotFound):
                    self._take_over(current, run_url)
                    break
            else:
                raise OutputError(f"could not take the lease {self.url}: it kept changing; retry")
        self.thread: threading.Thread | None = threading.Thread(target=self._renew, name="lease-renewal", daemon=True)
        self.thread.start()

    def _take_over(self, current: Any, run_url: str) -> None:
        holder = parse_json(current.download_as_bytes(if_generation_match=current.generation, retry=self.retry)) or {}
        expires = current.updated + timedelta(seconds=float(holder.get("lease_seconds", self.seconds)))
        successor = bool(self.holder["job_uid"]) and holder.get("job_uid") == self.holder["job_uid"]
        if not successor and expires > datetime.now(UTC):
            raise busy(run_url, holder, expires.isoformat(timespec="seconds"))
        why = "an earlier pod of this Job" if successor else f"its lease expired at {expires:%H:%M:%S} UTC"
        log.warning("taking over %s from %s (%s)", self.url, describe(holder), why)
        self._write(if_generation_match=current.generation)

    def _write(self, if_generation_match: int) -> None:
        body = json.dumps({**self.holder, "lease_seconds": self.seconds})
        self.blob.upload_from_string(
            body, content_type="application/json", if_generation_match=if_generation_match, retry=self.retry
        )
        self.generation = int(self.blob.generation)

    def _renew(self) -> None:
        from google.api_core import exceptions

        renewed = datetime.now(UTC)
        while not self.stopped.wait(self.seconds / 3):
            try:
                self._write(if_generation_match=self.generation)
                renewed = datetime.now(UTC)
            except exceptions.PreconditionFailed:
                self._lost("another process took it over")
            except Exception as error:  # Transient: the next tick tries again, until the lease would lapse.
                if datetime.now(UTC) - renewed > timedelta(seconds=self.seconds * 2 / 3):
                    self._lost(f"it could not be renewed ({type(error).__name__})")

    def _lost(self, why: str) -> None:
        """Another writer may now own the run: stop writing at once rather than corrupt it."""
        line = f"error: lost the lease {self.url}: {why}; stopping without writing more"
        progress.stderr_line(line, exit_code=EXIT_OUTPUT)
        os._exit(EXIT_OUTPUT)

    def release(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()
            self.thread = None
            with contextlib.suppress(Exception):  # Gone or taken over: nothing of ours to delete.
                self.blob.delete(if_generation_match=self.generation, retry=self.retry)
