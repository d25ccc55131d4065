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

from job import metrics
from job.errors import OutputError
from job.faults import append_whole, write_atomically
from job.storage import LocalStore, Store, check_out, discard_copy

log = logging.getLogger(__name__)

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
SAVED_MODEL = "model"
KERAS_MODEL = "model.keras"


def parse_json(raw: bytes | None) -> dict[str, Any] | None:
    """A JSON object, {} if the file is unreadable, None if it is absent."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def default_staging_root() -> Path:
    """Where a gs:// run is staged locally ($JOB_STAGING_DIR, else the system temp folder)."""
    return Path(os.environ.get("JOB_STAGING_DIR") or Path(tempfile.gettempdir()) / "cifar10-job-staging")


class RunWriter:
    """Writes one run's files locally and publishes them to the run's store."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store.child(run_id)
        self.run_id = run_id
        self.staging = self.store.staging(default_staging_root() / run_id)
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
            check_out(self.store, shadow.staging, trees=[CHECKPOINTS], files=[METRICS])
        return shadow

    def path(self, name: str) -> Path:
        return self.staging / name

    def read_json(self, name: str) -> dict[str, Any] | None:
        raw = self.store.read_bytes(name)
        return json.loads(raw) if raw is not None else None

    def inspect(self, overwrite: bool) -> str:
        """Read-only check of the output: "new", "resume" (an unfinished run) or "replace" (--overwrite).

        Nothing is changed here, so a run that then fails validation leaves the old one untouched.
        """
        self.store.check_writable()
        if self.store.read_bytes(SUMMARY) is not None:
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
        if state == "resume":
            check_out(self.store, self.staging, trees=[CHECKPOINTS, TENSORBOARD], files=[CONFIG, METRICS])
        else:
            check_out(self.store, self.staging)

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        write_atomically(self.path(name), (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())
        self.publish_file(name)

    def read_metrics(self) -> list[metrics.Record]:
        """The run's records; a damaged line (cut off by a kill or a full disk) is dropped with a warning."""
        path = self.path(METRICS)
        if not path.exists():
            return []
        records, damaged = metrics.decode(path.read_bytes())
        if damaged:
            log.warning(
                "%s: dropped damaged line %s (cut off by a kill or a full disk); training resumes from the last "
                "checkpoint and rewrites what it lost",
                path,
                ", ".join(map(str, damaged)),
            )
        return records

    def keep_metrics_through(self, completed_epochs: int, completed_steps: int = 0) -> None:
        """Drop records past the resume point, so a resumed run has no duplicate or missing epochs."""
        kept = [
            record
            for record in self.read_metrics()
            if record["epoch"] <= completed_epochs
            or (
                record["kind"] == "step"
                and record["epoch"] == completed_epochs + 1
                and record["step"] <= completed_steps
            )
        ]
        write_atomically(self.path(METRICS), metrics.encode(kept))
        self.publish_file(METRICS)

    def append_metrics(self, records: list[metrics.Record]) -> None:
        """Append locally, then publish the whole file so a person can follow a running job."""
        append_whole(self.path(METRICS), metrics.encode(records))
        self.store.upload_file(METRICS, self.path(METRICS))

    def sync_tree(self, name: str, prune: bool = False) -> None:
        """Upload a folder; with `prune`, also delete stored files it no longer has (old checkpoints)."""
        if not self.path(name).is_dir():
            return
        self.store.upload_tree(name, self.path(name), prune=prune)
        if name in self.mirrors:
            self.mirrors[name].upload_tree("", self.path(name))

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
        discard_copy(self.store, self.staging)
