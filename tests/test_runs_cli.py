"""`python -m job runs list|show`, driven as a user would, against a local folder and fake-gcs-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from job.errors import EXIT_OUTPUT
from job.storage import open_store

REPO = Path(__file__).resolve().parents[1]
EPOCH = {"kind": "epoch", "loss": 1.5, "accuracy": 0.45, "val_loss": 1.4, "val_accuracy": 0.5}
SUMMARY = {
    "test_accuracy": 0.6712,
    "test_loss": 0.9421,
    "epochs": 5,
    "wall_seconds": 123.4,
    "train_images_per_second": 4567.8,
    "parameters": 1234567,
    "completed_at": "2026-11-26T15:40:00Z",
}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m job ARGS` in a fresh interpreter, with this process's environment (emulator included)."""
    command = [sys.executable, "-m", "job", *args]
    return subprocess.run(command, cwd=REPO, env=env or dict(os.environ), capture_output=True, text=True, timeout=60)


def write_run(location: str, run_id: str, *, api: str, loop: str, epochs_done: int, complete: bool) -> None:
    """A run folder as the trainer leaves it: complete runs have summary.json, incomplete ones do not."""
    store = open_store(location).child(run_id)
    config = {"run_id": run_id, "api": api, "loop": loop, "epochs": 5, "batch_size": 200}
    store.write_bytes("config.json", json.dumps(config).encode())
    records: list[dict[str, Any]] = [{**EPOCH, "epoch": epoch} for epoch in range(1, epochs_done + 1)]
    steps = [{"kind": "step", "epoch": epochs_done + 1, "step": step, "loss": 2.0} for step in (100, 200, 300)]
    records += steps if loop == "custom" else []
    lines = "".join(json.dumps(record) + "\n" for record in records)
    store.write_bytes("metrics.jsonl", (lines + ('{"kind": "epo' if not complete else "")).encode())
    store.write_bytes("model/saved_model.pb", b"graph")
    if complete:
        store.write_bytes("summary.json", json.dumps(SUMMARY).encode(), create_only=True)


@pytest.fixture(params=["local", "gcs"])
def runs_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A runs folder with one complete and one incomplete run, on local disk or in a bucket."""
    location = (
        str(tmp_path / "runs") if request.param == "local" else f"gs://{request.getfixturevalue('gcs_bucket')}/runs"
    )
    write_run(location, "symbolic-fit-1", api="symbolic", loop="fit", epochs_done=5, complete=True)
    write_run(location, "imperative-custom-2", api="imperative", loop="custom", epochs_done=2, complete=False)
    return location


def test_list_tells_complete_from_incomplete(runs_location: str) -> None:
    result = run_cli("runs", "list", runs_location)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["RUN", "ID", "STATUS", "API", "LOOP", "EPOCHS", "TEST", "ACC", "FINISHED"]
    assert [row.split() for row in rows] == [
        ["imperative-custom-2", "incomplete", "imperative", "custom", "2/5", "-", "-"],
        ["symbolic-fit-1", "complete", "symbolic", "fit", "5/5", "0.6712", "2026-11-26T15:40:00Z"],
    ]


def test_list_json_for_scripts(runs_location: str) -> None:
    result = run_cli("runs", "list", runs_location, "--json")
    assert result.returncode == 0, result.stderr
    by_id = {run["run_id"]: run for run in json.loads(result.stdout)}
    assert by_id["symbolic-fit-1"]["status"] == "complete" and by_id["symbolic-fit-1"]["test_accuracy"] == 0.6712
    assert by_id["imperative-custom-2"]["status"] == "incomplete" and by_id["imperative-custom-2"]["epochs_done"] == 2
    assert by_id["symbolic-fit-1"]["url"] == f"{open_store(runs_location).url}/symbolic-fit-1"


def test_show_a_complete_run(runs_location: str) -> None:
    result = run_cli("runs", "show", f"{runs_location}/symbolic-fit-1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[2].split() == ["status", "complete"]
    assert "accuracy 0.6712, loss 0.9421" in result.stdout and "1,234,567" in result.stdout
    assert lines[-6].split() == ["EPOCH", "LOSS", "ACCURACY", "VAL_LOSS", "VAL_ACCURACY"]
    assert lines[-1].split() == ["5", "1.5000", "0.4500", "1.4000", "0.5000"]


def test_show_an_incomplete_run_as_json(runs_location: str) -> None:
    result = run_cli("runs", "show", f"{runs_location}/imperative-custom-2", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["status"] == "incomplete" and shown["summary"] is None
    assert [record["epoch"] for record in shown["epochs"]] == [1, 2], "the half-written last line is skipped"
    assert shown["steps"] == 3 and shown["config"]["loop"] == "custom"


def test_list_accepts_a_run_folder_itself(runs_location: str) -> None:
    result = run_cli("runs", "list", f"{runs_location}/symbolic-fit-1", "--json")
    assert result.returncode == 0, result.stderr
    assert [run["run_id"] for run in json.loads(result.stdout)] == ["symbolic-fit-1"]


def assert_one_line_error(result: subprocess.CompletedProcess[str], starts_with: str) -> None:
    assert result.returncode == EXIT_OUTPUT, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(starts_with), result.stderr


def test_show_where_no_run_is_exits_4(gcs_bucket: str) -> None:
    result = run_cli("runs", "show", f"gs://{gcs_bucket}/runs/never-ran")
    assert_one_line_error(result, f"error: no run at gs://{gcs_bucket}/runs/never-ran: it has no config.json")


@pytest.mark.usefixtures("gcs_server")
def test_list_of_a_missing_bucket_exits_4() -> None:
    result = run_cli("runs", "list", "gs://no-such-bucket-here/runs")
    assert_one_line_error(result, "error: bucket no-such-bucket-here does not exist")


def test_list_of_a_missing_local_folder_exits_4(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("runs", "list", str(tmp_path / "nope")), f"error: {tmp_path / 'nope'} does not exist")


def test_list_without_credentials_exits_4(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "STORAGE_EMULATOR_HOST"}
    env |= {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json"), "HOME": str(tmp_path)}
    assert_one_line_error(run_cli("runs", "list", "gs://some-bucket/runs", env=env), "error: no Google credentials")


def test_list_of_an_empty_bucket(gcs_bucket: str) -> None:
    result = run_cli("runs", "list", f"gs://{gcs_bucket}/runs")
    assert (result.returncode, result.stdout) == (0, f"no runs under gs://{gcs_bucket}/runs\n")


def test_runs_commands_never_import_tensorflow(tmp_path: Path) -> None:
    write_run(str(tmp_path), "symbolic-fit-1", api="symbolic", loop="fit", epochs_done=1, complete=True)
    script = (
        "import sys; from job.cli import main; main(['runs', 'list', sys.argv[1]]); print('tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "symbolic-fit-1" in result.stdout  # The listing really ran...
    assert result.stdout.splitlines()[-1] == "False", result.stderr  # ...without TensorFlow.


def test_list_without_a_location_lists_the_default_output(tmp_path: Path) -> None:
    """Where `train` writes without --output: $JOB_OUTPUT if set, else ./runs."""
    write_run(str(tmp_path / "runs"), "symbolic-fit-1", api="symbolic", loop="fit", epochs_done=5, complete=True)
    write_run(
        str(tmp_path / "elsewhere"), "imperative-fit-2", api="imperative", loop="fit", epochs_done=1, complete=False
    )
    env = {key: value for key, value in os.environ.items() if key != "JOB_OUTPUT"} | {"PYTHONPATH": str(REPO)}

    def listed(extra: dict[str, str]) -> list[str]:
        command = [sys.executable, "-m", "job", "runs", "list", "--json"]
        result = subprocess.run(command, cwd=tmp_path, env=env | extra, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return [run["run_id"] for run in json.loads(result.stdout)]

    assert listed({}) == ["symbolic-fit-1"]
    assert listed({"JOB_OUTPUT": str(tmp_path / "elsewhere")}) == ["imperative-fit-2"]
