"""The Vertex AI custom-training contract: the AIP_* variables as Vertex sets them, on disk and on fake-gcs-server.

Vertex sets AIP_MODEL_DIR=<base>/model/, AIP_CHECKPOINT_DIR=<base>/checkpoints/, AIP_TENSORBOARD_LOG_DIR=<base>/logs/
(trailing slashes included) and CLOUD_ML_JOB_ID; the run folder is <base> (job/vertex.py).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from job import vertex
from job.errors import UsageError
from job.gcs import GcsStore
from job.uri import parse_gcs_url
from tests.conftest import RunJob
from tests.helpers import job_env, start_job

SMALL = ("--batch-size", "50", "--validation-size", "100", "--learning-rate", "0.02")


def vertex_env(base: str, job_id: str = "2718281828") -> dict[str, str]:
    """The variables a Vertex AI CustomJob with baseOutputDirectory=base gives each replica, verbatim."""
    return {
        "AIP_MODEL_DIR": f"{base}/model/",
        "AIP_CHECKPOINT_DIR": f"{base}/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": f"{base}/logs/",
        "CLOUD_ML_JOB_ID": job_id,
    }


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("gs://vertex-bucket/jobs/7/model/", ("vertex-bucket", "jobs/7/model")),
        ("gs://vertex-bucket/jobs/7/model", ("vertex-bucket", "jobs/7/model")),
        ("gs://vertex-bucket//jobs//7/", ("vertex-bucket", "jobs/7")),
        ("gs://vertex-bucket/", ("vertex-bucket", "")),
        ("gs://vertex-bucket", ("vertex-bucket", "")),
        ("gs://abc", ("abc", "")),
    ],
)
def test_every_url_form_vertex_and_people_write_is_accepted(url: str, parsed: tuple[str, str]) -> None:
    assert parse_gcs_url(url) == parsed


def test_the_run_folder_is_the_base_output_directory_and_its_name_the_run_id() -> None:
    place = vertex.placement(vertex_env("gs://vertex-bucket/jobs/job-1"))
    assert place == vertex.Placement("gs://vertex-bucket/jobs", "job-1", "2718281828")
    trial = vertex.placement(vertex_env("gs://vertex-bucket/tuning/3"))  # A tuning trial's: <job's base>/<trial id>.
    assert trial is not None and (trial.output, trial.run_id) == ("gs://vertex-bucket/tuning", "3")
    assert vertex.placement({}) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AIP_MODEL_DIR": "gs://vertex-bucket/model/"}, "must be a folder named with letters"),
        ({"AIP_MODEL_DIR": "gs://vertex-bucket/jobs/1/export/"}, "does not end in /model/"),
        (
            {"AIP_MODEL_DIR": "gs://vertex-bucket/a/model/", "AIP_CHECKPOINT_DIR": "gs://vertex-bucket/b/checkpoints/"},
            "is not gs://vertex-bucket/a/checkpoints/ beside AIP_MODEL_DIR",
        ),
        ({"AIP_CHECKPOINT_DIR": "gs://vertex-bucket/b/checkpoints/"}, "AIP_MODEL_DIR is not"),
    ],
)
def test_a_placement_that_cannot_be_a_run_folder_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        vertex.placement(env)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model-version", "2"), "--model-version 2 is set, but on Vertex AI the SavedModel goes into AIP_MODEL_DIR"),
        (("--run-id", "other"), "--run-id other differs from the run folder AIP_MODEL_DIR="),
    ],
)
def test_flags_that_contradict_vertex_are_refused_before_tensorflow_loads(
    run_job: RunJob, without_tensorflow: dict[str, str], tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = run_job("train", *args, env={**without_tensorflow, **vertex_env(str(tmp_path / "base"))})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {message}") and len(result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.slow
def test_a_tuning_trial_writes_its_model_into_aip_model_dir_and_reports_the_objective(
    run_job: RunJob, tiny_tarball: Path, tmp_path: Path
) -> None:
    base = tmp_path / "tuning" / "7"  # A trial's base output directory: <job's base>/<trial id>.
    env = vertex_env(str(base)) | {
        "CLOUD_ML_TRIAL_ID": "7",
        "CLOUD_ML_HP_METRIC_FILE": str(tmp_path / "hypertune" / "output.metrics"),
    }
    result = run_job("train", "--data", str(tiny_tarball), "--epochs", "1", *SMALL, env=env)
    assert result.returncode == 0, result.stderr

    summary = json.loads((base / "summary.json").read_text())
    assert summary["run_id"] == "7"
    assert (base / "model" / "saved_model.pb").is_file()  # What Vertex's model upload reads: no version folder.
    card = json.loads((base / "model" / "model_card.json").read_text())
    assert card["saved_model"] == "." and card["version"] is None
    assert any((base / "logs").rglob("events.out.tfevents.*"))
    assert (base / "checkpoints" / "checkpoint").is_file()
    report = json.loads((tmp_path / "hypertune" / "output.metrics").read_text().splitlines()[-1])
    assert report["trial"] == "7" and report["global_step"] == "1"
    assert float(report["val_accuracy"]) == pytest.approx(summary["val_accuracy"])


@pytest.mark.slow
def test_a_restarted_replica_resumes_from_aip_checkpoint_dir_on_cloud_storage(
    run_job: RunJob, tiny_tarball: Path, gcs_bucket: str, tmp_path: Path
) -> None:
    """Vertex's variables only (no --run-id, no --output): kill -9 the replica after its first epoch, start it again."""
    base = f"gs://{gcs_bucket}/vertex/jobs/2718281828"
    env = vertex_env(base)
    args = ["train", "--data", str(tiny_tarball), "--epochs", "3", *SMALL]
    run_store = GcsStore(gcs_bucket, "vertex/jobs/2718281828")
    process = start_job(args, job_env({**env, "JOB_STAGING_DIR": str(tmp_path / "replica-1")}))
    deadline = time.monotonic() + 300
    while not GcsStore(gcs_bucket, "vertex/jobs/2718281828/logs").list_keys():  # Synced after epoch 1's checkpoint.
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.kill()
    process.communicate()
    saved = re.search(rb'model_checkpoint_path: "ckpt-(\d+)"', run_store.read_bytes("checkpoints/checkpoint") or b"")
    assert saved is not None and run_store.read_bytes("summary.json") is None
    completed = int(saved[1])  # Checkpoint N holds N completed epochs (1, or 2 if the kill came late).

    another_job = run_job(*args, env={**env, "CLOUD_ML_JOB_ID": "31415", "JOB_STAGING_DIR": str(tmp_path / "other")})
    assert another_job.returncode == 4 and "is being written by another process" in another_job.stderr

    restarted = run_job(*args, env={**env, "JOB_STAGING_DIR": str(tmp_path / "replica-2")})
    assert restarted.returncode == 0, restarted.stderr
    assert f"resuming run={base} " in restarted.stdout and f"from_epoch={completed + 1} " in restarted.stdout
    config = json.loads(run_store.read_bytes("config.json") or b"{}")
    assert config["run_id"] == "2718281828" and config["resumed"][-1]["epoch"] == completed + 1
    records = [json.loads(line) for line in (run_store.read_bytes("metrics.jsonl") or b"").splitlines()]
    assert [record["epoch"] for record in records if record["kind"] == "epoch"] == [1, 2, 3]
    keys = run_store.list_keys()
    for expected in ("summary.json", "model/saved_model.pb", "model/model_card.json", "checkpoints/checkpoint"):
        assert expected in keys, keys
    assert not any(key.startswith("model/1/") for key in keys)
