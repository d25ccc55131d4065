"""tf.distribute for the trainer: which strategy, and two Keras 3 fixes for multi-worker `fit`.

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
import logging
import os
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from job.config import StrategyKind
from job.errors import UsageError

log = logging.getLogger(__name__)

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
        apply_keras_distribution_fixes()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return Distribution(strategy, kind, int(tf_config["task"]["index"]), worker_count(tf_config))
    if kind == "mirrored":
        apply_keras_distribution_fixes()
        return Distribution(tf.distribute.MirroredStrategy(_local_devices(gpus)), kind, 0, 1)
    return Distribution(tf.distribute.get_strategy(), "none", 0, 1)


def _local_devices(gpus: int) -> list[str] | None:
    """All GPUs; without GPUs, $JOB_LOGICAL_CPUS logical CPU devices (one replica each)."""
    if gpus:
        return None
    count = int(os.environ.get(LOGICAL_CPUS_ENV, "1"))
    cpu = tf.config.list_physical_devices("CPU")[0]
    if count > 1:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def prepare_fit(model: Any, image_size: int) -> None:
    """Give `fit` a local example batch to build from, instead of taking one from the data (see below)."""
    model._job_symbolic_batch = (
        tf.zeros([1, image_size, image_size, 3], tf.uint8),
        tf.zeros([1, 1], tf.int64),
    )


def apply_keras_distribution_fixes() -> None:
    """Work around two Keras 3 bugs in `model.fit` under tf.distribute strategies.

    keras-team/keras#20585 / tensorflow/tensorflow#72388: (1) before training, Keras takes the first batch
    of the epoch iterator and all-reduces it just to build the model symbolically: collective ops reject
    that under MultiWorkerMirroredStrategy, and under MirroredStrategy the batch is lost to training;
    (2) under MultiWorkerMirroredStrategy it reduces scalar metric results with `axis=0`, which fails.
    Both are fixed here for the pinned Keras (tests/test_distribute.py trains `fit` under both strategies
    and compares with a single replica, so an upgrade that changes this fails the tests, not a cluster run).
    """
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    if getattr(keras_tf_trainer, "_job_multiworker_fixed", False):
        return
    original_reduce = keras_tf_trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: tf.distribute.Strategy, reduction: str) -> Any:
        if reduction in ("auto", "mean") and keras_tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
        if getattr(self, "_job_symbolic_batch", None) is not None:
            with self.distribute_strategy.scope():
                self._symbolic_build(data_batch=self._job_symbolic_batch)
            return
        original_build(self, iterator=iterator, data_batch=data_batch)

    original_build = keras_tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    keras_tf_trainer.reduce_per_replica = reduce_per_replica
    keras_tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    keras_tf_trainer._job_multiworker_fixed = True
