"""The Vertex AI hyper-parameter tuning report (job/hypertune.py), line for line as cloudml-hypertune writes it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from job import hypertune
from job.errors import OutputError


def test_outside_a_trial_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    hypertune.report("val_accuracy", 0.5, 250, {})
    assert hypertune.metric_file({}) is None and list(tmp_path.iterdir()) == []


def test_each_report_appends_one_line_in_the_packages_format(tmp_path: Path) -> None:
    path = tmp_path / "hypertune" / "output.metrics"
    env = {"CLOUD_ML_HP_METRIC_FILE": str(path), "CLOUD_ML_TRIAL_ID": "7"}
    before = time.time()
    hypertune.report("val_accuracy", 0.625, 250, env)
    hypertune.report("val_accuracy", 0.75, 500, env)
    lines = path.read_text().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert before <= first["timestamp"] <= second["timestamp"] <= time.time()
    assert {key: value for key, value in second.items() if key != "timestamp"} == {
        "checkpoint_path": "",
        "global_step": "500",
        "trial": "7",
        "val_accuracy": "0.75",
    }
    # Byte for byte what hypertune.HyperTune writes: json.dumps(..., sort_keys=True), default separators.
    assert lines[0] == (
        f'{{"checkpoint_path": "", "global_step": "250", "timestamp": {first["timestamp"]!r}, '
        '"trial": "7", "val_accuracy": "0.625"}'
    )


def test_the_trial_id_alone_selects_the_packages_default_file() -> None:
    assert hypertune.metric_file({"CLOUD_ML_TRIAL_ID": "3"}) == Path("/tmp/hypertune/output.metrics")
    assert hypertune.metric_file({"CLOUD_ML_HP_METRIC_FILE": "/x/m"}) == Path("/x/m")


def test_a_file_without_a_trial_id_reports_trial_0(tmp_path: Path) -> None:
    path = tmp_path / "m"
    hypertune.report("loss", 1, 0, {"CLOUD_ML_HP_METRIC_FILE": str(path)})
    record = json.loads(path.read_text())
    assert (record["trial"], record["loss"], record["global_step"]) == ("0", "1.0", "0")


def test_an_unwritable_file_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="cannot write the hyper-parameter tuning metric"):
        hypertune.report("val_accuracy", 0.5, 1, {"CLOUD_ML_HP_METRIC_FILE": str(tmp_path / "file" / "m")})
