"""Start-up: gs:// data is decoded once and its arrays cached beside the download (memory-mapped on the next
start); a cache that is half-written, damaged or crafted is decoded again, never trusted or unpickled; the
threaded tarball reader stops when its caller does. (How fast: bench/startup.py, never a timed test.)"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from job import data
from job.data import Cifar10
from tests.conftest import RunJob
from tests.gcs_fixtures import FakeGcsServer, client_for
from tests.helpers import ROOT, job_env, make_cifar_like, write_tarball

ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def upload(server: FakeGcsServer, bucket: str, tarball: Path, name: str = "data/cifar-10-python.tar.gz") -> str:
    client_for(server).bucket(bucket).blob(name).upload_from_filename(str(tarball))
    return f"gs://{bucket}/{name}"


def decoded_place(cache: Path, bucket: str) -> Path:
    return cache / data.DECODED_FOLDER / bucket / "data" / "cifar-10-python.tar.gz"


def assert_same(loaded: Cifar10, expected: Cifar10) -> None:
    for name in ARRAYS:
        assert np.array_equal(getattr(loaded, name), getattr(expected, name).reshape(getattr(loaded, name).shape))


def test_a_gs_download_is_decoded_once_then_mapped_through_the_cli(
    gcs_server: FakeGcsServer,
    gcs_bucket: str,
    tiny_tarball: Path,
    tmp_path: Path,
    run_job: RunJob,
    without_tensorflow: dict[str, str],
) -> None:
    source = upload(gcs_server, gcs_bucket, tiny_tarball)
    cache = tmp_path / "cache"
    env = {**without_tensorflow, "JOB_CACHE_DIR": str(cache), "STORAGE_EMULATOR_HOST": gcs_server.url}
    first = run_job("inspect", "--data", source, "--output", str(tmp_path / "first"), env=env)
    assert first.returncode == 0, first.stderr
    place = decoded_place(cache, gcs_bucket)
    assert sorted(path.name for path in place.iterdir()) == [data.DECODED_KEY, *sorted(f"{a}.npy" for a in ARRAYS)]
    written = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in place.iterdir()}
    second = run_job("inspect", "--data", source, "--output", str(tmp_path / "second"), env=env)
    assert second.returncode == 0, second.stderr
    assert {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in place.iterdir()} == written
    assert (tmp_path / "first" / "data.json").read_text() == (tmp_path / "second" / "data.json").read_text()
    assert not [path for path in place.parent.iterdir() if path.name.startswith(".")]  # No temporary folders left.


def test_the_second_load_maps_the_cached_arrays(
    gcs_server: FakeGcsServer, gcs_bucket: str, tiny_tarball: Path, tiny_data: Cifar10, tmp_path: Path
) -> None:
    source = upload(gcs_server, gcs_bucket, tiny_tarball)
    decoded = data.load(source, tmp_path / "cache")
    assert not isinstance(decoded.x_train, np.memmap)
    mapped = data.load(source, tmp_path / "cache")
    assert isinstance(mapped.x_train, np.memmap) and not mapped.x_train.flags.writeable
    assert_same(mapped, tiny_data)
    assert mapped.source == decoded.source == source


class Gadget:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return os.system, (f"touch {self.marker}",)


def truncate(place: Path, marker: Path) -> None:
    path = place / "x_train.npy"
    path.write_bytes(path.read_bytes()[:-100])


def grow(place: Path, marker: Path) -> None:
    with (place / "x_test.npy").open("ab") as stream:
        stream.write(b"\0" * 64)


def other_dtype(place: Path, marker: Path) -> None:
    array = np.load(place / "x_train.npy")
    np.save(place / "x_train.npy", array.astype(np.float32))


def pickled_objects(place: Path, marker: Path) -> None:
    """A crafted cache: an object array whose unpickling would run a command."""
    array = np.empty(len(np.load(place / "y_train.npy")), dtype=object)
    array[:] = [Gadget(marker)] * len(array)
    np.save(place / "y_train.npy", array.reshape(-1, 1), allow_pickle=True)


def half_written(place: Path, marker: Path) -> None:
    """Killed before the rename: the arrays are in a temporary folder, the key never written."""
    (place / data.DECODED_KEY).unlink()
    place.rename(place.with_name(f".{place.name}.x.partial"))


def foreign_key(place: Path, marker: Path) -> None:
    (place / data.DECODED_KEY).write_text("{not json")


def other_shapes(place: Path, marker: Path) -> None:
    key = json.loads((place / data.DECODED_KEY).read_text())
    key["shapes"]["x_train"][0] += 1
    (place / data.DECODED_KEY).write_text(json.dumps(key))


DAMAGE = {
    "truncated": truncate,
    "grown": grow,
    "other dtype": other_dtype,
    "pickled objects": pickled_objects,
    "half-written": half_written,
    "unreadable key": foreign_key,
    "shapes unlike the key": other_shapes,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_cache_is_decoded_again_not_trusted(
    damage: str,
    gcs_server: FakeGcsServer,
    gcs_bucket: str,
    tiny_tarball: Path,
    tiny_data: Cifar10,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, cache, marker = upload(gcs_server, gcs_bucket, tiny_tarball), tmp_path / "cache", tmp_path / "ran"
    data.load(source, cache)
    place = decoded_place(cache, gcs_bucket)
    DAMAGE[damage](place, marker)
    with caplog.at_level(logging.WARNING, logger="job.data"):
        reloaded = data.load(source, cache)
    assert not isinstance(reloaded.x_train, np.memmap)  # Decoded from the download, not mapped.
    assert_same(reloaded, tiny_data)
    assert not marker.exists()
    if damage != "half-written":  # A missing cache is not damage: nothing to warn about.
        assert "decoding the download again" in caplog.text
    mapped = data.load(source, cache)  # Rewritten whole: the next start maps it.
    assert isinstance(mapped.x_train, np.memmap)
    assert_same(mapped, tiny_data)


def test_a_changed_object_is_decoded_again(
    gcs_server: FakeGcsServer, gcs_bucket: str, tiny_tarball: Path, tmp_path: Path
) -> None:
    source, cache = upload(gcs_server, gcs_bucket, tiny_tarball), tmp_path / "cache"
    data.load(source, cache)
    other = make_cifar_like(train_size=400, test_size=200, seed=7)
    write_tarball(other, tmp_path / "other.tar.gz")
    upload(gcs_server, gcs_bucket, tmp_path / "other.tar.gz")
    reloaded = data.load(source, cache)
    assert_same(reloaded, other)
    assert isinstance(data.load(source, cache).x_train, np.memmap)


def test_a_bad_pickle_stops_the_load_before_the_next_member(tmp_path: Path) -> None:
    """The first bad batch ends the load: no later member is decoded."""
    dataset = make_cifar_like(train_size=500, test_size=100)
    tarball = tmp_path / "cifar-10-python.tar.gz"
    write_tarball(dataset, tarball)
    real_read = data._read_batch
    calls = 0

    def failing_read(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise data.DataError("the first batch is bad")
        return real_read(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data, "_read_batch", failing_read)
        with pytest.raises(data.DataError, match="the first batch is bad"):
            data.load(str(tarball))
    assert calls == 1


def test_loading_the_trainer_runs_no_garbage_collection_and_leaves_the_collector_on() -> None:
    """TensorFlow's and Keras' import made five full collections (0.3 s of start-up) that found nothing: the
    collector is off while they load, what they built is frozen, and it is on again for training."""
    script = (
        "import gc\n"
        "from job import cli\n"
        "runs = []\n"
        "gc.callbacks.append(lambda phase, info: runs.append(info['generation']) if phase == 'start' else None)\n"
        "cli.import_trainer()\n"
        "print(len(runs), gc.isenabled(), gc.get_freeze_count() > 100_000)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=job_env(), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "True", "True"]
