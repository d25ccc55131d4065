"""The chapter's CIFAR-10 code as written, with one fix (pixels scaled to [0, 1]), for the benchmark.

    .venv/bin/python bench/reference.py --data ../shared/data/cifar10/cifar-10-python.tar.gz --epochs 5

Sequential conv32 → pool → conv64 → pool → dense256 → softmax, SGD 0.1 / momentum 0.9,
`from_tensor_slices(...).shuffle(50000).batch(200)` without prefetch, `model.fit`, validation on
test[:500] and the final test accuracy on test[500:]. As written the chapter feeds 0-255 pixels to
SGD 0.1 and diverges; dividing by 255 is the only change (plus a seed, `--seed 42`, so runs repeat:
unseeded, it still diverged in 1 of 2 runs here). It prints one JSON line per epoch (epoch,
train_seconds, images_per_second, val_accuracy) and a final {"test_accuracy": ...} line, the same
fields bench/benchmark.py reads from the trainer's metrics.jsonl. `--data` is read with the project's
loader (the chapter's `keras.datasets.cifar10.load_data()` returns the same arrays).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Run as a script from anywhere.

import numpy as np
import tensorflow as tf
from tensorflow import keras
from tensorflow.keras import layers

from job import data as data_module

BATCH_SIZE = 200
VALIDATION_SIZE = 500


def build_model() -> keras.Sequential:
    """The chapter's Sequential model, layer for layer."""
    return keras.Sequential(
        [
            keras.Input(shape=(32, 32, 3)),
            layers.Conv2D(32, (3, 3), activation="relu", kernel_initializer="glorot_uniform", padding="same"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu", kernel_initializer="glorot_uniform", padding="same"),
            layers.MaxPooling2D((2, 2)),
            layers.Flatten(),
            layers.Dense(256, activation="relu", kernel_initializer="glorot_uniform"),
            layers.Dense(10, activation="softmax", name="custom_class"),
        ]
    )


def make_datasets(dataset: data_module.Cifar10) -> tuple[tf.data.Dataset, tf.data.Dataset, tf.data.Dataset]:
    """The chapter's pipelines: shuffle(50000).batch(200) for training, batch(500) for the rest, no prefetch."""
    x_train = dataset.x_train.astype(np.float32) / 255.0  # The one fix: the chapter fed raw 0-255 pixels.
    x_test = dataset.x_test.astype(np.float32) / 255.0
    x_val, y_val = x_test[:VALIDATION_SIZE], dataset.y_test[:VALIDATION_SIZE]
    x_test, y_test = x_test[VALIDATION_SIZE:], dataset.y_test[VALIDATION_SIZE:]
    train = tf.data.Dataset.from_tensor_slices((x_train, dataset.y_train)).shuffle(50000).batch(BATCH_SIZE)
    validation = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(500)
    test = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(500)
    return train, validation, test


def compile_model(model: keras.Model) -> None:
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


class EpochTimer(keras.callbacks.Callback):
    """Prints each epoch as a JSON line; train time runs from epoch begin to the last batch (no validation)."""

    def __init__(self, images: int) -> None:
        super().__init__()
        self.images = images
        self.started = self.train_ended = 0.0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.started = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.train_ended = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        seconds = self.train_ended - self.started
        record = {
            "epoch": epoch + 1,
            "train_seconds": seconds,
            "seconds": time.monotonic() - self.started,
            "images_per_second": self.images / seconds,
            "val_accuracy": float((logs or {})["val_accuracy"]),
        }
        print(json.dumps(record), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="cifar-10-python.tar.gz, its folder, or an .npz")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42, help="seeds weights and shuffling (the chapter has none)")
    arguments = parser.parse_args()
    keras.utils.set_random_seed(arguments.seed)  # Unseeded, SGD 0.1/0.9 diverged in 1 of 2 runs here.
    dataset = data_module.load(arguments.data)
    train, validation, test = make_datasets(dataset)
    model = build_model()
    compile_model(model)
    images = len(dataset.x_train) // BATCH_SIZE * BATCH_SIZE  # 250 full batches (the last is full too here).
    model.fit(train, epochs=arguments.epochs, validation_data=validation, callbacks=[EpochTimer(images)], verbose=0)
    _, test_accuracy = model.evaluate(test, verbose=0)
    print(json.dumps({"test_accuracy": float(test_accuracy)}), flush=True)


if __name__ == "__main__":
    main()
