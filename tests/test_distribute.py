"""tf.distribute end to end on CPU: MirroredStrategy over two logical CPUs, and MultiWorkerMirroredStrategy
over two worker processes on 127.0.0.1 whose TF_CONFIG the job derives from an Indexed Job's variables.

Each is compared with a single-replica run of the same global batch and seed: the session's shared symbolic
runs (tests/conftest.py `trained_runs`, float32), so the comparison is tight: the custom loop must match to
rounding, `fit` within noise. A multi-worker run that loses a worker exits 75 and resumes when restarted.
"""

from __future__ import annotations

import json
import random
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from job.gcs import GcsStore
from tests.conftest import RunJob
from tests.helpers import TINY_TRAIN, JobProcess, epoch_records

pytestmark = pytest.mark.slow

FLAGS = ("--precision", "float32", "--seed", "7", *TINY_TRAIN)  # As the shared runs were trained.
# A worker that lost its peer notices within the coordination service's heartbeat timeout (about 10 s measured).
PEER_LOSS_SECONDS = 60


def free_ports(count: int) -> list[int]:
    """Ports that nothing can take between this check and the workers' bind.

    TensorFlow's gRPC server refuses a port another socket holds, even with SO_REUSEPORT (tried), so the port
    cannot be held for it. Instead it comes from below the kernel's ephemeral range: no bind to port 0 and no
    outgoing connection is ever given one of those, so only a process that asks for that very port could.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports: list[int] = []
    for port in random.SystemRandom().sample(range(10_000, low), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # Someone listens there.
        ports.append(port)
        if len(ports) == count:
            return ports
    raise AssertionError(f"no {count} free ports below the ephemeral range (from {low})")


def train_args(tarball: Path, output: Path, run_id: str, loop: str, strategy: str) -> list[str]:
    args = ["train", "--data", str(tarball), "--output", str(output), "--run-id", run_id, "--loop", loop]
    return [*args, "--strategy", strategy, *FLAGS]


@pytest.fixture(scope="module")
def single(trained_runs: dict[str, Path]) -> dict[str, Path]:
    """The reference: one replica, both loops, the same flags (the session's shared symbolic runs)."""
    for loop in ("fit", "custom"):
        config = json.loads((trained_runs[f"symbolic-{loop}"] / "config.json").read_text())
        assert config["distribution"]["replicas"] == 1 and (config["seed"], config["batch_size"]) == (7, 50)
    return {loop: trained_runs[f"symbolic-{loop}"] for loop in ("fit", "custom")}


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


Workers = list[JobProcess]


@pytest.fixture
def start_workers(processes: Any) -> Any:
    """Start a two-worker run: each worker a process, as a pod of the Indexed Job whose variables the job
    derives TF_CONFIG from. Any worker still running when the test ends (it failed) is killed."""

    def start(args: list[str], staging: Path) -> Workers:
        addresses = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
        workers = []
        for index in (0, 1):
            variables = {
                "JOB_COMPLETION_INDEX": str(index),
                "JOB_WORKERS": "2",
                "JOB_WORKER_ADDRESSES": addresses,
                "JOB_STAGING_DIR": str(staging),
                "TF_CONFIG": "",  # Unset: derived from the variables above.
            }
            workers.append(processes(args, variables))
        return workers

    return start


def finish(workers: Workers) -> list[tuple[str, str]]:
    """Wait for every worker; each must exit 0. Their (stdout, stderr)."""
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr
    assert "strategy=multiworker replicas=2 workers=2 worker=0" in outputs[0][0]
    assert "worker finished worker=1" in outputs[1][0]
    return outputs


def test_two_workers_train_one_run_and_only_the_chief_publishes(
    tmp_path: Path, tiny_tarball: Path, single: dict[str, Path], start_workers: Any
) -> None:
    args = train_args(tiny_tarball, tmp_path / "runs", "multi", "fit", "auto")  # auto: two workers → multiworker.
    finish(start_workers(args, tmp_path / "staging"))

    run = tmp_path / "runs" / "multi"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2
    # Only the chief wrote anything: one run folder, and the worker's private copy is gone.
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["multi"]
    assert list((tmp_path / "staging").rglob("*")) == []  # The worker used it (start_worker), then removed its copy.
    # The same global batches as one worker, within noise: Keras splits and reduces differently under
    # multi-worker.
    assert_same_training(run, single["fit"], tolerance=0.15)
    reference = json.loads((single["fit"] / "summary.json").read_text())
    assert summary["test_accuracy"] == pytest.approx(reference["test_accuracy"], abs=0.1)


def test_a_worker_that_loses_its_peer_exits_75_and_both_resume_to_the_same_training_in_the_bucket(
    tmp_path: Path, tiny_tarball: Path, single: dict[str, Path], start_workers: Any, gcs_bucket: str
) -> None:
    """kill -9 worker 1 once the chief has finished epoch 1 (a preempted node): the chief, in the collectives
    of epoch 2, exits 75 within the heartbeat timeout, with one line. Both started again resume from the
    bucket's epoch-1 checkpoint and finish with the single-replica run's epochs (the custom loop: to rounding)."""
    args = train_args(tiny_tarball, tmp_path, "multi", "custom", "auto")
    args[args.index("--output") + 1] = f"gs://{gcs_bucket}/runs"
    chief, worker = start_workers(args, tmp_path / "staging-1")
    assert chief.stdout is not None
    for line in chief.stdout:  # The chief's log, as it is printed.
        if line.startswith("epoch 1/2 loss "):
            worker.kill()
            killed = time.monotonic()
            break
    else:
        raise AssertionError(f"the chief ended before epoch 1 ({chief.wait()}): {chief.communicate()[1]}")
    _, stderr = chief.communicate(timeout=PEER_LOSS_SECONDS + 60)
    assert time.monotonic() - killed < PEER_LOSS_SECONDS
    assert chief.returncode == 75, stderr
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"error: lost contact with another worker \((Unavailable|Aborted|Cancelled)Error: .+\): .*", last
    )
    assert "Traceback" not in stderr
    store = GcsStore(gcs_bucket, "runs/multi")
    assert store.read_bytes("summary.json") is None

    finish(start_workers(args, tmp_path / "staging-2"))  # A new pod each: nothing local survives.
    config = json.loads(store.read_bytes("config.json") or b"{}")
    assert [(r["epoch"], r["step"]) for r in config["resumed"]] == [(2, 0)]  # From the end of epoch 1.
    assert config["attempts"] == 2
    records = [json.loads(line) for line in (store.read_bytes("metrics.jsonl") or b"").decode().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for ours, theirs in zip(epochs, epoch_records(single["custom"]), strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert ours[key] == pytest.approx(theirs[key], abs=0.01), (key, ours, theirs)
    assert json.loads(store.read_bytes("summary.json") or b"{}")["epochs"] == 2
    assert sorted({key.split("/")[0] for key in store.list_keys("")}) == sorted(
        {path.name.split("/")[0] for path in single["custom"].iterdir() if not path.name.startswith(".")}
    )  # The chief published the whole run; the worker nothing.


def test_a_global_batch_that_does_not_split_over_the_replicas_is_exit_2(
    tmp_path: Path, run_job: RunJob, tiny_tarball: Path
) -> None:
    args = train_args(tiny_tarball, tmp_path, "odd", "fit", "mirrored")
    result = run_job(*args, "--batch-size", "51", env={"JOB_LOGICAL_CPUS": "2"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --batch-size 51 does not split evenly over 2 replicas: use a multiple of 2 (it is the global batch)"
    )


def test_the_multiworker_fix_refuses_a_keras_release_it_was_not_written_for(monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    from job import distribute
    from job.errors import UsageError

    monkeypatch.setattr(keras, "version", lambda: "3.99.0")
    with pytest.raises(UsageError, match=r"^Keras 3\.99\.0 is installed, but .* written for 3\.15\.1: install"):
        distribute.apply_keras_multiworker_fix()


def test_building_fit_from_zeros_changes_the_model_prepared_and_not_keras() -> None:
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    from job import distribute, models

    keras_build = TensorFlowTrainer._maybe_symbolic_build
    prepared, other = models.build_sequential(), models.build_sequential()
    distribute.prepare_fit(prepared, 32)
    assert TensorFlowTrainer._maybe_symbolic_build is keras_build
    assert getattr(other._maybe_symbolic_build, "__func__", None) is keras_build
    assert getattr(prepared._maybe_symbolic_build, "__func__", None) is not keras_build
