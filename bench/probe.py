"""How long a training step waits for input: the real pipeline vs the same step fed from memory.

    .venv/bin/python bench/probe.py --variant symbolic-fit --data ../shared/data/cifar10/cifar-10-python.tar.gz

bench/benchmark.py runs this once per variant. It trains on the first 10,000 images (50 steps of 200)
with the variant's own loop: our `fit_loop`/`custom_loop` (job.loops) or the chapter's `model.fit`
(bench/reference.py), and times each epoch from its start to its last step. "Real" epochs read the
variant's own input pipeline; "memory" epochs read its first batch, cached, 50 times, so they cost the
step alone. Real and memory runs alternate (two of each, two epochs per run, the first epoch of a run
dropped for tracing), and

    input_wait_fraction = 1 − median(memory epoch seconds) / median(real epoch seconds)

is the share of training time the input pipeline costs, whether by making the step wait or by taking
CPU from it (on 2 cores both matter). It prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Run as a script from anywhere.

import keras
import tensorflow as tf

from bench import reference
from job import data as data_module
from job import devices as devices_module
from job import loops, pipeline, stepping
from job.config import Api, Loop, Precision, Switch, TrainConfig
from job.models import build_model
from job.plan import Plan

PROBE_IMAGES = 10_000  # 50 steps of 200 per epoch.
ROUNDS = 2
EPOCHS_PER_RUN = 2


class StubMonitor:
    """Just enough of job.monitor.Monitor for the loops: times each epoch's training steps."""

    def __init__(self, steps_per_epoch: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.stop_requested = False
        self.seconds: list[float] = []
        self.started = 0.0

    def epoch_begin(self, epoch: int, first_step: int = 0) -> None:
        self.started = time.perf_counter()

    def step_end(self, epoch: int, step: int, loss: Any, batch_loss: Any = None) -> None:
        if step == self.steps_per_epoch:
            float(loss)  # Wait for the last step to finish before stopping the clock.
            self.seconds.append(time.perf_counter() - self.started)

    def epoch_end(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        return {}


def from_memory(dataset: tf.data.Dataset, steps: int) -> tf.data.Dataset:
    """The dataset's first batch, cached and repeated: the step without the input pipeline."""
    return dataset.take(1).cache().repeat(steps)


def time_ours(api: str, loop: str, dataset: data_module.Cifar10, memory: bool) -> float:
    """Seconds per epoch (after the first) of our loop on the probe subset."""
    splits = pipeline.make_splits(dataset, 200, reference.VALIDATION_SIZE)
    model = build_model(api, dataset.image_size)
    optimizer = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    monitor = StubMonitor(splits.steps_per_epoch)
    real_epochs = loops.train_epochs

    def train_epochs(
        splits: pipeline.Splits, seed: int, first_epoch: int, epochs: int, first_step: int = 0
    ) -> tf.data.Dataset:
        batches = real_epochs(splits, seed, first_epoch, epochs, first_step)
        return from_memory(batches, splits.steps_per_epoch * (epochs - first_epoch)) if memory else batches

    loops.train_epochs = train_epochs  # The name both loops call.
    try:
        config = TrainConfig(api=Api(api), loop=Loop(loop), epochs=EPOCHS_PER_RUN, seed=42)
        steps_per_execution = (  # As `train` chooses by default.
            stepping.fit_steps_per_execution(0, splits.steps_per_epoch)
            if loop == "fit"
            else stepping.requested_steps(0)
        )
        plan = Plan(
            config,
            precision=keras.mixed_precision.global_policy().name,
            jit_compile=False,
            steps_per_epoch=splits.steps_per_epoch,
            steps_per_execution=steps_per_execution,
            first_epoch=0,
            first_step=0,
            is_chief=True,
            workers=1,
        )
        if loop == "fit":
            loops.fit_loop(model, optimizer, splits, monitor, plan)  # type: ignore[arg-type]
        else:
            metrics = {"train_loss": keras.metrics.Mean(), "train_accuracy": keras.metrics.SparseCategoricalAccuracy()}
            loops.custom_loop(model, optimizer, splits, monitor, metrics, plan)  # type: ignore[arg-type]
    finally:
        loops.train_epochs = real_epochs
    return statistics.median(monitor.seconds[1:])


class EpochClock(keras.callbacks.Callback):
    """Times each epoch of `model.fit` from its start to its last batch."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.started = self.ended = 0.0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.ended = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.seconds.append(self.ended - self.started)


def time_reference(dataset: data_module.Cifar10, memory: bool) -> float:
    """Seconds per epoch (after the first) of the chapter's `model.fit` on the probe subset."""
    keras.utils.set_random_seed(42)
    train, validation, _ = reference.make_datasets(dataset)
    if memory:
        train = from_memory(train, len(dataset.x_train) // reference.BATCH_SIZE)
    model = reference.build_model()
    reference.compile_model(model)
    clock = EpochClock()
    model.fit(train, epochs=EPOCHS_PER_RUN, validation_data=validation, callbacks=[clock], verbose=0)
    return statistics.median(clock.seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, help="reference, symbolic-fit, ..., imperative-custom")
    parser.add_argument("--data", required=True)
    arguments = parser.parse_args()
    full = data_module.load(arguments.data)
    dataset = data_module.Cifar10(
        full.x_train[:PROBE_IMAGES], full.y_train[:PROBE_IMAGES], full.x_test, full.y_test, ""
    )
    if arguments.variant == "reference":
        measure_epoch = lambda memory: time_reference(dataset, memory)  # noqa: E731
    else:
        devices = devices_module.detect()
        precision = devices_module.resolve_precision(Precision.auto, devices)
        assert not devices_module.resolve_xla(Switch.auto, devices), "the probe runs the CPU path only"
        keras.mixed_precision.set_global_policy(precision)
        api, loop = arguments.variant.split("-")
        measure_epoch = lambda memory: time_ours(api, loop, dataset, memory)  # noqa: E731
    real, memory = [], []
    for _ in range(ROUNDS):
        real.append(measure_epoch(False))
        memory.append(measure_epoch(True))
    real_seconds, memory_seconds = statistics.median(real), statistics.median(memory)
    steps = len(dataset.x_train) // reference.BATCH_SIZE
    result = {
        "variant": arguments.variant,
        "real_epoch_seconds": real,
        "memory_epoch_seconds": memory,
        "input_wait_fraction": max(0.0, 1 - memory_seconds / real_seconds),
        "step_only_images_per_second": steps * reference.BATCH_SIZE / memory_seconds,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
