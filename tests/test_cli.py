"""The CLI contract: fast help, and bad flags rejected with one line and exit 2 before TensorFlow loads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, RunJob
from tests.helpers import job_env


def test_help_lists_commands_and_does_not_import_tensorflow() -> None:
    code = "import sys, job.cli; job.cli.main(['--help']); print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert "train" in result.stdout
    assert result.stdout.strip().endswith("False False")


def test_train_help_shows_choices_and_defaults(run_job: RunJob) -> None:
    result = run_job("train", "--help")
    assert result.returncode == 0
    for text in ("symbolic|imperative", "fit|custom", "default: 200", "JOB_OUTPUT"):
        assert text in result.stdout


def test_no_arguments_prints_overview(run_job: RunJob) -> None:
    result = run_job()
    assert result.returncode == 0
    assert "Commands" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--api", "functional"], "'functional' is not one of 'symbolic', 'imperative'"),
        (["--loop", "scan"], "'scan' is not one of 'fit', 'custom'"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--epochs", "-3"], "--epochs must be at least 1"),
        (["--epochs", "two"], "'--epochs'"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--learning-rate", "-0.1"], "--learning-rate must be a positive finite number"),
        (["--learning-rate", "nan"], "--learning-rate must be a positive finite number"),
        (["--momentum", "1.5"], "--momentum must be in [0, 1)"),
        (["--run-id", "a/b"], "is not a valid run id"),
        (["--run-id", "x..y"], "is not a valid run id"),
        (["--output", "gs:/bucket"], "malformed Cloud Storage URL"),
        (["--output", "s3://bucket/runs"], "unsupported output"),
        (["--no-such-flag"], "No such option"),
    ],
)
def test_bad_flag_is_one_line_and_exit_2(
    run_job: RunJob, args: list[str], expected: str, without_tensorflow: dict[str, str]
) -> None:
    result = run_job("train", *args, env=without_tensorflow)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_missing_data_path_is_exit_3(run_job: RunJob, tmp_path: object, without_tensorflow: dict[str, str]) -> None:
    data = "/nonexistent/cifar-10-python.tar.gz"
    result = run_job("train", "--data", data, "--output", str(tmp_path), env=without_tensorflow)
    assert result.returncode == 3
    assert "does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_env_vars_set_flags(run_job: RunJob) -> None:
    result = run_job("train", env={"JOB_EPOCHS": "0"})
    assert result.returncode == 2
    assert "--epochs must be at least 1" in result.stderr


def test_the_environment_without_tensorflow_would_catch_an_import(without_tensorflow: dict[str, str]) -> None:
    """The guard of the bad-input checks can fail: a command that does import TensorFlow is stopped by it."""
    result = subprocess.run(
        [sys.executable, "-c", "import job.train"], env=job_env(without_tensorflow), capture_output=True, text=True
    )
    assert result.returncode != 0 and "was imported, though this input must be rejected" in result.stderr
