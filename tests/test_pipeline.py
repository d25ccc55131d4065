"""The input pipeline: each epoch a full shuffle of the training set, reproducible from (seed, epoch), resumable
mid-epoch on exactly the batches an uninterrupted run sees, and the chapter's validation/test split."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from job import data
from job.data import Cifar10
from job.pipeline import Splits, host_tensor, make_splits, train_epochs

T = TypeVar("T")
TRAIN, TEST, BATCH, VALIDATION = 130, 40, 20, 15  # 6 full batches per epoch; 10 images dropped.


def numbered_data() -> Cifar10:
    """Image i carries its index in its first two pixels, so a batch tells which examples it holds."""

    def images(count: int, offset: int) -> np.ndarray:
        pixels = np.zeros((count, 8, 8, 3), np.uint8)
        index = np.arange(offset, offset + count)
        pixels[:, 0, 0, 0], pixels[:, 0, 0, 1] = index % 256, index // 256
        return pixels

    labels = (np.arange(TRAIN + TEST) % 10).astype(np.uint8).reshape(-1, 1)
    return Cifar10(images(TRAIN, 0), labels[:TRAIN], images(TEST, TRAIN), labels[TRAIN:], "numbered")


@pytest.fixture(scope="module")
def splits() -> Splits:
    return make_splits(numbered_data(), BATCH, VALIDATION)


def train_epoch(splits: Splits, seed: int, epoch: int) -> Any:
    return train_epochs(splits, seed, epoch, epoch + 1)


def indices(images: np.ndarray) -> list[int]:
    return [int(pixel[0]) + 256 * int(pixel[1]) for pixel in images[:, 0, 0, :2]]


def batches(dataset: object) -> list[list[int]]:
    return [indices(images.numpy()) for images, _ in dataset]  # type: ignore[attr-defined]


def flat(lists: Iterable[list[T]]) -> list[T]:
    return list(itertools.chain.from_iterable(lists))


def test_an_epoch_is_full_batches_of_distinct_examples_with_their_own_labels(splits: Splits) -> None:
    epoch = list(train_epoch(splits, seed=7, epoch=0))
    assert splits.steps_per_epoch == len(epoch) == TRAIN // BATCH
    seen = [index for images, _ in epoch for index in indices(images.numpy())]
    assert len(seen) == len(set(seen)) == TRAIN // BATCH * BATCH
    for images, labels in epoch:
        assert images.dtype.name == "uint8"  # Scaled by the model's Rescaling layer, not here.
        assert [int(label) for label in labels.numpy()[:, 0]] == [index % 10 for index in indices(images.numpy())]


def test_the_order_depends_on_seed_and_epoch_only(splits: Splits) -> None:
    first = batches(train_epoch(splits, seed=7, epoch=0))
    assert batches(train_epoch(splits, seed=7, epoch=0)) == first
    assert batches(train_epoch(splits, seed=7, epoch=1)) != first
    assert batches(train_epoch(splits, seed=8, epoch=0)) != first


def test_the_run_dataset_is_the_epochs_back_to_back_and_resumes_mid_epoch(splits: Splits) -> None:
    per_epoch = [batches(train_epoch(splits, seed=3, epoch=epoch)) for epoch in range(4)]
    assert batches(train_epochs(splits, seed=3, first_epoch=0, epochs=4)) == flat(per_epoch)
    resumed = batches(train_epochs(splits, seed=3, first_epoch=1, epochs=4, first_step=4))
    assert resumed == per_epoch[1][4:] + per_epoch[2] + per_epoch[3]


def test_validation_is_the_head_of_the_test_set_and_test_the_rest(splits: Splits) -> None:
    validation = flat(batches(splits.validation))
    test = flat(batches(splits.test))
    assert validation == list(range(TRAIN, TRAIN + VALIDATION))
    assert test == list(range(TRAIN + VALIDATION, TRAIN + TEST))
    assert (splits.validation_size, splits.test_size) == (VALIDATION, TEST - VALIDATION)


def test_decoded_training_images_become_the_tensor_without_a_copy(tiny_tarball: Path, tmp_path: Path) -> None:
    """The 150 MB training set is not copied into TensorFlow; arrays it cannot use as they are are copied."""
    decoded = data.load(str(tiny_tarball)).x_train
    shared = host_tensor(decoded)
    decoded[0, 0, 0, 0] ^= 0xFF
    assert int(shared[0, 0, 0, 0]) == int(decoded[0, 0, 0, 0])  # One buffer: the change shows in the tensor.

    unaligned = decoded.reshape(-1)[1 : 1 + decoded[1:].size].reshape(decoded[1:].shape)  # 1 byte past.
    copied = host_tensor(unaligned)
    unaligned[0, 0, 0, 0] ^= 0xFF
    assert int(copied[0, 0, 0, 0]) != int(unaligned[0, 0, 0, 0])  # Its own copy.

    np.save(tmp_path / "images.npy", decoded)
    read_only = np.load(tmp_path / "images.npy", mmap_mode="r")  # A cached gs:// download.
    np.testing.assert_array_equal(host_tensor(read_only).numpy(), read_only)


def test_no_pipeline_starts_the_autotuning_thread(splits: Splits) -> None:
    """Deleting an iterator waited for tf.data's autotuning model thread: 2-2.5 s at the end of most `fit` calls
    (py-spy: ~LogicalThreadWrapper under RootDataset::Iterator). Every dataset of a run is built without it."""
    for dataset in (train_epochs(splits, 1, 0, 2), splits.validation, splits.test):
        assert dataset.options().autotune.enabled is False
