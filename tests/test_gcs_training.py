"""A whole training run reading gs:// data and writing a gs:// run folder, against fake-gcs-server."""

from __future__ import annotations

from pathlib import Path

import pytest

from job.gcs import GcsStore
from tests.conftest import RunJob
from tests.helpers import TINY_TRAIN


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
    for expected in ("config.json", "metrics.jsonl", "summary.json", "model.keras", "model/saved_model.pb"):
        assert expected in keys, keys
    assert any(key.startswith("tensorboard/") for key in keys) and any(key.startswith("checkpoints/") for key in keys)
    assert (tmp_path / "cache" / "gcs" / gcs_bucket / "data" / "cifar-10-python.tar.gz").is_file()

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
