"""tf.distribute for the trainer: which strategy, and two fixes for Keras 3's `fit` under a strategy.

    --strategy auto         MultiWorkerMirroredStrategy when TF_CONFIG or an Indexed Job's environment says
                            there are several workers; MirroredStrategy when one machine has several GPUs;
                            otherwise the default (no) strategy.
    --strategy mirrored     all local GPUs (or $JOB_LOGICAL_CPUS logical CPU devices, for tests and CPU nodes)
    --strategy multiworker  one replica per worker process, synchronous all-reduce (TF_CONFIG)

`--batch-size` is the *global* batch: each of R replicas computes B/R examples per step, and the gradients
are averaged over B, so the chapter's learning rate means the same thing at any scale. Who is chief (the
run's one writer) is decided before TensorFlow loads, by job.preflight.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from job.config import StrategyKind
from job.errors import UsageError

LOGICAL_CPUS_ENV = "JOB_LOGICAL_CPUS"


@dataclass(frozen=True)
class Distribution:
    strategy: tf.distribute.Strategy
    kind: str  # "none", "mirrored" or "multiworker"
    worker_index: int
    workers: int

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.kind, "replicas": self.replicas, "workers": self.workers, "worker": self.worker_index}


def make_distribution(requested: StrategyKind, gpus: int) -> Distribution:
    """Create the strategy. Must run before any other TensorFlow op (multi-worker collectives need it)."""
    from job.cluster_env import resolve_tf_config, worker_count

    tf_config = resolve_tf_config(os.environ)
    kind = requested.value
    if kind == "auto":
        kind = "multiworker" if worker_count(tf_config) > 1 else "mirrored" if gpus > 1 else "none"
    if kind == "multiworker":
        if not tf_config:
            raise UsageError(
                "--strategy multiworker needs TF_CONFIG, or JOB_COMPLETION_INDEX, JOB_WORKERS, JOB_NAME and "
                "JOB_SERVICE (set by k8s/overlays/multiworker)"
            )
        os.environ["TF_CONFIG"] = json.dumps(tf_config)  # Derived from the Indexed Job; TF reads it from here.
        apply_keras_multiworker_fix()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return Distribution(strategy, kind, int(tf_config["task"]["index"]), worker_count(tf_config))
    if kind == "mirrored":
        return Distribution(tf.distribute.MirroredStrategy(None if gpus else _logical_cpus()), kind, 0, 1)
    return Distribution(tf.distribute.get_strategy(), "none", 0, 1)


def _logical_cpus() -> list[str]:
    """MirroredStrategy's replicas without GPUs: $JOB_LOGICAL_CPUS logical CPU devices (with GPUs it takes all)."""
    count = int(os.environ.get(LOGICAL_CPUS_ENV, "1"))
    cpu = tf.config.list_physical_devices("CPU")[0]
    if count > 1:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    return [device.name for device in tf.config.list_logical_devices("CPU")]


# The Keras release the fix below was written for, and checked against: keras-team/keras master of 2026-08-21
# (3.16.0.dev) still reduces scalar metrics with axis=0 under MultiWorkerMirroredStrategy and still builds
# the model from the epoch iterator's first batch.
KERAS_FIXED_FOR = "3.15.1"


def prepare_fit(model: Any, image_size: int) -> None:
    """Let `fit` under a strategy build `model` from a local batch of zeros, not from the training data.

    keras-team/keras#20585 / tensorflow/tensorflow#72388, first part: before training, Keras' TensorFlow
    trainer takes the first batch of the epoch iterator and all-reduces it only to build the model
    symbolically: a batch taken from training, and under MirroredStrategy a failure (without this, `fit` on
    two logical CPUs stops with "ValueError: Attempt to convert a value (PerReplica..."). The replacement is
    this model's own (an attribute of the instance), so Keras itself is left as it is and no other model in the
    process is affected.
    """
    example = (tf.zeros([1, image_size, image_size, 3], tf.uint8), tf.zeros([1, 1], tf.int64))

    def maybe_symbolic_build(iterator: Any = None, data_batch: Any = None) -> None:
        with model.distribute_strategy.scope():
            model._symbolic_build(data_batch=example)

    model._maybe_symbolic_build = maybe_symbolic_build


def apply_keras_multiworker_fix() -> None:
    """Reduce scalar metrics without `axis=0` under MultiWorkerMirroredStrategy (the second part of
    keras-team/keras#20585: Keras' `reduce_per_replica` fails on them there).

    This one replaces a module function of `keras.src`, for the whole process, so it is applied only to the
    Keras release it was written for: another one is refused (exit 2) rather than trained with a fix that
    may no longer fit. tests/test_distribute.py trains `fit` under both strategies and compares with a
    single replica.
    """
    import keras
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    if keras.version() != KERAS_FIXED_FOR:
        raise UsageError(
            f"Keras {keras.version()} is installed, but job/distribute.py's multi-worker fix was written for "
            f"{KERAS_FIXED_FOR}: install requirements/runtime.lock, or check keras-team/keras#20585 and the fix"
        )
    if getattr(keras_tf_trainer, "_job_multiworker_fixed", False):
        return
    original_reduce = keras_tf_trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: tf.distribute.Strategy, reduction: str) -> Any:
        if reduction in ("auto", "mean") and keras_tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return original_reduce(values, strategy, reduction)

    keras_tf_trainer.reduce_per_replica = reduce_per_replica
    keras_tf_trainer._job_multiworker_fixed = True
