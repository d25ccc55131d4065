"""Indexed Jobs: N multi-worker pods with their headless Service, or one pod per sweep point.

Both start from a rendered overlay (k8s/overlays/multiworker, k8s/overlays/sweep) that already holds
the policies (Indexed, podReplacementPolicy, successPolicy, per-index retries); this module only sets
the sizes for this run and renames the objects that belong to the run along with the Job.
"""

from __future__ import annotations

import re
from typing import Any

from job.errors import UsageError
from job.kube.render import LABEL_RUN_ID, Manifest, find, set_env, set_labels, train_container
from job.sweep import Point, encode

COMPANION_KINDS = ("Service", "NetworkPolicy")  # Objects named like the overlay's Job travel with it.
LABEL_SWEEP = "cifar10-job/sweep"
HOSTNAME_LIMIT = 63  # An Indexed Job pod's hostname <job>-<index> must be one DNS label.
# A Service's name must be an RFC 1035 label: it starts with a letter.
SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def check_hostnames(name: str, completions: int) -> None:
    longest = f"{name}-{completions - 1}"
    if len(longest) > HOSTNAME_LIMIT:
        raise UsageError(
            f"run id {name!r} is too long for {completions} indexed pods: their hostnames (up to {longest!r}) "
            f"must be at most {HOSTNAME_LIMIT} characters; choose a shorter --run-id"
        )


def make_multiworker(job: Manifest, documents: list[Manifest], workers: int | None) -> list[Manifest]:
    """Size the Job for `workers` (None keeps the overlay's); this run's copies of the overlay's Service and
    NetworkPolicy named like its Job (none for a one-worker overlay and run)."""
    old_name = find(documents, "Job")[0]["metadata"]["name"]  # build_job found exactly one.
    objects = [doc for doc in documents if doc.get("kind") in COMPANION_KINDS and doc["metadata"]["name"] == old_name]
    if not objects and (workers or 1) == 1:
        return []
    if not any(document["kind"] == "Service" for document in objects):
        raise UsageError("this overlay has no headless Service for its workers: use --overlay multiworker")
    spec = job["spec"]
    workers = workers or int(spec["completions"])
    if workers < 2:
        raise UsageError(f"--workers must be at least 2 for the multiworker overlay, got {workers}")
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    if not SERVICE_NAME.match(name):
        raise UsageError(f"run id {name!r} must start with a letter: it also names the workers' Service")
    check_hostnames(name, workers)
    spec["completions"] = spec["parallelism"] = workers
    spec["template"]["spec"]["subdomain"] = name
    container = train_container(job)
    set_env(container, "JOB_WORKERS", str(workers))
    set_env(container, "JOB_SERVICE", name)
    renamed = [rename_run_label(document, old_name, name) for document in objects]
    for document in renamed:
        document["metadata"].update(name=name, namespace=namespace)
    return renamed


def rename_run_label(value: Any, old: str, new: str) -> Any:
    """A copy with every `cifar10-job/run-id: old` (labels and selectors at any depth) set to new."""
    if isinstance(value, dict):
        return {
            key: new if key == LABEL_RUN_ID and item == old else rename_run_label(item, old, new)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [rename_run_label(item, old, new) for item in value]
    return value


def waves(points: int, parallelism: int) -> int:
    """How many rounds of `parallelism` pods at once it takes to train `points` points: ceil(points / parallelism)."""
    return -(-points // parallelism)


def make_sweep(job: Manifest, grid: list[Point], parallelism: int) -> None:
    """Size the overlay's Indexed Job for the grid, `parallelism` points at once at most, and hand every pod the grid.

    activeDeadlineSeconds covers the whole Job, so it grows with the grid: one point's budget (the base's 6 h: the
    overlay's deadline over its own waves of points) per wave. Points trained `parallelism` at once, a slot starting
    its next point as soon as one ends, all finish within budget × ceil(points / parallelism) (docs/scaleout.md).
    """
    if parallelism < 1:
        raise UsageError(f"--parallelism must be at least 1, got {parallelism}")
    spec = job["spec"]
    if spec.get("completionMode") != "Indexed":
        raise UsageError("the sweep overlay must render an Indexed Job (completionMode: Indexed)")
    name, size = job["metadata"]["name"], len(grid)
    check_hostnames(name, size)
    deadline = spec.get("activeDeadlineSeconds")  # None: no deadline.
    own_waves = waves(int(spec["completions"]), int(spec["parallelism"]))
    spec["completions"], spec["parallelism"] = size, min(parallelism, size)
    if deadline is not None:  # One point's budget (the deadline over the overlay's own waves) per wave.
        spec["activeDeadlineSeconds"] = -(-int(deadline) // own_waves) * waves(size, spec["parallelism"])
    set_env(train_container(job), "JOB_SWEEP", encode(grid))
    set_labels(job, {LABEL_SWEEP: name})


def owned_by(document: Manifest, job: Manifest) -> Manifest:
    """A copy owned by the created Job, so the garbage collector removes it with the Job (also after its TTL)."""
    metadata = job["metadata"]
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": metadata["name"], "uid": metadata["uid"]}
    return {**document, "metadata": {**document["metadata"], "ownerReferences": [owner]}}
