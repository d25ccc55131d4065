"""config.json: every resolved setting of a run, where it ran, the data, and each time it was resumed.

TensorFlow is imported only to record its version: `inspect` describes the data with describe_data without it.
"""

from __future__ import annotations

import platform
import socket
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from job import provenance
from job.artifacts import CONFIG, RunWriter
from job.data import CLASS_NAMES, Cifar10, label_counts
from job.preflight import check_resolved_precision

if TYPE_CHECKING:
    import keras

    from job.devices import Devices
    from job.distribute import Distribution
    from job.plan import Plan


def describe_run(
    settings: dict[str, Any],
    plan: Plan,
    devices: Devices,
    distribution: Distribution,
    dataset: Cifar10,
    model: keras.Model,
) -> dict[str, Any]:
    """config.json: every resolved setting and where the run happened."""
    import keras
    import numpy as np
    import tensorflow as tf

    return {
        **settings,
        "xla": plan.jit_compile,
        "parameters": int(model.count_params()),
        "steps_per_epoch": plan.steps_per_epoch,
        "data": describe_data(dataset, plan.config.validation_size),
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


def describe_data(dataset: Cifar10, validation_size: int | None = None) -> dict[str, Any]:
    """Sizes, label counts and balance: config.json's "data" block as the run splits it (validation = test[:N]),
    and without validation_size the whole data, as `inspect` writes it to data.json."""
    counts = {"train": label_counts(dataset.y_train), "test": label_counts(dataset.y_test)}
    sizes: dict[str, Any] = {"train_size": len(dataset.x_train), "test_size": len(dataset.x_test)}
    if validation_size is not None:
        sizes.update(validation_size=validation_size, class_names=list(CLASS_NAMES))
        sizes["test_size"] -= validation_size
    return {
        "source": dataset.source,
        "image_size": dataset.image_size,
        **sizes,
        **{f"{split}_label_counts": values for split, values in counts.items()},
        **{f"{split}_balanced": len(set(values.values())) == 1 for split, values in counts.items()},
    }


def resumed_record(writer: RunWriter, record: dict[str, Any], plan: Plan, checkpoint: str | None) -> dict[str, Any]:
    """The record of a resumed run: the first start time kept, one more attempt, and where it went on from.

    Each resume appends {epoch, step, checkpoint, at}: the 1-based epoch and the step it went on from, and
    the checkpoint restored (None: the run had none yet and started over).
    """
    previous = writer.read_json(CONFIG) or {}
    check_resolved_precision(writer.url, previous, plan.precision)
    started = record["started_at"]
    resumed = {"epoch": plan.first_epoch + 1, "step": plan.first_step, "checkpoint": checkpoint, "at": started}
    return {
        **record,
        "started_at": previous.get("started_at", started),
        "attempts": int(previous.get("attempts", 1)) + 1,
        "resumed": [*previous.get("resumed", []), resumed],
    }
