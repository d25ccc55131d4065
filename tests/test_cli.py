"""The CLI contract: fast help without TensorFlow. Bad flags and inputs, with one line and their exit codes before
TensorFlow loads, are the matrix in tests/test_bad_input.py."""

from __future__ import annotations

import subprocess
import sys

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


def test_the_environment_without_tensorflow_would_catch_an_import(without_tensorflow: dict[str, str]) -> None:
    """The guard of the bad-input checks can fail: a command that does import TensorFlow is stopped by it."""
    result = subprocess.run(
        [sys.executable, "-c", "import job.train"], env=job_env(without_tensorflow), capture_output=True, text=True
    )
    assert result.returncode != 0 and "was imported, though this input must be rejected" in result.stderr
