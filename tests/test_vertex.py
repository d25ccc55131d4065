"""The Vertex AI custom-container contract: AIP_* directories and hyper-parameter tuning reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import RunJob

pytestmark = pytest.mark.slow


def test_vertex_environment_places_the_run_and_reports_the_objective(
    run_job: RunJob, tiny_tarball: Path, tmp_path: Path
) -> None:
    env = {
        "AIP_MODEL_DIR": str(tmp_path / "model-dir"),
        "AIP_TENSORBOARD_LOG_DIR": str(tmp_path / "tensorboard"),
        "AIP_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "CLOUD_ML_TRIAL_ID": "7",
        "CLOUD_ML_HP_METRIC_FILE": str(tmp_path / "hypertune" / "output.metrics"),
    }
    args = ["train", "--data", str(tiny_tarball), "--run-id", "trial-7", "--epochs", "1"]
    result = run_job(*args, "--batch-size", "50", "--validation-size", "100", env=env)
    assert result.returncode == 0, result.stderr

    summary = json.loads((tmp_path / "model-dir" / "trial-7" / "summary.json").read_text())
    assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "checkpoints" / "checkpoint").is_file()
    report = json.loads((tmp_path / "hypertune" / "output.metrics").read_text().splitlines()[-1])
    assert report["trial"] == "7" and report["global_step"] == "1"
    assert float(report["val_accuracy"]) == pytest.approx(summary["val_accuracy"])
