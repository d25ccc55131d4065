"""train --label: free text kept in config.json and shown by `runs list`; checked before TensorFlow loads; a note,
so a resumed run may change it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from job.preflight import RESUME_KEYS
from tests.conftest import RunJob
from tests.test_runs_cli import run_cli, write_run

SETTINGS = {"api": "imperative", "loop": "fit", "batch_size": 200, "learning_rate": 0.1, "momentum": 0.9}


@pytest.mark.parametrize("label", ["two\nlines", "a\ttab", "x" * 201], ids=["newline", "tab", "too-long"])
def test_a_bad_label_exits_2_with_one_line(
    label: str, run_job: RunJob, tmp_path: Path, tiny_tarball: Path, without_tensorflow: dict[str, str]
) -> None:
    args = ["--data", str(tiny_tarball), "--output", str(tmp_path / "runs"), "--label", label]
    result = run_job("train", *args, env=without_tensorflow)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: --label must be at most 200 printable characters") and (
        result.stderr.count("\n") == 1
    ), result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_resumed_run_may_change_its_label(
    run_job: RunJob, tmp_path: Path, tiny_tarball: Path, without_tensorflow: dict[str, str]
) -> None:
    """The resume check passes (the run gets as far as loading TensorFlow, which this environment forbids),
    where another --api is refused."""
    run = tmp_path / "runs" / "unfinished"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({**SETTINGS, "seed": 42, "validation_size": 250, "label": "first"}))
    args = ["--data", str(tiny_tarball), "--output", str(tmp_path / "runs"), "--run-id", "unfinished"]
    relabelled = run_job(
        "train",
        *args,
        "--api",
        "imperative",
        "--validation-size",
        "250",
        "--label",
        "second",
        env={**without_tensorflow, "JOB_EPOCHS": "1"},
    )
    assert "was imported, though this input must be rejected" in relabelled.stderr, relabelled.stderr
    refused = run_job(
        "train", *args, "--api", "symbolic", "--validation-size", "250", "--label", "second", env=without_tensorflow
    )
    assert refused.returncode == 2 and "--api imperative → symbolic" in refused.stderr, refused.stderr
    assert "label" not in RESUME_KEYS


def test_runs_list_shows_labels(tmp_path: Path) -> None:
    location = str(tmp_path / "runs")
    write_run(location, "symbolic-fit-1", api="symbolic", loop="fit", epochs_done=5, complete=True)
    write_run(location, "symbolic-fit-2", api="symbolic", loop="fit", epochs_done=2, complete=False)
    config = tmp_path / "runs" / "symbolic-fit-2" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "label": "lr 0.05, ticket 123"}))

    header, *rows = run_cli("runs", "list", location).stdout.splitlines()
    assert header.split()[-1] == "LABEL"
    assert rows[0].endswith("  -") and rows[1].endswith("  lr 0.05, ticket 123")
    listed = json.loads(run_cli("runs", "list", location, "--json").stdout)
    assert [run["label"] for run in listed] == [None, "lr 0.05, ticket 123"]


@pytest.mark.slow
def test_the_label_is_kept_in_config_json_and_listed(run_job: RunJob, tmp_path: Path, tiny_tarball: Path) -> None:
    output = tmp_path / "runs"
    args = ["--data", str(tiny_tarball), "--output", str(output), "--run-id", "labelled", "--epochs", "1"]
    result = run_job("train", *args, "--label", "baseline: the chapter's settings", "--validation-size", "250")
    assert result.returncode == 0, result.stderr
    assert json.loads((output / "labelled" / "config.json").read_text())["label"] == "baseline: the chapter's settings"
    assert run_cli("runs", "list", str(output)).stdout.splitlines()[1].endswith("  baseline: the chapter's settings")
