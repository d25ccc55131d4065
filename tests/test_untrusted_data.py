"""Data is untrusted: a crafted CIFAR-10 pickle cannot run code (issue: a batch whose __reduce__ called os.system
ran the command before the job noticed the missing keys). Only plain data and numpy arrays unpickle."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.cloud import storage

from job import data, fetch, untrusted
from job.errors import DataError, OutputError
from job.gcs import GcsStore
from tests.conftest import RunJob
from tests.gcs_fixtures import FakeGcsServer, client_for

SHARED_TARBALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "cifar-10-python.tar.gz"


class Gadget:
    """Pickles as a call of `function(*args)`, the way an attacker's object would."""

    def __init__(self, function: Any, *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.function, self.args


def tarball_with_batch(path: Path, payload: bytes) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo(f"{data.FOLDER_NAME}/data_batch_1")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    return path


def gadgets(marker: Path) -> dict[str, tuple[Any, str]]:
    """Each attack: the object to pickle in place of a batch, and the global the refusal must name."""
    return {
        "os.system": (Gadget(os.system, f"touch {marker}"), "posix.system"),
        "subprocess.Popen": (Gadget(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
        "builtins.eval": (Gadget(eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
        "numpy.fromfile": (Gadget(np.fromfile, "/etc/hostname"), "numpy.fromfile"),
    }


@pytest.mark.parametrize("attack", ["os.system", "subprocess.Popen", "builtins.eval", "numpy.fromfile"])
def test_a_pickle_that_names_code_is_refused_and_nothing_it_names_runs(
    attack: str, tmp_path: Path, run_job: RunJob, without_tensorflow: dict[str, str]
) -> None:
    marker = tmp_path / "ran"
    gadget, named = gadgets(marker)[attack]
    batch = {b"data": gadget, b"labels": [0]}
    tarball = tarball_with_batch(tmp_path / "cifar-10-python.tar.gz", pickle.dumps(batch, protocol=4))
    result = run_job("train", "--data", str(tarball), "--output", str(tmp_path / "runs"), env=without_tensorflow)
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines() == [
        f"error: {tarball}:data_batch_1 is not a plain CIFAR-10 pickle: it references {named}, which could run "
        "code; use the official cifar-10-python.tar.gz or an .npz"
    ]
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()


def test_inspect_refuses_it_too(tmp_path: Path, run_job: RunJob) -> None:
    marker = tmp_path / "ran"
    batch = {b"data": Gadget(os.system, f"touch {marker}"), b"labels": [0]}
    tarball = tarball_with_batch(tmp_path / "cifar-10-python.tar.gz", pickle.dumps(batch, protocol=4))
    result = run_job("inspect", "--data", str(tarball), "--output", str(tmp_path / "pictures"))
    assert result.returncode == 3 and "is not a plain CIFAR-10 pickle" in result.stderr, result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("place", ["folder", "bucket"])
def test_a_pickle_that_names_code_in_a_folder_or_a_bucket_does_not_run(
    place: str,
    gcs_server: FakeGcsServer,
    gcs_bucket: str,
    tiny_tarball: Path,
    tmp_path: Path,
    run_job: RunJob,
    without_tensorflow: dict[str, str],
) -> None:
    marker = tmp_path / "ran"
    payload = pickle.dumps({b"data": Gadget(os.system, f"touch {marker}"), b"labels": [0]}, protocol=2)
    if place == "folder":
        folder = tmp_path / data.FOLDER_NAME
        with tarfile.open(tiny_tarball) as archive:
            archive.extractall(tmp_path, filter="data")
        (folder / "data_batch_1").write_bytes(payload)
        source, origin = str(folder), f"{folder}:data_batch_1"
    else:
        bucket = client_for(gcs_server).bucket(gcs_bucket)
        upload_batches(bucket, "data/cifar-10-batches-py", tiny_tarball)
        bucket.blob("data/cifar-10-batches-py/data_batch_1").upload_from_string(payload)
        source = f"gs://{gcs_bucket}/data/cifar-10-batches-py"
        origin = f"{tmp_path}/cache/gcs/{gcs_bucket}/data/cifar-10-batches-py:data_batch_1"
    env = {**without_tensorflow, "JOB_CACHE_DIR": str(tmp_path / "cache"), "STORAGE_EMULATOR_HOST": gcs_server.url}
    for command in ("train", "inspect"):
        result = run_job(command, "--data", source, "--output", str(tmp_path / command), env=env)
        assert result.returncode == 3, result.stderr
        assert result.stderr.splitlines() == [
            f"error: {origin} is not a plain CIFAR-10 pickle: it references posix.system, which could run code; "
            "use the official cifar-10-python.tar.gz or an .npz"
        ]
        assert not marker.exists()
        assert not (tmp_path / command).exists()


@pytest.mark.skipif(not SHARED_TARBALL.exists(), reason=f"the real CIFAR-10 is not at {SHARED_TARBALL}")
def test_the_real_cifar10_pickles_load_identically() -> None:
    """All six batches and batches.meta of the official tarball, through the restricted unpickler and pickle."""
    with tarfile.open(SHARED_TARBALL) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and Path(m.name).name != "readme.html"]
        assert len(members) == 7, [m.name for m in members]
        for member in members:
            payload = archive.extractfile(member).read()  # type: ignore[union-attr]
            restricted = data.load_plain_pickle(io.BytesIO(payload), member.name)
            trusted = pickle.loads(payload, encoding="bytes")
            assert restricted.keys() == trusted.keys()
            for key, value in trusted.items():
                if isinstance(value, np.ndarray):
                    assert np.array_equal(restricted[key], value) and restricted[key].dtype == value.dtype
                else:
                    assert restricted[key] == value, (member.name, key)


# --- Names from a bucket never choose where we write ----------------------------------------------------------

ESCAPES = {
    "dot-dot": "data/cifar-10-batches-py/f/../../../../../../../{outside}/ESCAPED",
    "empty-segment": "data/cifar-10-batches-py//{outside}/ESCAPED",
    "dot": "data/cifar-10-batches-py/./data_batch_1",
}


def upload_batches(bucket: storage.Bucket, folder: str, tiny_tarball: Path) -> None:
    """The tiny dataset's batch files as objects of a gs:// data folder."""
    with tarfile.open(tiny_tarball) as archive:
        for member in archive.getmembers():
            if member.isfile():
                payload = archive.extractfile(member).read()  # type: ignore[union-attr]
                bucket.blob(f"{folder}/{Path(member.name).name}").upload_from_string(payload)


@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_a_data_object_whose_name_leaves_the_cache_is_refused_before_any_byte_is_written(
    escape: str,
    gcs_server: FakeGcsServer,
    gcs_bucket: str,
    tiny_tarball: Path,
    tmp_path: Path,
    run_job: RunJob,
    without_tensorflow: dict[str, str],
) -> None:
    bucket = client_for(gcs_server).bucket(gcs_bucket)
    upload_batches(bucket, "data/cifar-10-batches-py", tiny_tarball)
    outside = tmp_path / "outside"
    name = ESCAPES[escape].format(outside=str(outside).lstrip("/"))
    bucket.blob(name).upload_from_string(b"planted")
    cache = tmp_path / "cache"
    url = f"gs://{gcs_bucket}/data/cifar-10-batches-py"
    env = {**without_tensorflow, "JOB_CACHE_DIR": str(cache), "STORAGE_EMULATOR_HOST": gcs_server.url}

    for command in ("train", "inspect"):
        result = run_job(command, "--data", url, "--output", str(tmp_path / command), env=env)
        assert result.returncode == 3, result.stderr
        assert result.stderr.splitlines() == [
            f"error: data source {url} holds an object named {name!r}, which is not a plain relative path (it has "
            "an empty, '.' or '..' segment, or starts with '/'): refusing to download anything from it; remove or "
            "rename that object"
        ]
        assert not outside.exists()
        assert not cache.exists(), sorted(cache.rglob("*"))  # Checked before the first download.
        assert not (tmp_path / command).exists()


def test_a_data_object_that_is_also_a_folder_is_refused(
    gcs_server: FakeGcsServer, gcs_bucket: str, tiny_tarball: Path, tmp_path: Path
) -> None:
    bucket = client_for(gcs_server).bucket(gcs_bucket)
    upload_batches(bucket, "data/cifar-10-batches-py", tiny_tarball)
    bucket.blob("data/cifar-10-batches-py/data_batch_1/shadow").upload_from_string(b"x")
    with pytest.raises(DataError, match="holds both an object 'data/cifar-10-batches-py/data_batch_1' and objects"):
        fetch.fetch_data(f"gs://{gcs_bucket}/data/cifar-10-batches-py", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_a_cache_folder_linked_outside_is_not_followed(
    gcs_server: FakeGcsServer, gcs_bucket: str, tiny_tarball: Path, tmp_path: Path
) -> None:
    """A symlink planted in the cache (by anything) does not carry a download outside it."""
    bucket = client_for(gcs_server).bucket(gcs_bucket)
    upload_batches(bucket, "data/cifar-10-batches-py", tiny_tarball)
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    outside.mkdir()
    (cache / "gcs" / gcs_bucket / "data").mkdir(parents=True)
    (cache / "gcs" / gcs_bucket / "data" / "cifar-10-batches-py").symlink_to(outside)
    with pytest.raises(DataError, match="outside"):
        fetch.fetch_data(f"gs://{gcs_bucket}/data/cifar-10-batches-py", cache)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("escape", ["../../../outside/ESCAPED", "/outside/ESCAPED", "a/./b"])
def test_a_run_object_whose_name_leaves_the_staging_folder_is_refused(
    escape: str, gcs_bucket: str, tmp_path: Path
) -> None:
    """Resuming a gs:// run downloads its checkpoints: a crafted object name there cannot write outside."""
    store = GcsStore(gcs_bucket, "runs/r1")
    store.write_bytes("checkpoints/ckpt-1.index", b"index")
    store.write_bytes(f"checkpoints/{escape}", b"planted")
    target = tmp_path / "staging" / "checkpoints"
    with pytest.raises(OutputError) as raised:
        store.download_tree("checkpoints", target)
    assert raised.value.exit_code == 4
    assert f"holds an object named {escape!r}" in str(raised.value)
    assert not (tmp_path / "outside").exists() and not target.exists()


# --- Sizes are bounded before anything is inflated --------------------------------------------------------------


class Zeros(io.RawIOBase):
    """size zero bytes, produced as read (a bomb's payload without holding it)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def test_a_tar_member_bomb_is_refused_before_it_is_inflated(
    tmp_path: Path, run_job: RunJob, without_tensorflow: dict[str, str]
) -> None:
    declared = untrusted.MAX_PICKLE_BYTES + 1
    bomb = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(bomb, "w:gz", compresslevel=1) as archive:
        info = tarfile.TarInfo(f"{data.FOLDER_NAME}/data_batch_1")
        info.size = declared
        archive.addfile(info, Zeros(declared))
    assert bomb.stat().st_size < declared // 200  # About a megabyte that would inflate to 256 MiB.
    result = run_job("train", "--data", str(bomb), "--output", str(tmp_path / "runs"), env=without_tensorflow)
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines() == [
        f"error: {bomb}:{data.FOLDER_NAME}/data_batch_1 is 268,435,457 bytes, more than the 256 MiB any CIFAR-10 file "
        "needs: it is not CIFAR-10 data (or it is built to exhaust memory); use the official cifar-10-python.tar.gz"
    ]


def test_a_tarball_of_countless_entries_is_refused(tmp_path: Path) -> None:
    tarball = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        for index in range(untrusted.MAX_DATA_ENTRIES + 1):
            archive.addfile(tarfile.TarInfo(f"empty-{index}"), io.BytesIO())
    with pytest.raises(DataError, match=f"has more than {untrusted.MAX_DATA_ENTRIES} entries"):
        data.load(str(tarball))


def test_an_oversized_batch_file_in_a_folder_is_refused_unread(tmp_path: Path) -> None:
    folder = tmp_path / data.FOLDER_NAME
    folder.mkdir()
    with (folder / "data_batch_1").open("wb") as sparse:
        sparse.truncate(untrusted.MAX_PICKLE_BYTES + 1)  # Sparse: no disk used, and no byte of it is read.
    with pytest.raises(DataError, match="data_batch_1 is 268,435,457 bytes, more than the 256 MiB"):
        data.load(str(folder))


def test_an_npz_array_that_declares_more_than_the_bound_is_refused_before_it_is_inflated(
    tmp_path: Path, run_job: RunJob, without_tensorflow: dict[str, str]
) -> None:
    """The .npy header promises 3.7 GB; the member holds a few bytes, so reading would only find out too late."""
    npz = tmp_path / "cifar10.npz"
    with zipfile.ZipFile(npz, "w", zipfile.ZIP_DEFLATED) as archive:
        shapes = {"x_train": (300_000, 64, 64, 3), "y_train": (10,), "x_test": (10, 64, 64, 3), "y_test": (10,)}
        for key, shape in shapes.items():
            with archive.open(f"{key}.npy", "w") as member:
                header = {"descr": "|u1", "fortran_order": False, "shape": shape}
                np.lib.format.write_array_header_1_0(member, header)
                member.write(b"\0" * 16)
    result = run_job("train", "--data", str(npz), "--output", str(tmp_path / "runs"), env=without_tensorflow)
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines() == [
        f"error: {npz}:x_train is 3,686,400,000 bytes, more than the 2,048 MiB any CIFAR-10 file needs: it is not CIFAR-10 "
        "data (or it is built to exhaust memory); use the official cifar-10-python.tar.gz"
    ]


def test_a_data_object_larger_than_the_bound_is_refused_before_download(
    gcs_server: FakeGcsServer, gcs_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound is 2 GiB; lowered here so the object need not be that large. The size comes from the metadata."""
    monkeypatch.setattr(fetch, "MAX_DATA_BYTES", 1000)
    client_for(gcs_server).bucket(gcs_bucket).blob("data/cifar.tar.gz").upload_from_string(bytes(1001))
    with pytest.raises(DataError, match=f"gs://{gcs_bucket}/data/cifar.tar.gz is 1,001 bytes, more than the 1,000"):
        fetch.fetch_data(f"gs://{gcs_bucket}/data/cifar.tar.gz", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
