"""`--log-format json` for Cloud Logging: every line, on stdout and stderr, is one JSON object with `severity` and
`message` (what Cloud Logging classifies and shows an entry by); errors keep their exit codes. Text mode is unchanged."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.conftest import RunJob
from tests.helpers import job_env, start_job, tensorboard_scalars

# 500 images in batches of 5: one epoch of 100 steps, so one step record (they come every 100 steps).
ONE_EPOCH_OF_100_STEPS = (
    "--epochs", "1", "--batch-size", "5", "--validation-size", "100", "--learning-rate", "0.01",
    "--precision", "float32",
)  # fmt: skip


@pytest.mark.slow
def test_json_lines_carry_severity_and_message_from_training_to_a_refused_rerun(
    run_job: RunJob, tiny_tarball: Path, tmp_path: Path
) -> None:
    # A PATH without Graphviz's `dot`: the architecture diagram is skipped with a warning, and the run goes on.
    env = {"PATH": str(tmp_path / "no-tools")}
    args = ("train", "--data", str(tiny_tarball), "--output", str(tmp_path), "--run-id", "json", "--log-format",
            "json", *ONE_EPOCH_OF_100_STEPS)  # fmt: skip
    result = run_job(*args, env=env)
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]  # Fails on any line that is not JSON.
    assert all(isinstance(entry["message"], str) and entry["message"] for entry in entries)
    assert {entry["severity"] for entry in entries} == {"INFO", "WARNING"}
    warnings = [entry for entry in entries if entry["severity"] == "WARNING"]
    assert [entry["event"] for entry in warnings] == ["warning"] and "diagram" in warnings[0]["message"]
    (step,) = [entry for entry in entries if entry["event"] == "step"]
    assert step["message"].startswith("epoch 1/1 step 100/100 loss ")  # The line text mode prints.
    finished = entries[-1]
    assert finished["event"] == "finished" and finished["message"].startswith(f"finished run={tmp_path / 'json'} ")
    # The step record's running loss is TensorBoard's `batch_loss` under train/, as Keras logs it.
    scalars = tensorboard_scalars(tmp_path / "json" / "tensorboard" / "train")
    assert scalars["batch_loss"] == [(100, pytest.approx(step["loss"], rel=1e-6))]

    refused = run_job(*args, env=env)  # Finished already: exit 4, and the error line is JSON too.
    assert refused.returncode == 4
    (line,) = refused.stderr.splitlines()
    error = json.loads(line)
    assert (error["severity"], error["exit_code"]) == ("ERROR", 4)
    assert error["message"] == (
        f"run {tmp_path / 'json'} already finished (it has summary.json): pick another --run-id or pass --overwrite"
    )


def test_a_usage_error_is_json_with_severity_error_and_keeps_exit_2(
    run_job: RunJob, without_tensorflow: dict[str, str]
) -> None:
    """JOB_LOG_FORMAT=json, as the ConfigMap sets it: even typer's own error, before `train` runs, is JSON."""
    for args in (["--epochs", "many"], ["--epochs", "0"]):
        result = run_job("train", *args, env={**without_tensorflow, "JOB_LOG_FORMAT": "json"})
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.splitlines()
        error = json.loads(line)
        assert (error["severity"], error["exit_code"]) == ("ERROR", 2) and "--epochs" in error["message"]
        assert isinstance(error["time"], float)


@pytest.mark.slow
def test_an_interruption_is_a_warning(tiny_tarball: Path, tmp_path: Path) -> None:
    """Exit 75 saved the run's state and is retried without counting it: WARNING, not ERROR, both lines of it."""
    args = [
        "train",
        "--data",
        str(tiny_tarball),
        "--output",
        str(tmp_path),
        "--log-format=json",
        *ONE_EPOCH_OF_100_STEPS,
    ]
    process = start_job(args, job_env())
    first = json.loads(process.stdout.readline() if process.stdout else "{}")  # Printed once TensorFlow has loaded.
    assert first["event"] == "devices", first
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr
    # TensorFlow's C++ start-up lines (absl, before its logging is set up) are not ours: ours are the JSON ones.
    notice, error = (json.loads(line) for line in stderr.splitlines() if line.startswith("{"))
    assert notice == {**notice, "severity": "WARNING", "message": "received SIGTERM: stopping at the next safe point"}
    assert (error["severity"], error["exit_code"]) == ("WARNING", 75) and "rerun the same command" in error["message"]


def test_text_mode_keeps_its_plain_error_line(run_job: RunJob, without_tensorflow: dict[str, str]) -> None:
    result = run_job("train", "--epochs", "0", env=without_tensorflow)
    assert (result.returncode, result.stderr) == (2, "error: --epochs must be at least 1, got 0\n")
