"""A whole training run reading gs:// data and writing a gs:// run folder, against fake-gcs-server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from job import plots
from job.gcs import GcsStore
from tests.conftest import RunJob
from tests.helpers import TINY_TRAIN, job_env, start_job
from tests.test_plots import assert_sane_png


@pytest.mark.slow
def test_train_from_and_to_gcs_publishes_the_whole_run(
    run_job: RunJob, gcs_bucket: str, tiny_tarball: Path, tmp_path: Path
) -> None:
    GcsStore(gcs_bucket, "data").upload_file("cifar-10-python.tar.gz", tiny_tarball)
    data = f"gs://{gcs_bucket}/data/cifar-10-python.tar.gz"
    output = f"gs://{gcs_bucket}/runs"
    env = {"JOB_CACHE_DIR": str(tmp_path / "cache"), "JOB_STAGING_DIR": str(tmp_path / "staging")}

    result = run_job("train", *TINY_TRAIN, "--data", data, "--output", output, "--run-id", "r1", env=env)
    assert result.returncode == 0, result.stderr

    keys = GcsStore(gcs_bucket, "runs/r1").list_keys()
    for expected in ("config.json", "metrics.jsonl", "summary.json", "model.keras", "model/1/saved_model.pb"):
        assert expected in keys, keys
    assert any(key.startswith("tensorboard/") for key in keys) and any(key.startswith("checkpoints/") for key in keys)
    assert (tmp_path / "cache" / "gcs" / gcs_bucket / "data" / "cifar-10-python.tar.gz").is_file()
    store = GcsStore(gcs_bucket, "runs/r1")  # The pictures are published too, and readable.
    pictures = {plots.LABEL_DISTRIBUTION, plots.SAMPLE_GRID, plots.LEARNING_CURVES, plots.MODEL_SUMMARY}
    assert pictures <= {key.removeprefix("plots/") for key in store.list_keys("plots")}
    (tmp_path / "curves.png").write_bytes(store.read_bytes(f"plots/{plots.LEARNING_CURVES}") or b"")
    assert_sane_png(tmp_path / "curves.png", min_width=700)

    listing = run_job("runs", "list", output)
    assert listing.stdout.splitlines()[1].split()[:5] == ["r1", "complete", "symbolic", "fit", "2/2"], listing.stdout

    again = run_job("train", *TINY_TRAIN, "--data", data, "--output", output, "--run-id", "r1", env=env)
    assert again.returncode == 4 and "already finished" in again.stderr, again.stderr


@pytest.mark.usefixtures("gcs_server")
def test_train_to_a_missing_bucket_exits_4_with_one_line(run_job: RunJob, tiny_tarball: Path) -> None:
    result = run_job("train", *TINY_TRAIN, "--data", str(tiny_tarball), "--output", "gs://no-such-bucket-here/runs")
    assert result.returncode == 4, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: bucket no-such-bucket-here does not exist"), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_bucket_lost_mid_run_exits_4_and_keeps_the_local_copy(
    dying_gcs_server: Any, tiny_tarball: Path, tmp_path: Path
) -> None:
    """The server dies after the first epoch: exit 4, and the staging copy with its checkpoints stays."""
    bucket = dying_gcs_server.create_bucket()
    store = GcsStore(bucket, "runs/lost")
    staging = tmp_path / "staging"
    args = ["train", "--data", str(tiny_tarball), "--output", f"gs://{bucket}/runs", "--run-id", "lost"]
    args += ["--epochs", "4", "--batch-size", "10", "--validation-size", "100"]
    process = start_job(args, job_env({"JOB_STAGING_DIR": str(staging)}))
    deadline = time.monotonic() + 300
    while b'"kind": "epoch"' not in (store.read_bytes("metrics.jsonl") or b""):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    dying_gcs_server.kill()
    _, stderr = process.communicate(timeout=300)

    assert process.returncode == 4, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"the run's local copy is kept in {staging / 'lost'}" in last
    assert (staging / "lost" / "checkpoints" / "checkpoint").is_file()
    assert '"kind": "epoch"' in (staging / "lost" / "metrics.jsonl").read_text()
