"""tf.distribute end to end on CPU: MirroredStrategy over two logical CPUs, and MultiWorkerMirroredStrategy
over two worker processes on 127.0.0.1 whose TF_CONFIG the job derives from an Indexed Job's variables.

Each is compared with a single-replica run of the same global batch and seed, in float32 so that the
comparison is tight: the custom loop must match it to rounding, `fit` within noise.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunJob
from tests.helpers import epoch_records, job_env, start_job

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("distribute"),
]  # Under xdist, one worker trains the single-replica reference.

FLAGS = (
    "--epochs", "2", "--batch-size", "50", "--validation-size", "100", "--learning-rate", "0.01",
    "--precision", "float32", "--seed", "5",
)  # fmt: skip


def free_ports(count: int) -> list[int]:
    """Ports free now. TensorFlow's gRPC server refuses a port another socket holds, even with SO_REUSEPORT
    (tried), so they are released before the workers bind them; a process that takes one in between fails
    the test with "Could not start gRPC server"."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def train_args(tarball: Path, output: Path, run_id: str, loop: str, strategy: str) -> list[str]:
    args = ["train", "--data", str(tarball), "--output", str(output), "--run-id", run_id, "--loop", loop]
    return [*args, "--strategy", strategy, *FLAGS]


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, run_job: RunJob, tiny_tarball: Path) -> dict[str, Path]:
    """The reference: one replica, both loops."""
    output = tmp_path_factory.mktemp("single")
    for loop in ("fit", "custom"):
        result = run_job(*train_args(tiny_tarball, output, loop, loop, "none"))
        assert result.returncode == 0, result.stderr
    return {loop: output / loop for loop in ("fit", "custom")}


def assert_same_training(run: Path, reference: Path, tolerance: float) -> None:
    ours, theirs = epoch_records(run), epoch_records(reference)
    assert [record["epoch"] for record in ours] == [1, 2]
    for epoch, other in zip(ours, theirs, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert epoch[key] == pytest.approx(other[key], abs=tolerance), (key, epoch, other)


@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_mirrored_strategy_on_two_logical_cpus_matches_one_replica(
    tmp_path: Path, run_job: RunJob, tiny_tarball: Path, single: dict[str, Path], loop: str
) -> None:
    result = run_job(*train_args(tiny_tarball, tmp_path, "mirrored", loop, "mirrored"), env={"JOB_LOGICAL_CPUS": "2"})
    assert result.returncode == 0, result.stderr
    assert "strategy=mirrored replicas=2" in result.stdout
    config = json.loads((tmp_path / "mirrored" / "config.json").read_text())
    assert config["distribution"] == {"strategy": "mirrored", "replicas": 2, "workers": 1, "worker": 0}
    # Each replica takes half of each global batch and the gradients are averaged over the whole batch,
    # so this is the single-replica computation up to float rounding (an accuracy may flip one image).
    assert_same_training(tmp_path / "mirrored", single[loop], tolerance=0.01)


def start_worker(args: list[str], index: int, addresses: str, staging: Path) -> subprocess.Popen[str]:
    """One pod of the Indexed Job, as a process: the job derives TF_CONFIG from these variables."""
    variables = {
        "JOB_COMPLETION_INDEX": str(index),
        "JOB_WORKERS": "2",
        "JOB_WORKER_ADDRESSES": addresses,
        "JOB_STAGING_DIR": str(staging),
    }
    env = job_env(variables)
    env.pop("TF_CONFIG", None)
    return start_job(args, env)


@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_two_workers_train_one_run_and_only_the_chief_publishes(
    tmp_path: Path, tiny_tarball: Path, single: dict[str, Path], loop: str
) -> None:
    args = train_args(tiny_tarball, tmp_path / "runs", "multi", loop, "auto")  # auto: two workers → multiworker.
    addresses = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    workers = [start_worker(args, index, addresses, tmp_path / "staging") for index in (0, 1)]
    try:
        outputs: list[Any] = [worker.communicate(timeout=600) for worker in workers]
    finally:
        for worker in workers:  # A failed or timed-out test leaves no trainer behind.
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr
    assert "strategy=multiworker replicas=2 workers=2 worker=0" in outputs[0][0]
    assert "worker finished worker=1" in outputs[1][0]

    run = tmp_path / "runs" / "multi"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2
    # Only the chief wrote anything: one run folder, and the worker's private copy is gone.
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["multi"]
    assert list((tmp_path / "staging").rglob("*")) == []  # The worker used it (start_worker), then removed its copy.
    # The same global batches as one worker: the custom loop to rounding, fit within noise (Keras splits
    # and reduces differently under multi-worker).
    assert_same_training(run, single[loop], tolerance=0.01 if loop == "custom" else 0.15)
    reference = json.loads((single[loop] / "summary.json").read_text())
    assert summary["test_accuracy"] == pytest.approx(reference["test_accuracy"], abs=0.1)


def test_a_global_batch_that_does_not_split_over_the_replicas_is_exit_2(
    tmp_path: Path, run_job: RunJob, tiny_tarball: Path
) -> None:
    args = train_args(tiny_tarball, tmp_path, "odd", "fit", "mirrored")
    result = run_job(*args, "--batch-size", "51", env={"JOB_LOGICAL_CPUS": "2"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --batch-size 51 does not split evenly over 2 replicas: use a multiple of 2 (it is the global batch)"
    )
