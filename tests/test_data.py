"""The loader reads every supported source identically and rejects broken ones with exit 3."""

from __future__ import annotations

import gzip
import os
import pickle
import signal
import tarfile
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from job import data, stopping
from job.data import Cifar10
from job.errors import DataError, Interrupted
from tests.conftest import RunJob
from tests.helpers import write_tarball


def test_tarball_folder_and_npz_load_identically(tiny_tarball: Path, tiny_data: Cifar10, tmp_path: Path) -> None:
    with tarfile.open(tiny_tarball) as archive:
        archive.extractall(tmp_path, filter="data")
    npz = tmp_path / "cifar.npz"
    np.savez(
        npz, x_train=tiny_data.x_train, y_train=tiny_data.y_train, x_test=tiny_data.x_test, y_test=tiny_data.y_test
    )
    sources = [tiny_tarball, tmp_path / "cifar-10-batches-py", tmp_path, npz]
    loaded = [data.load(str(source)) for source in sources]
    for dataset in loaded:
        np.testing.assert_array_equal(dataset.x_train, tiny_data.x_train)
        np.testing.assert_array_equal(dataset.y_train, tiny_data.y_train)
        np.testing.assert_array_equal(dataset.x_test, tiny_data.x_test)
        np.testing.assert_array_equal(dataset.y_test, tiny_data.y_test)
        assert dataset.x_train.shape == (500, 32, 32, 3) and dataset.y_train.shape == (500, 1)
        assert dataset.x_train.dtype == np.uint8


@pytest.mark.parametrize("mode", ["w:", "w:bz2", "w:xz"])
def test_a_tarball_compressed_otherwise_or_not_at_all_loads_as_the_gzip_one(
    tiny_tarball: Path, tiny_data: Cifar10, tmp_path: Path, mode: Literal["w:", "w:bz2", "w:xz"]
) -> None:
    """gzip is inflated by zlib-ng; every other tar goes through tarfile's own stream reader."""
    other = tmp_path / f"cifar-10-python.tar.{mode[2:] or 'plain'}"
    with tarfile.open(tiny_tarball) as source, tarfile.open(other, mode) as archive:
        for member in source:
            archive.addfile(member, source.extractfile(member) if member.isfile() else None)
    loaded = data.load(str(other))
    np.testing.assert_array_equal(loaded.x_train, tiny_data.x_train)
    np.testing.assert_array_equal(loaded.y_test, tiny_data.y_test)


def test_pickle_rows_are_channel_major(tmp_path: Path) -> None:
    """Row layout per the CIFAR-10 page: 1024 red, then 1024 green, then 1024 blue values."""
    image = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    image[0, 0, 1] = (10, 20, 30)  # Row 0, column 1.
    dataset = Cifar10(np.repeat(image, 5, axis=0), np.zeros((5, 1), int), image, np.zeros((1, 1), int), "x")
    write_tarball(dataset, tmp_path / "one.tar.gz")
    with tarfile.open(tmp_path / "one.tar.gz") as archive:
        stream = archive.extractfile("cifar-10-batches-py/test_batch")
        assert stream is not None
        row = pickle.load(stream, encoding="bytes")[b"data"][0]
    assert (row[1], row[1024 + 1], row[2048 + 1]) == (10, 20, 30)


def test_label_counts_follow_class_names(tiny_data: Cifar10) -> None:
    counts = data.label_counts(tiny_data.y_train)
    assert list(counts) == list(data.CLASS_NAMES)
    assert sum(counts.values()) == 500 and set(counts.values()) == {50}


def _write_pickle_tarball(path: Path, batch: object) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name in [*data.TRAIN_BATCHES, data.TEST_BATCH]:
            payload = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            import io

            archive.addfile(info, io.BytesIO(payload))


def test_truncated_tarball(tiny_tarball: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(tiny_tarball.read_bytes()[: tiny_tarball.stat().st_size // 2])
    with pytest.raises(DataError, match=r"truncated\.tar\.gz"):
        data.load(str(truncated))


def test_a_damaged_byte_anywhere_in_the_tarball_is_a_data_error(tiny_tarball: Path, tmp_path: Path) -> None:
    """Inflate, CRC, tar and pickle errors all end as DataError naming the file, wherever the damage falls:
    damage inside a member's pixels is found by the gzip CRC, which is at the very end of the stream."""
    original = tiny_tarball.read_bytes()
    damaged = tmp_path / "damaged.tar.gz"
    header = original.index(b"\0", 10) + 1 if original[3] & 0x08 else 10  # The fixed part and the file name.
    for position in range(header, len(original), len(original) // 97):  # ~100 places.
        flipped = bytearray(original)
        flipped[position] ^= 0xA5
        damaged.write_bytes(flipped)
        with pytest.raises(DataError, match=r"damaged\.tar\.gz"):
            data.load(str(damaged))


def test_the_gzip_checksum_is_checked_even_when_the_tar_ends_megabytes_before_the_stream(
    tiny_tarball: Path, tmp_path: Path
) -> None:
    """The reader stops at the tar's end-of-archive blocks; the CRC after them must still be read and checked."""
    with gzip.open(tiny_tarball) as stream:
        padded = stream.read() + bytes(3 << 20)  # Zero blocks after the end of the archive are still a valid tar.
    compressed = bytearray(gzip.compress(padded))
    compressed[-8] ^= 0x01  # The CRC-32 of the uncompressed bytes.
    damaged = tmp_path / "damaged-crc.tar.gz"
    damaged.write_bytes(compressed)
    with pytest.raises(DataError, match=r"damaged-crc\.tar\.gz.*CRC"):
        data.load(str(damaged))


def test_pickle_with_wrong_keys(tmp_path: Path) -> None:
    path = tmp_path / "wrong-keys.tar.gz"
    _write_pickle_tarball(path, {b"images": np.zeros((2, 3072), np.uint8), b"targets": [0, 1]})
    with pytest.raises(DataError, match="lacks the b'data' and b'labels' keys"):
        data.load(str(path))


def test_npz_with_wrong_shapes(tmp_path: Path) -> None:
    path = tmp_path / "gray.npz"
    gray = np.zeros((10, 28, 28), np.uint8)
    np.savez(path, x_train=gray, y_train=np.zeros(10), x_test=gray, y_test=np.zeros(10))
    with pytest.raises(DataError, match="expected N×S×S×3"):
        data.load(str(path))


def test_npz_with_labels_out_of_range(tmp_path: Path, tiny_data: Cifar10) -> None:
    path = tmp_path / "labels.npz"
    np.savez(
        path, x_train=tiny_data.x_train, y_train=tiny_data.y_train + 5, x_test=tiny_data.x_test, y_test=tiny_data.y_test
    )
    with pytest.raises(DataError, match="labels outside 0-9"):
        data.load(str(path))


def test_npz_missing_arrays(tmp_path: Path) -> None:
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="lacks y_train, x_test, y_test"):
        data.load(str(path))


def test_broken_data_through_cli_is_exit_3_without_traceback(
    run_job: RunJob, tiny_tarball: Path, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(tiny_tarball.read_bytes()[:5000])
    result = run_job("train", "--data", str(truncated), "--output", str(tmp_path / "runs"), "--run-id", "broken")
    assert result.returncode == 3, result.stderr
    assert "truncated.tar.gz" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "broken" / "summary.json").exists()


def test_sigterm_while_reading_a_batch_is_an_interruption_not_bad_data(
    tiny_tarball: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM landing inside the pickle reader is recorded (job.stopping), the batch finishes, and the load
    stops before the next one with Interrupted (exit 75), not 'not a CIFAR-10 pickle' (exit 3), which
    Kubernetes would not retry."""
    real_load = data.load_plain_pickle
    batches_read = 0

    def load_after_sigterm(*args: object, **kwargs: object) -> object:
        nonlocal batches_read
        batches_read += 1
        os.kill(os.getpid(), signal.SIGTERM)  # Delivered to the handler at the next bytecode.
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    previous = {signum: signal.getsignal(signum) for signum in stopping.STOP_SIGNALS}
    stopping.install()
    monkeypatch.setattr(data, "load_plain_pickle", load_after_sigterm)
    try:
        with pytest.raises(Interrupted, match="received SIGTERM while loading the data"):
            data.load(str(tiny_tarball))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stopping.reset()
    assert batches_read == 1
