"""tf.data pipelines for the chapter's splits: train shuffled each epoch, validation = test[:N], test = test[N:].

The chapter shuffles 50,000 decoded images through a 50,000-element buffer one element at a time. Here the
images stay in one uint8 tensor in memory and each epoch shuffles the *indices* (a full-set shuffle, the
same uniform permutation), then gathers whole batches: one vectorised copy per batch instead of 200
element hops, so the input pipeline never starves the training step. Each epoch's order comes from
(seed, epoch) alone, so a resumed run sees exactly the batches an uninterrupted run would have seen.

With the training set on the device (--data-on-device, `make_splits(..., device=...)`), the uint8 images are
uploaded once (150 MB) and tf.data yields only each batch's indices and labels; the training step gathers
the images where it runs (`Splits.batch_images`), as the fastest CIFAR-10 trainers do on a GPU. The indices,
and so the images and every number trained, are the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from job.data import TENSOR_ALIGNMENT, Cifar10

EVAL_BATCH_SIZE = 500  # The chapter batches validation and test by 500.


@dataclass(frozen=True)
class Splits:
    train_images: tf.Tensor
    train_labels: tf.Tensor
    validation: tf.data.Dataset
    test: tf.data.Dataset
    train_size: int
    validation_size: int
    test_size: int
    batch_size: int
    device: str | None = None  # Where train_images lives when the step gathers its batches (None: tf.data does).

    @property
    def on_device(self) -> bool:
        return self.device is not None

    def batch_images(self, images_or_indices: tf.Tensor) -> tf.Tensor:
        """In the training step: a batch's images, gathered from the device copy when the batch holds indices."""
        if self.on_device and images_or_indices.shape.rank == 1:
            return tf.gather(self.train_images, images_or_indices)
        return images_or_indices

    @property
    def steps_per_epoch(self) -> int:
        return self.train_size // self.batch_size  # The chapter's 50,000 // 200 = 250.


def make_splits(data: Cifar10, batch_size: int, validation_size: int, device: str | None = None) -> Splits:
    """Validation = test[:N], test = test[N:] (sizes checked by job.preflight), and the training tensors.

    `device` ("/GPU:0", "/CPU:0"): keep the uint8 training images there, for the step to gather its batches.
    """
    x_val, y_val = data.x_test[:validation_size], data.y_test[:validation_size]
    x_test, y_test = data.x_test[validation_size:], data.y_test[validation_size:]
    train_images = host_tensor(data.x_train)
    if device is not None:
        with tf.device(device):
            train_images = tf.identity(train_images)  # One upload; on the CPU, the same buffer.
    return Splits(
        train_images=train_images,
        train_labels=tf.constant(data.y_train),
        validation=_evaluation_dataset(x_val, y_val),
        test=_evaluation_dataset(x_test, y_test),
        train_size=len(data.x_train),
        validation_size=len(x_val),
        test_size=len(x_test),
        batch_size=batch_size,
        device=device,
    )


def host_tensor(array: np.ndarray) -> tf.Tensor:
    """The array as a CPU tensor: its own memory when TensorFlow may use it as it is (writable, contiguous,
    aligned, as job.data decodes the training images), saving a 150 MB copy and 0.15-0.3 s of start-up; a copy
    otherwise (the read-only memory map of a cached gs:// download, an .npz). The array must not change after."""
    usable = array.flags.c_contiguous and array.flags.writeable and array.ctypes.data % TENSOR_ALIGNMENT == 0
    return tf.experimental.dlpack.from_dlpack(array.__dlpack__()) if usable else tf.constant(array)


def _evaluation_dataset(images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(EVAL_BATCH_SIZE)
    return dataset.cache().prefetch(tf.data.AUTOTUNE).with_options(dataset_options())


def epoch_order(train_size: int, seed: int | tf.Tensor, epoch: int | tf.Tensor) -> tf.Tensor:
    """Epoch `epoch`'s permutation of the training indices: one op, from (seed, epoch) alone.

    A stateless shuffle of the whole index range (the same full-set uniform shuffle as the chapter's
    shuffle(50000)) costs about 2 ms; tf.data's element-by-element shuffle of the indices capped the input at
    ~500,000 images/s on this machine, below what a GPU consumes (docs/performance.md).
    """
    seeds = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(train_size, dtype=tf.int64), seed=seeds)


def dataset_options() -> tf.data.Options:
    """Multi-worker: every worker builds the same batches and keeps its slice of each (there are no files to
    shard by), so the global batch is the one a single worker would train on. No autotuning: deleting an iterator
    waited for its model thread (2-2.5 s at the end of most `fit`s), and prefetch buffers tune without it."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.autotune.enabled = False
    return options


def train_epochs(splits: Splits, seed: int, first_epoch: int, epochs: int, first_step: int = 0) -> tf.data.Dataset:
    """Epochs first_epoch..epochs-1 (0-based) of shuffled, full batches, back to back (the first one from
    `first_step`), for one iterator per run. Each element is (images, labels), or (indices, labels) with the
    training set on the device.

    One iterator for the whole run, not one per epoch: a fresh iterator per epoch re-spawned the
    prefetch threads and made some epochs ~30% slower on 2 cores (docs/performance.md). Each epoch's
    order is drawn when the iterator reaches it, so a long run holds one epoch of indices at a time.
    """
    images, labels = splits.train_images, splits.train_labels
    steps, size = splits.steps_per_epoch, splits.batch_size

    # tf.data would run these through AutoGraph, whose source transformation cost 0.3 s of the time to the first
    # step; they have no Python control flow on tensors, so they are traced as they are.
    @tf.autograph.experimental.do_not_convert
    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        order = epoch_order(splits.train_size, seed, epoch)[: steps * size]  # drop_remainder, as batch() did.
        skip = tf.where(epoch == first_epoch, tf.constant(first_step, tf.int64), tf.constant(0, tf.int64))
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order, [steps, size])).skip(skip)

    batches = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_batches)
    if splits.on_device:  # The step gathers the images (Splits.batch_images); the labels are 1.6 kB a batch.
        gather = tf.autograph.experimental.do_not_convert(lambda index: (index, tf.gather(labels, index)))
    else:
        gather = tf.autograph.experimental.do_not_convert(
            lambda index: (tf.gather(images, index), tf.gather(labels, index))
        )
    batches = batches.map(gather)
    return batches.prefetch(tf.data.AUTOTUNE).with_options(dataset_options())
