"""Preemption safety: kill -9 and SIGTERM at random points, then rerun the same command and finish the run.

The kill points are drawn from a seeded RNG; the seed is printed (pytest shows it on failure) and can be
fixed with RELIABILITY_SEED=N to replay a failure.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from job.gcs import GcsStore
from tests.conftest import RunJob
from tests.helpers import epoch_records, job_env, read_jsonl, start_job

pytestmark = pytest.mark.slow

EPOCHS = 3
# 500 images in batches of 10: 50 steps per epoch; the custom loop also checkpoints every 20 steps.
FLAGS = (
    "--epochs", str(EPOCHS), "--batch-size", "10", "--validation-size", "100", "--learning-rate", "0.02",
    "--seed", "11", "--checkpoint-every-steps", "20", "--precision", "float32",
)  # fmt: skip
SEED = int(os.environ.get("RELIABILITY_SEED", random.SystemRandom().randrange(10**6)))


def train_args(tarball: Path, output: str, run_id: str, loop: str) -> list[str]:
    return ["train", "--loop", loop, "--data", str(tarball), "--output", output, "--run-id", run_id, *FLAGS]


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return start_job(args, job_env(env))


def wait_for_epochs(read_metrics: Any, count: int, process: subprocess.Popen[str], timeout: float = 300) -> None:
    """Poll metrics.jsonl (every 20 ms) until `count` epoch records exist."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for record in read_metrics() if record["kind"] == "epoch") >= count:
            return
        if process.poll() is not None:
            raise AssertionError(f"training ended early ({process.returncode}): {process.communicate()[1]}")
        time.sleep(0.02)
    raise AssertionError(f"no epoch {count} record within {timeout}s")


def local_metrics(run: Path) -> Any:
    return lambda: read_jsonl(run / "metrics.jsonl") if (run / "metrics.jsonl").exists() else []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, run_job: RunJob, tiny_tarball: Path) -> dict[str, Any]:
    """The reference: the same runs, never interrupted."""
    output = tmp_path_factory.mktemp("reference")
    summaries = {}
    for loop in ("fit", "custom"):
        result = run_job(*train_args(tiny_tarball, str(output), loop, loop))
        assert result.returncode == 0, result.stderr
        summaries[loop] = json.loads((output / loop / "summary.json").read_text())
    return summaries


def assert_completed_once(run: Path, reference: dict[str, Any]) -> None:
    assert [record["epoch"] for record in epoch_records(run)] == list(range(1, EPOCHS + 1))
    steps = [(r["epoch"], r["step"]) for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "step"]
    assert len(steps) == len(set(steps)), "duplicate step records"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == EPOCHS
    assert reference["test_accuracy"] > 0.3  # The reference learns, so the comparison below means something.
    assert summary["test_accuracy"] == pytest.approx(reference["test_accuracy"], abs=0.1)
    assert json.loads((run / "config.json").read_text())["attempts"] >= 2


@pytest.mark.parametrize("loop", ["fit", "custom"])
@pytest.mark.parametrize("where", ["epoch-boundary", "mid-epoch"])
def test_kill_9_then_rerun_completes_the_run(
    tmp_path: Path, run_job: RunJob, tiny_tarball: Path, uninterrupted: dict[str, Any], loop: str, where: str
) -> None:
    rng = random.Random(f"{SEED}-{loop}-{where}")
    after_epoch = rng.randint(1, EPOCHS - 1)
    delay = 0.0 if where == "epoch-boundary" else rng.uniform(0.05, 0.6)
    print(f"RELIABILITY_SEED={SEED}: kill -9 {delay:.2f}s after epoch {after_epoch} ({loop})")
    run = tmp_path / "run"
    args = train_args(tiny_tarball, str(tmp_path), "run", loop)

    process = start(args)
    wait_for_epochs(local_metrics(run), after_epoch, process)
    time.sleep(delay)
    process.kill()
    process.communicate()
    assert not (run / "summary.json").exists()

    result = run_job(*args)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout
    assert_completed_once(run, uninterrupted[loop])


@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_sigterm_mid_epoch_exits_75_quickly_and_the_rerun_finishes(
    tmp_path: Path, run_job: RunJob, tiny_tarball: Path, uninterrupted: dict[str, Any], loop: str
) -> None:
    run = tmp_path / "run"
    args = train_args(tiny_tarball, str(tmp_path), "run", loop)
    process = start(args)
    wait_for_epochs(local_metrics(run), 1, process)
    time.sleep(random.Random(f"{SEED}-{loop}-term").uniform(0.05, 0.3))
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 75, stderr
    assert time.monotonic() - signalled < 10
    assert stderr.strip().splitlines()[-1].endswith("rerun the same command with --run-id run to resume")
    assert (run / "checkpoints" / "checkpoint").is_file()
    assert not (run / "summary.json").exists()

    result = run_job(*args)
    assert result.returncode == 0, result.stderr
    assert_completed_once(run, uninterrupted[loop])


def test_sigterm_before_training_exits_75(tmp_path: Path, tiny_tarball: Path) -> None:
    process = start(train_args(tiny_tarball, str(tmp_path), "early", "fit"))
    time.sleep(0.3)  # Still importing or loading data.
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 75, stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "early" / "summary.json").exists()


def test_sigterm_with_gcs_output_resumes_from_the_bucket(
    tmp_path: Path, run_job: RunJob, tiny_tarball: Path, gcs_bucket: str, uninterrupted: dict[str, Any]
) -> None:
    store = GcsStore(gcs_bucket, "runs/run")
    output = f"gs://{gcs_bucket}/runs"

    def remote_metrics() -> list[dict[str, Any]]:
        data = store.read_bytes("metrics.jsonl")
        return [json.loads(line) for line in data.decode().splitlines()] if data else []

    args = train_args(tiny_tarball, output, "run", "custom")
    # A new staging folder for each attempt: the rerun must rebuild its state from the bucket alone.
    process = start(args, env={"JOB_STAGING_DIR": str(tmp_path / "staging-1")})
    wait_for_epochs(remote_metrics, 1, process)
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 75, stderr
    assert "checkpoints/checkpoint" in store.list_keys("checkpoints")
    assert store.read_bytes("summary.json") is None

    result = run_job(*args, env={"JOB_STAGING_DIR": str(tmp_path / "staging-2")})
    assert result.returncode == 0, result.stderr
    records = remote_metrics()
    assert [record["epoch"] for record in records if record["kind"] == "epoch"] == [1, 2, 3]
    summary = json.loads(store.read_bytes("summary.json") or b"{}")
    assert summary["test_accuracy"] == pytest.approx(uninterrupted["custom"]["test_accuracy"], abs=0.1)
    # Old checkpoints are pruned from the bucket, not left to pile up.
    assert len([key for key in store.list_keys("checkpoints") if key.endswith(".index")]) <= 2


def test_nan_loss_stops_with_exit_5_and_publishes_nothing(run_job: RunJob, tiny_tarball: Path, tmp_path: Path) -> None:
    result = run_job(
        "train", "--data", str(tiny_tarball), "--output", str(tmp_path), "--run-id", "nan", "--epochs", "2",
        "--batch-size", "50", "--validation-size", "100", "--learning-rate", "1e30", "--precision", "mixed_float16",
    )  # fmt: skip
    assert result.returncode == 5, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training diverged at epoch 1 step") and "lower --learning-rate" in last
    assert not (tmp_path / "nan" / "summary.json").exists()
    assert epoch_records(tmp_path / "nan") == []
