"""Input capacity: how many training images/s the input delivers, consumed the way the training step consumes it.

    .venv/bin/python bench/input_capacity.py                 # real CIFAR-10, batch 200, 5 alternating repeats

For --data-on-device off and on (job.pipeline with device=None or "/CPU:0") it iterates the run's one
training iterator (`train_epochs`) from inside a `tf.function`, as both loops do: each step takes the next
element and, with the training set on the device, gathers its images there (`Splits.batch_images`); the
images are consumed by a max over every pixel (a full read, nearly free), nothing else. Timed calls of
250 steps (one epoch) after one warm-up call, the two modes alternating in the same process so the
machine's drift hits both; also the eager iteration (`for batch in dataset`) the issue measured, for
comparison. Writes bench/results/input-capacity.{json,md}; never a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # Run as a script from anywhere.

import tensorflow as tf  # noqa: E402

from bench.startup import machine, save_results  # noqa: E402
from job import data as data_module  # noqa: E402
from job.pipeline import Splits, make_splits, train_epochs  # noqa: E402

REAL_DATA = ROOT.parent / "shared" / "data" / "cifar10" / "cifar-10-python.tar.gz"
RESULTS = ROOT / "bench" / "results"
MODES = {"off (tf.data gathers on the host)": None, "on (the step gathers on the device, here /CPU:0)": "/CPU:0"}
INDICES_ONLY = "on, indices and labels only (the host's share when the device is a GPU)"
ELEMENT_SHUFFLE = "the same, with the earlier tf.data shuffle of the indices, element by element"


def element_shuffled(splits: Splits, epochs: int) -> Any:
    """The index stream as job.pipeline built it before the stateless shuffle (range.shuffle.batch per epoch)."""
    labels = splits.train_labels

    def epoch(number: tf.Tensor) -> Any:
        order = tf.data.Dataset.range(splits.train_size).shuffle(splits.train_size, seed=number)
        return order.batch(splits.batch_size, drop_remainder=True)

    batches = tf.data.Dataset.range(epochs).flat_map(epoch)
    return batches.map(lambda index: (index, tf.gather(labels, index))).prefetch(tf.data.AUTOTUNE)


def consumer(splits: Splits, gather: bool = True) -> Any:
    """A tf.function that runs `steps` input steps the way the training step reads its batch."""

    @tf.function
    def consume(iterator: Any, steps: tf.Tensor) -> tf.Tensor:
        total = tf.constant(0, tf.int64)
        for _ in tf.range(steps):
            images_or_indices, labels = next(iterator)
            images = splits.batch_images(images_or_indices) if gather else images_or_indices
            total += tf.cast(tf.reduce_max(images), tf.int64) + tf.cast(labels[0, 0], tf.int64)
        return total

    return consume


def measure(dataset: Any, epochs: int, batch_size: int, steps_per_epoch: int, repeats: int) -> dict[str, Any]:
    splits_by_mode = {mode: make_splits(dataset, batch_size, 500, device=device) for mode, device in MODES.items()}
    splits_by_mode[INDICES_ONLY] = splits_by_mode[ELEMENT_SHUFFLE] = splits_by_mode[list(MODES)[1]]
    state = {}
    for mode, splits in splits_by_mode.items():
        if mode == ELEMENT_SHUFFLE:
            iterator = iter(element_shuffled(splits, epochs))
        else:
            iterator = iter(train_epochs(splits, seed=42, first_epoch=0, epochs=epochs))
        consume = consumer(splits, gather=mode not in (INDICES_ONLY, ELEMENT_SHUFFLE))
        consume(iterator, tf.constant(steps_per_epoch)).numpy()  # Warm-up: tracing, the first prefetch.
        state[mode] = (iterator, consume)
    rates: dict[str, list[float]] = {mode: [] for mode in splits_by_mode}
    for repeat in range(repeats):
        for mode in list(splits_by_mode) if repeat % 2 == 0 else list(splits_by_mode)[::-1]:
            iterator, consume = state[mode]
            started = time.perf_counter()
            consume(iterator, tf.constant(steps_per_epoch)).numpy()
            rates[mode].append(steps_per_epoch * batch_size / (time.perf_counter() - started))
    eager = []
    for _ in range(2):
        started = time.perf_counter()
        for _batch in train_epochs(splits_by_mode[next(iter(MODES))], seed=42, first_epoch=0, epochs=1):
            pass
        eager.append(steps_per_epoch * batch_size / (time.perf_counter() - started))
    off, on = (rates[mode] for mode in MODES)
    load = os.getloadavg()[0]
    return {
        "images_per_second": {mode: statistics.median(values) for mode, values in rates.items()},
        "best_images_per_second": {mode: max(values) for mode, values in rates.items()},
        "on_over_off": statistics.median(b / a for a, b in zip(off, on, strict=True)),
        "stateless_over_element_shuffle": statistics.median(
            b / a for a, b in zip(rates[ELEMENT_SHUFFLE], rates[INDICES_ONLY], strict=True)
        ),
        "eager_iteration_images_per_second": max(eager),
        "rates": rates,
        "load_average": load,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = ["| --data-on-device | images/s in a tf.function (median) | best |", "|---|---:|---:|"]
    for mode, rate in result["images_per_second"].items():
        lines.append(f"| {mode} | {rate:,.0f} | {result['best_images_per_second'][mode]:,.0f} |")
    lines += [
        "",
        f"on / off: {result['on_over_off']:.2f}×; the index stream, stateless / element-by-element shuffle: "
        f"{result['stateless_over_element_shuffle']:.2f}× (medians of neighbouring calls). Eager iteration of the off pipeline "
        f"(`for batch in dataset`): {result['eager_iteration_images_per_second']:,.0f} images/s (best of 2).",
        f"Machine: {result['machine']}; TensorFlow {result['tensorflow']}; {result['date']}; load average "
        f"{result['load_average']:.1f} at the end (other processes share the cores).",
        f"Data: {result['data']}; batch {result['batch_size']}, {result['repeats']} timed epochs per mode.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REAL_DATA)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=6)
    arguments = parser.parse_args()
    dataset = data_module.load(str(arguments.data))
    steps = len(dataset.x_train) // arguments.batch_size
    result = measure(dataset, arguments.repeats + 1, arguments.batch_size, steps, arguments.repeats)
    result.update(
        machine=machine(),
        tensorflow=tf.__version__,
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        data=str(arguments.data),
        batch_size=arguments.batch_size,
        repeats=arguments.repeats,
    )
    save_results("input-capacity", result, markdown)


if __name__ == "__main__":
    main()
