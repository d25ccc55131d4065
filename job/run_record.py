"""config.json: every resolved setting of a run, where it ran, and each time it was resumed."""

from __future__ import annotations

import platform
import socket
from datetime import UTC, datetime
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from job import data as data_module
from job import devices as devices_module
from job import provenance
from job.artifacts import CONFIG, RunWriter
from job.distribute import Distribution
from job.errors import UsageError


def describe_run(
    settings: dict[str, Any],
    jit_compile: bool,
    devices: devices_module.Devices,
    distribution: Distribution,
    dataset: data_module.Cifar10,
    steps_per_epoch: int,
    model: keras.Model,
) -> dict[str, Any]:
    """config.json: every resolved setting and where the run happened."""
    train_counts = data_module.label_counts(dataset.y_train)
    test_counts = data_module.label_counts(dataset.y_test)
    return {
        **settings,
        "xla": jit_compile,
        "parameters": int(model.count_params()),
        "steps_per_epoch": steps_per_epoch,
        "data": {
            "source": dataset.source,
            "image_size": dataset.image_size,
            "train_size": len(dataset.x_train),
            "validation_size": settings["validation_size"],
            "test_size": len(dataset.x_test) - settings["validation_size"],
            "class_names": list(data_module.CLASS_NAMES),
            "train_label_counts": train_counts,
            "test_label_counts": test_counts,
            "train_balanced": len(set(train_counts.values())) == 1,
            "test_balanced": len(set(test_counts.values())) == 1,
        },
        "devices": devices.describe(),
        "distribution": distribution.describe(),
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
        "host": socket.gethostname(),
        "version": provenance.version(),
        "git_commit": provenance.git_commit(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "attempts": 1,
    }


def resumed_record(
    writer: RunWriter, record: dict[str, Any], first_epoch: int, first_step: int, checkpoint: str | None
) -> dict[str, Any]:
    """Refuse to continue in another precision (job.preflight checked the rest); keep the first start time.

    Each resume appends {epoch, step, checkpoint, at}: the 1-based epoch and the step it went on from, and
    the checkpoint restored (None: the run had none yet and started over).
    """
    previous = writer.read_json(CONFIG) or {}
    if previous.get("precision", record["precision"]) != record["precision"]:
        raise UsageError(
            f"run {writer.url} was trained in {previous['precision']}, this machine resolves "
            f"--precision to {record['precision']}: pass --precision {previous['precision']} to resume it"
        )
    resumed = {"epoch": first_epoch + 1, "step": first_step, "checkpoint": checkpoint, "at": record["started_at"]}
    return {
        **record,
        "started_at": previous.get("started_at", record["started_at"]),
        "attempts": int(previous.get("attempts", 1)) + 1,
        "resumed": [*previous.get("resumed", []), resumed],
    }
