"""Data is untrusted: a crafted CIFAR-10 pickle cannot run code (issue: a batch whose __reduce__ called os.system
ran the command before the job noticed the missing keys). Only plain data and numpy arrays unpickle."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from job import data
from tests.conftest import RunJob

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
