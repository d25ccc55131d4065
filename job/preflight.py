"""Everything checked before TensorFlow loads: the output location, an existing run, the data and the splits.

Bad input found here costs a fraction of a second and prints one line, instead of appearing after
TensorFlow's start-up logs (or, worse, after a GPU node was scheduled for it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from job import data, lease
from job.artifacts import CONFIG, SUMMARY, RunWriter, default_staging_root
from job.cluster_env import is_chief, resolve_tf_config, worker_count
from job.config import SETTINGS, StrategyKind, TrainConfig
from job.errors import EnvironmentNotReady, OutputError, UsageError
from job.lease import Lease
from job.storage import open_store
from job.uri import is_gcs

NVIDIA_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0")  # Present in any container granted an NVIDIA GPU.


@dataclass(frozen=True)
class Prepared:
    writer: RunWriter
    resuming: bool
    dataset: data.Cifar10
    is_chief: bool = True
    lease: Lease | None = None  # Held by the chief until the process ends (job.lease).
    workers: int = 1  # The run's training workers (processes); more than one: a lost peer interrupts the others.


def preflight(config: TrainConfig) -> Prepared:
    """Validate everything cheap first; only then change anything in the output location."""
    if config.require_gpu and not any(Path(node).exists() for node in NVIDIA_DEVICE_NODES):
        raise EnvironmentNotReady(
            "--require-gpu is set but this machine or container has no NVIDIA GPU device (no /dev/nvidia0): "
            "the node's NVIDIA driver or device plugin is not ready, or the pod did not get nvidia.com/gpu "
            "(in a Job, a new pod is tried; with docker, run with --gpus all)"
        )
    worker, workers = worker_role(config)
    writer = RunWriter(open_store(config.output), config.run_id)
    state = inspect_run(writer, config)
    dataset = data.load(config.data)
    check_splits(dataset, config.batch_size, config.validation_size)
    if worker is not None:  # A non-chief worker of a multi-worker run: nothing of it is published.
        return Prepared(writer.for_worker(worker, state), state == "resume", dataset, is_chief=False, workers=workers)
    # The chief is the run's one writer: nothing is staged before it holds the run's lease, and a run rejected
    # above leaves no trace. What was read may have changed before the lease was taken: read it again.
    held = lease.acquire(config.output, config.run_id)
    try:
        state = inspect_run(writer, config)
        writer.begin(state)
    except BaseException:
        held.release()
        raise
    return Prepared(writer, state == "resume", dataset, lease=held, workers=workers)


def output_places(config: TrainConfig) -> list[Path]:
    """The local folders a run writes: its run folder (a local --output) and the staging folder (gs://)."""
    places = [default_staging_root()]
    if not is_gcs(config.output):
        places.append(Path(config.output).expanduser())
    return places


def worker_role(config: TrainConfig) -> tuple[int | None, int]:
    """Who is chief, decided here only: (this process's index when it is a non-chief worker of a multi-worker run,
    else None; how many processes train the run: TF_CONFIG's or the Indexed Job's workers, else 1)."""
    if config.strategy not in (StrategyKind.auto, StrategyKind.multiworker):
        return None, 1
    tf_config = resolve_tf_config(os.environ)
    worker = None if is_chief(tf_config) else int(tf_config["task"]["index"])  # type: ignore[index]
    return worker, worker_count(tf_config)


# The resume rules, all here. Settings that must match for a rerun to continue an unfinished run (resume=True in
# job.config; epochs may grow, paths may move); the resolved precision too, once the hardware is known.
RESUME_KEYS = tuple(name for name, declared in SETTINGS.items() if declared.resume)

# A finished run is the same run only if it also trained as many epochs in the requested precision.
FINISHED_KEYS = (*RESUME_KEYS, "epochs", "precision_requested")


def changed_settings(previous: dict[str, object], current: dict[str, object], keys: tuple[str, ...]) -> str:
    """'--learning-rate 0.1 → 0.05, ...' for the recorded settings that differ from this run's ('' if none)."""
    return ", ".join(
        f"{SETTINGS[key.removesuffix('_requested')].flag} {previous[key]} → {current[key]}"
        for key in keys
        if key in previous and previous[key] != current[key]
    )


def inspect_run(writer: RunWriter, config: TrainConfig) -> str:
    """Read-only: "new", "resume" or "replace". Refuses a finished run without --overwrite (exit 4) and an
    unfinished one started with other settings (exit 2)."""
    state = writer.inspect(config.overwrite)
    if state != "resume":
        return state
    differences = changed_settings(writer.read_json(CONFIG) or {}, config.to_json(), RESUME_KEYS)
    if differences:
        raise UsageError(
            f"run {writer.url} is unfinished and was started with other settings ({differences}): "
            "rerun with its original flags to resume it, or pick a new --run-id"
        )
    return state


def check_resolved_precision(url: str, previous: dict[str, object], precision: str) -> None:
    """Refuse to continue a run in another precision than it trained in (job.run_record, once TensorFlow resolved it)."""
    trained = previous.get("precision", precision)
    if trained != precision:
        raise UsageError(
            f"run {url} was trained in {trained}, this machine resolves --precision to {precision}: "
            f"pass --precision {trained} to resume it"
        )


def finished_point(config: TrainConfig) -> str | None:
    """For a sweep point: the line saying its run already finished with these settings, or None to train it.

    A resubmitted sweep finds the points it already trained; exiting 4 there would fail the index (FailIndex) and
    the Job. Read-only: no lease, no staging, the run untouched. A finished run with other settings is still
    refused (exit 4, naming them), and --overwrite replaces it as for any run.
    """
    writer = RunWriter(open_store(config.output), config.run_id)
    summary = None if config.overwrite else writer.read_json(SUMMARY)
    if summary is None:
        return None
    previous = writer.read_json(CONFIG)
    current = {**config.to_json(), "precision_requested": config.precision.value}
    differences = changed_settings(previous, current, FINISHED_KEYS) if previous else f"no {CONFIG}"
    if differences:
        raise OutputError(
            f"run {writer.url} already finished with other settings ({differences}): "
            "give the sweep another name (--run-id) or pass --overwrite to replace it"
        )
    accuracy = summary.get("test_accuracy")
    shown = f"{accuracy:.4f}" if isinstance(accuracy, (int, float)) else "unknown"
    return f"run {writer.url} already finished with these settings (test accuracy {shown}): nothing to train"


def check_splits(dataset: data.Cifar10, batch_size: int, validation_size: int) -> None:
    """The chapter's splits need a full training batch and at least one test image after validation."""
    if batch_size > len(dataset.x_train):
        raise UsageError(
            f"--batch-size {batch_size} is larger than the {len(dataset.x_train)} training images: lower it"
        )
    if validation_size >= len(dataset.x_test):
        raise UsageError(
            f"--validation-size {validation_size} leaves no test images (the data has {len(dataset.x_test)}): lower it"
        )
