"""The run folder: config.json, metrics.jsonl, checkpoints/, tensorboard/, model/, model.keras, summary.json.

Files are written into a local staging folder and published through the run's `Store` (for a local
output the two are the same folder). `summary.json` is published last and create-only: a run is
complete exactly when it exists, and two jobs racing for one run id cannot both publish.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from job.errors import OutputError
from job.faults import append_whole, write_atomically
from job.storage import LocalStore, Store

log = logging.getLogger(__name__)

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
SAVED_MODEL = "model"
KERAS_MODEL = "model.keras"


def metric_lines(records: list[dict[str, Any]]) -> bytes:
    """Records as metrics.jsonl lines: one JSON object per line, keys sorted."""
    return "".join(json.dumps(record, sort_keys=True) + "\n" for record in records).encode()


def metric_records(raw: bytes) -> tuple[list[dict[str, Any]], list[int]]:
    """metrics.jsonl's step and epoch records, and the numbers of the lines that are not one (torn, foreign)."""
    records: list[dict[str, Any]] = []
    damaged: list[int] = []
    for number, line in enumerate(raw.decode(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if (
            isinstance(record, dict)
            and record.get("kind") in ("step", "epoch")
            and isinstance(record.get("epoch"), int)
        ):
            records.append(record)
        else:
            damaged.append(number)
    return records, damaged


def default_staging_root() -> Path:
    """Where a gs:// run is staged locally ($JOB_STAGING_DIR, else the system temp folder)."""
    return Path(os.environ.get("JOB_STAGING_DIR") or Path(tempfile.gettempdir()) / "cifar10-job-staging")


class RunWriter:
    """Writes one run's files locally and publishes them to the run's store."""

    def __init__(self, store: Store, run_id: str, staging_root: Path | None = None) -> None:
        self.store = store.child(run_id)
        self.run_id = run_id
        local = self.store.local_root()
        self.staging = local if local is not None else (staging_root or default_staging_root()) / run_id
        self.url = self.store.url
        self.scratch_root: Path | None = None  # Set on a worker's private copy: deleted when it is done.
        self.mirrors: dict[str, Store] = {}  # Extra places a folder is also synced to (Vertex AI's AIP_* dirs).

    def for_worker(self, worker_index: int, state: str) -> RunWriter:
        """A private, never-published copy for a non-chief worker of a multi-worker run.

        Every worker must save checkpoints (the saves are collective), but only the chief's count; the
        others write into their own temporary folder, seeded with the run's checkpoints when resuming.
        """
        root = default_staging_root() / f"{self.run_id}-worker-{worker_index}"
        if root.exists():
            shutil.rmtree(root)
        shadow = RunWriter(LocalStore(root), self.run_id)
        shadow.scratch_root = root
        shadow.staging.mkdir(parents=True)
        if state == "resume":
            self.store.download_tree(CHECKPOINTS, shadow.path(CHECKPOINTS))
            metrics = self.store.read_bytes(METRICS)
            if metrics is not None:
                shadow.path(METRICS).write_bytes(metrics)
        return shadow

    def path(self, name: str) -> Path:
        return self.staging / name

    def is_complete(self) -> bool:
        return self.store.read_bytes(SUMMARY) is not None

    def read_json(self, name: str) -> dict[str, Any] | None:
        raw = self.store.read_bytes(name)
        return json.loads(raw) if raw is not None else None

    def inspect(self, overwrite: bool) -> str:
        """Read-only check of the output: "new", "resume" (an unfinished run) or "replace" (--overwrite).

        Nothing is changed here, so a run that then fails validation leaves the old one untouched.
        """
        self.store.check_writable()
        if self.is_complete():
            if not overwrite:
                raise OutputError(
                    f"run {self.url} already finished (it has {SUMMARY}): pick another --run-id or pass --overwrite"
                )
            return "replace"
        return "resume" if self.store.read_bytes(CONFIG) is not None else "new"

    def begin(self, state: str) -> None:
        """Make the staging folder ready: empty for a new run, with the stored state for a resumed one."""
        if state == "replace":
            log.warning("replacing the finished run %s (--overwrite)", self.url)
            self.store.delete_prefix("")
        remote = self.store.local_root() is None
        if remote and self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True, exist_ok=True)
        if remote and state == "resume":
            for name in (CHECKPOINTS, TENSORBOARD):
                self.store.download_tree(name, self.path(name))
            for name in (CONFIG, METRICS):
                data = self.store.read_bytes(name)
                if data is not None:
                    self.path(name).write_bytes(data)

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        write_atomically(self.path(name), (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())
        self.publish_file(name)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The run's records; a damaged line (cut off by a kill or a full disk) is dropped with a warning."""
        path = self.path(METRICS)
        if not path.exists():
            return []
        records, damaged = metric_records(path.read_bytes())
        if damaged:
            log.warning(
                "%s: dropped damaged line %s (cut off by a kill or a full disk); training resumes from the last "
                "checkpoint and rewrites what it lost",
                path,
                ", ".join(map(str, damaged)),
            )
        return records

    def keep_metrics_through(self, completed_epochs: int, completed_steps: int = 0) -> list[dict[str, Any]]:
        """Drop records past the resume point, so a resumed run has no duplicate or missing epochs."""

        def keep(record: dict[str, Any]) -> bool:
            if record["epoch"] <= completed_epochs:
                return True
            return (
                record["kind"] == "step"
                and record["epoch"] == completed_epochs + 1
                and record["step"] <= completed_steps
            )

        kept = [record for record in self.read_metrics() if keep(record)]
        self._write_metrics(kept)
        return kept

    def append_metrics(self, records: list[dict[str, Any]]) -> None:
        """Append locally, then publish the whole file so a person can follow a running job."""
        append_whole(self.path(METRICS), metric_lines(records))
        self.store.upload_file(METRICS, self.path(METRICS))

    def _write_metrics(self, records: list[dict[str, Any]]) -> None:
        write_atomically(self.path(METRICS), metric_lines(records))
        self.publish_file(METRICS)

    def sync_tree(self, name: str, prune: bool = False) -> None:
        """Upload a folder; with `prune`, also delete stored files it no longer has (old checkpoints)."""
        if not self.path(name).is_dir():
            return
        self.store.upload_tree(name, self.path(name))
        if name in self.mirrors:
            self.mirrors[name].upload_tree("", self.path(name))
        if prune and self.store.local_root() is None:
            local = {str(path.relative_to(self.staging)) for path in self.path(name).rglob("*") if path.is_file()}
            for key in self.store.list_keys(name):
                if key not in local:
                    self.store.delete_prefix(key)

    def publish_file(self, name: str) -> None:
        if self.path(name).is_dir():
            self.store.upload_tree(name, self.path(name))
        else:
            self.store.upload_file(name, self.path(name))

    def publish_summary(self, summary: dict[str, Any]) -> None:
        """The last write of a run: create-only, so it marks the run complete exactly once."""
        data = (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode()
        self.store.write_bytes(SUMMARY, data, create_only=True)

    def discard(self) -> None:
        """Delete a worker's private copy (for_worker) once training is over."""
        if self.scratch_root is not None:
            shutil.rmtree(self.scratch_root, ignore_errors=True)

    def cleanup_staging(self) -> None:
        """After a successful publish to a remote store the local copy is no longer needed."""
        if self.store.local_root() is None and self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)
