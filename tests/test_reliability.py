"""Preemption safety: kill -9, SIGTERM and Ctrl-C at points chosen in training steps, then the same command finishes.

Each test proves the rerun *resumed*, which a fixed seed would otherwise hide (a rerun that threw its
checkpoint away trains to the same numbers): the newest checkpoint left by the kill is read directly
(its completed epochs and steps), `config.json` must record that checkpoint and position as restored, the
rerun must not print any epoch before it, and every epoch record must equal the uninterrupted run's
(training is deterministic here: float32, one seed; the tolerances allow last-digit differences of
multi-threaded reductions: 1e-4 relative on every epoch's numbers, one test image on the accuracy).

Kill points are drawn from a seeded RNG in units of the job's own records (the step-100 record of an epoch,
or an epoch's record); the seed is printed and RELIABILITY_SEED=N replays them.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from job.gcs import GcsStore
from tests.conftest import RunJob, built_once_per_session
from tests.helpers import JobProcess, epoch_records, make_cifar_like, read_jsonl, write_tarball

pytestmark = pytest.mark.slow

EPOCHS = 2
# 1,000 images in batches of 5: 200 steps per epoch, so each epoch has a step record at 100 (mid-epoch) and
# 200. float32, so no CPU picks another precision. Learning rate 0.01: 0.02 fell to chance on an AVX2 AMD EPYC
# (its kernels round differently); 0.01 reaches 1.0 there.
FLAGS = (
    "--epochs", str(EPOCHS), "--batch-size", "5", "--validation-size", "100", "--learning-rate", "0.01",
    "--seed", "11", "--precision", "float32",
)  # fmt: skip
# The custom loop also checkpoints every 20 steps (so more than two exist, and pruning shows); fit checkpoints
# at epoch ends only (it refuses --checkpoint-every-steps).
LOOP_FLAGS = {"fit": (), "custom": ("--checkpoint-every-steps", "20")}
ONE_IMAGE = 1 / 200 + 1e-9  # test_accuracy over test[100:] of 300 images.
SEED = int(os.environ.get("RELIABILITY_SEED", random.SystemRandom().randrange(10**6)))
Records = Callable[[], list[dict[str, Any]]]


@pytest.fixture(scope="session")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = built_once_per_session(
        tmp_path_factory,
        "reliability-data",
        lambda folder: write_tarball(make_cifar_like(train_size=1000, test_size=300), folder / "cifar.tar.gz"),
    )
    return folder / "cifar.tar.gz"


def train_args(tarball: Path, output: str, run_id: str, loop: str) -> list[str]:
    args = ["train", "--loop", loop, "--data", str(tarball), "--output", output, "--run-id", run_id]
    return [*args, *FLAGS, *LOOP_FLAGS[loop]]


def wait_for_record(records: Records, epoch: int, step: int | None, process: JobProcess) -> None:
    """Poll (every 10 ms) until the record of `epoch` (step None) or of its `step` is written."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if any(r["epoch"] == epoch and r.get("step") == step for r in records() if r["kind"] in ("epoch", "step")):
            return
        if process.poll() is not None:
            raise AssertionError(f"training ended early ({process.returncode}): {process.communicate()[1]}")
        time.sleep(0.01)
    raise AssertionError(f"no record of epoch {epoch} step {step} within 300 s")


def local_records(run: Path) -> Records:
    return lambda: read_jsonl(run / "metrics.jsonl") if (run / "metrics.jsonl").exists() else []


def newest_checkpoint(checkpoints: Path) -> tuple[str | None, int, int]:
    """The checkpoint a resume must restore, read directly: (name, completed epochs, steps into the next).

    (None, 0, 0) when there is none yet (`fit` killed in its first epoch): the resume starts over.
    """
    import tensorflow as tf

    prefix = tf.train.latest_checkpoint(str(checkpoints))
    if prefix is None:
        return None, 0, 0

    def value(name: str) -> int:
        return int(tf.train.load_variable(prefix, f"{name}/.ATTRIBUTES/VARIABLE_VALUE"))

    return Path(prefix).name, value("completed_epochs"), value("steps_into_epoch")


def assert_resumed_from(
    run: Path, rerun_stdout: str, checkpoint: tuple[str | None, int, int], resume_index: int
) -> None:
    """config.json records that checkpoint and position as restored, and the rerun trained nothing before it."""
    name, completed, steps = checkpoint
    resumed = json.loads((run / "config.json").read_text())["resumed"]
    assert {key: resumed[resume_index][key] for key in ("checkpoint", "epoch", "step")} == {
        "checkpoint": name,
        "epoch": completed + 1,
        "step": steps,
    }
    assert f"checkpoint={name or 'none'}" in rerun_stdout
    trained = [int(epoch) for epoch in re.findall(rf"^epoch (\d+)/{EPOCHS} loss ", rerun_stdout, re.MULTILINE)]
    assert trained == list(range(completed + 1, EPOCHS + 1)), rerun_stdout
    logged_steps = re.findall(rf"^epoch {completed + 1}/{EPOCHS} step (\d+)/", rerun_stdout, re.MULTILINE)
    assert all(int(step) > steps for step in logged_steps), rerun_stdout


def assert_completed_once(run: Path, reference: dict[str, Any], attempts: int) -> None:
    """Exactly the uninterrupted run's epochs, steps, numbers and summary, once each; the newest two checkpoints
    kept. Step records come every 100 steps (as the chapter logs), with the images seen and the running loss."""
    records = read_jsonl(run / "metrics.jsonl")
    steps = [r for r in records if r["kind"] == "step"]
    assert [(r["epoch"], r["step"], r["samples_seen"]) for r in steps] == [
        (epoch, step, step * 5) for epoch in range(1, EPOCHS + 1) for step in (100, 200)
    ]
    assert all(r["loss"] > 0 and r.get("batch_loss", 1) > 0 for r in steps)
    metrics = ("loss", "accuracy", "val_loss", "val_accuracy")
    assert [{key: r[key] for key in metrics} for r in epoch_records(run)] == [
        {key: pytest.approx(r[key], rel=1e-4) for key in metrics} for r in reference["epochs"]
    ]
    summary = json.loads((run / "summary.json").read_text())
    assert reference["summary"]["test_accuracy"] > 0.3  # The reference learns, so equality means something.
    assert summary["test_accuracy"] == pytest.approx(reference["summary"]["test_accuracy"], abs=ONE_IMAGE)
    assert json.loads((run / "config.json").read_text())["attempts"] == attempts
    if (run / "checkpoints").exists():  # A local run (a gs:// run's are checked in the bucket).
        assert len(list((run / "checkpoints").glob("*.index"))) == 2


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, run_job: RunJob, tarball: Path) -> dict[str, Any]:
    """The reference: the same runs, never interrupted (trained once for all xdist workers)."""

    def train_both_loops(output: Path) -> None:
        for loop in ("fit", "custom"):
            result = run_job(*train_args(tarball, str(output), loop, loop))
            assert result.returncode == 0, result.stderr
            assert f"epoch 1/{EPOCHS} step 100/200 " in result.stdout  # Step lines, as the chapter prints them.

    output = built_once_per_session(tmp_path_factory, "reliability-reference", train_both_loops)
    return {
        loop: {
            "epochs": epoch_records(output / loop),
            "summary": json.loads((output / loop / "summary.json").read_text()),
        }
        for loop in ("fit", "custom")
    }


@pytest.mark.parametrize(
    ("loop", "stop"), [("fit", signal.SIGTERM), ("custom", signal.SIGINT)], ids=["fit-SIGTERM", "custom-SIGINT"]
)
def test_a_kill_9_then_a_stop_request_then_the_same_command_resumes_from_each_checkpoint(
    tmp_path: Path,
    processes: Any,
    run_job: RunJob,
    tarball: Path,
    uninterrupted: dict[str, Any],
    loop: str,
    stop: signal.Signals,
) -> None:
    """kill -9 in epoch 1 (mid-epoch or at its end), a stop request mid-epoch 2, then the same command finishes.

    A stop request is SIGTERM (Kubernetes, docker stop) or SIGINT (Ctrl-C): on it `fit` keeps the last epoch's
    checkpoint, the custom loop saves the step it stopped at. (The gs:// test below sends the custom loop SIGTERM.)
    """
    kill_at = random.Random(f"{SEED}-{loop}").choice([(1, 100), (1, None)])
    print(f"RELIABILITY_SEED={SEED}: kill -9 after the record of (epoch, step) {kill_at}, {stop.name} at (2, 100)")
    run, args = tmp_path / "run", train_args(tarball, str(tmp_path), "run", loop)

    process = processes(args)
    wait_for_record(local_records(run), *kill_at, process)
    process.kill()
    process.communicate()
    killed = newest_checkpoint(run / "checkpoints")

    process = processes(args)
    wait_for_record(local_records(run), 2, 100, process)
    process.send_signal(stop)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr
    assert f"received {stop.name}: stopping at the next safe point" in stderr and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].endswith("rerun the same command with --run-id run to resume")
    assert f"checkpoint={killed[0] or 'none'}" in stdout
    assert not (run / "summary.json").exists()
    stopped = newest_checkpoint(run / "checkpoints")
    if loop == "custom":
        assert (stopped[1], 100 <= stopped[2] < 200) == (1, True), stopped  # Saved at the step it stopped.
    else:
        assert stopped[1:] == (1, 0), stopped  # fit resumes at the start of the epoch it was stopped in.

    result = run_job(*args)
    assert result.returncode == 0, result.stderr
    assert_resumed_from(run, result.stdout, stopped, resume_index=1)
    resumed = json.loads((run / "config.json").read_text())["resumed"]
    assert {key: resumed[0][key] for key in ("checkpoint", "epoch", "step")} == {
        "checkpoint": killed[0],
        "epoch": killed[1] + 1,
        "step": killed[2],
    }
    assert_completed_once(run, uninterrupted[loop], attempts=3)


def test_sigterm_with_gcs_output_resumes_from_the_bucket_alone(
    tmp_path: Path, processes: Any, run_job: RunJob, tarball: Path, gcs_bucket: str, uninterrupted: dict[str, Any]
) -> None:
    store = GcsStore(gcs_bucket, "runs/run")

    def remote_records() -> list[dict[str, Any]]:
        data = store.read_bytes("metrics.jsonl")
        return [json.loads(line) for line in data.decode().splitlines()] if data else []

    args = train_args(tarball, f"gs://{gcs_bucket}/runs", "run", "custom")
    # A new staging folder for each attempt, the first one deleted: the rerun has the bucket and nothing else.
    staging_1, staging_2 = tmp_path / "staging-1", tmp_path / "staging-2"
    process = processes(args, env={"JOB_STAGING_DIR": str(staging_1)})
    wait_for_record(remote_records, 1, 100, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr
    assert store.read_bytes("summary.json") is None
    downloaded = tmp_path / "bucket-checkpoints"
    store.download_tree("checkpoints", downloaded)
    checkpoint = newest_checkpoint(downloaded)
    assert checkpoint[1] == 0 and 100 <= checkpoint[2] < 200, checkpoint
    subprocess.run(["rm", "-rf", str(staging_1)], check=True)

    result = run_job(*args, env={"JOB_STAGING_DIR": str(staging_2)})
    assert result.returncode == 0, result.stderr
    config = json.loads(store.read_bytes("config.json") or b"{}")
    assert {key: config["resumed"][0][key] for key in ("checkpoint", "epoch", "step")} == {
        "checkpoint": checkpoint[0],
        "epoch": 1,
        "step": checkpoint[2],
    }
    assert re.findall(rf"^epoch (\d)/{EPOCHS} loss ", result.stdout, re.MULTILINE) == ["1", "2"]
    assert not re.search(rf"^epoch 1/{EPOCHS} step 100/", result.stdout, re.MULTILINE)  # Went on from the saved step.
    records = remote_records()
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    summary = json.loads(store.read_bytes("summary.json") or b"{}")
    reference = uninterrupted["custom"]["summary"]["test_accuracy"]
    assert summary["test_accuracy"] == pytest.approx(reference, abs=ONE_IMAGE)
    # Old checkpoints are pruned from the bucket, not left to pile up.
    assert len([key for key in store.list_keys("checkpoints") if key.endswith(".index")]) == 2


def handles_sigterm(pid: int) -> bool:
    """The process has a SIGTERM handler installed (bit 15 of SigCgt in /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.MULTILINE).group(1), 16)  # type: ignore[union-attr]
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def test_sigterm_before_training_exits_75(tmp_path: Path, processes: Any, tarball: Path) -> None:
    """From the moment the job's own code runs (its handler is installed first), SIGTERM means exit 75."""
    process = processes(train_args(tarball, str(tmp_path), "early", "fit"))
    while not handles_sigterm(process.pid):
        assert process.poll() is None
        time.sleep(0.001)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 75, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("error: received SIGTERM")
    assert not (tmp_path / "early" / "summary.json").exists()


def test_nan_loss_stops_with_exit_5_and_publishes_nothing(run_job: RunJob, tarball: Path, tmp_path: Path) -> None:
    result = run_job(
        "train", "--data", str(tarball), "--output", str(tmp_path), "--run-id", "nan", "--epochs", "2",
        "--batch-size", "50", "--validation-size", "100", "--learning-rate", "1e30", "--precision", "mixed_float16",
    )  # fmt: skip
    assert result.returncode == 5, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training diverged at epoch 1 step") and "lower --learning-rate" in last
    assert not (tmp_path / "nan" / "summary.json").exists()
    assert epoch_records(tmp_path / "nan") == []
