"""Two tiny runs (symbolic + fit, imperative + custom loop, same data and seed): their pictures, and `compare`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from job import plots, visualize
from job.gcs import GcsStore
from tests.conftest import RunJob
from tests.test_plots import assert_sane_png

pytestmark = pytest.mark.slow  # The shared trained runs: tests/conftest.py.
RUN_IDS = ("symbolic-fit", "imperative-custom")


@pytest.fixture(scope="module")
def runs_folder(trained_runs: dict[str, Path]) -> Path:
    """The session's trained runs (tests/conftest.py): symbolic-fit and imperative-custom among them."""
    return trained_runs[RUN_IDS[0]].parent


def summary(run: Path) -> dict[str, Any]:
    return dict(json.loads((run / "summary.json").read_text()))


@pytest.mark.parametrize("run_id", RUN_IDS)
def test_every_run_writes_its_pictures(runs_folder: Path, run_id: str) -> None:
    folder = runs_folder / run_id / plots.FOLDER
    assert_sane_png(folder / plots.LABEL_DISTRIBUTION, min_width=600)
    assert_sane_png(folder / plots.SAMPLE_GRID, 500, 500)
    assert_sane_png(folder / plots.LEARNING_CURVES, min_width=700)
    assert_sane_png(folder / plots.MODEL_DIAGRAM, min_height=1000)  # make test installs Graphviz's dot.
    model_summary = (folder / plots.MODEL_SUMMARY).read_text()
    assert f"{summary(runs_folder / run_id)['parameters']:,}" in model_summary


def test_compare_reports_each_runs_own_numbers(runs_folder: Path, run_job: RunJob, tmp_path: Path) -> None:
    runs = [str(runs_folder / run_id) for run_id in RUN_IDS]
    result = run_job("compare", *runs, "--output", str(tmp_path / "cmp"), "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["run"]: row for row in json.loads(result.stdout)}
    for run_id in RUN_IDS:
        expected = summary(runs_folder / run_id)
        row = rows[run_id]
        assert (row["api"], row["loop"], row["epochs"], row["params"]) == (
            expected["api"], expected["loop"], 2, expected["parameters"])  # fmt: skip
        assert row["test_accuracy"] == expected["test_accuracy"] and row["val_accuracy"] == expected["val_accuracy"]
        assert row["wall_seconds"] == expected["wall_seconds"]
        assert row["images_per_s"] == expected["train_images_per_second"]
    markdown = (tmp_path / "cmp" / visualize.COMPARISON_TABLE).read_text()
    for run_id in RUN_IDS:
        assert f"| {run_id} |" in markdown and f"{summary(runs_folder / run_id)['test_accuracy']:.4f}" in markdown
    assert_sane_png(tmp_path / "cmp" / visualize.COMPARISON_PLOT)


def test_compare_prints_a_table_for_a_folder_of_runs(runs_folder: Path, run_job: RunJob, tmp_path: Path) -> None:
    result = run_job("compare", str(runs_folder), "--output", str(tmp_path / "cmp"))
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()[:3]
    assert header.split()[:5] == ["RUN", "API", "LOOP", "PARAMS", "EPOCHS"]
    for line in rows:
        cells = line.split()
        expected = summary(runs_folder / cells[0])
        assert cells[1:6] == [expected["api"], expected["loop"], "1,070,794", "2", f"{expected['val_accuracy']:.4f}"]
        assert cells[6] == f"{expected['test_accuracy']:.4f}"


def test_compare_shows_an_incomplete_run_without_test_numbers(
    runs_folder: Path, run_job: RunJob, tmp_path: Path
) -> None:
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("config.json", "metrics.jsonl"):
        shutil.copy(runs_folder / RUN_IDS[0] / name, unfinished / name)
    result = run_job("compare", str(unfinished), "--output", str(tmp_path / "cmp"), "--json")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["status"] == "incomplete" and row["test_accuracy"] is None and row["epochs"] == 2
    assert row["val_accuracy"] == summary(runs_folder / RUN_IDS[0])["val_accuracy"]  # From metrics.jsonl.


def test_compare_without_a_run_exits_4(run_job: RunJob, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_job("compare", str(tmp_path / "empty"), "--output", str(tmp_path / "cmp"))
    assert result.returncode == 4 and "no run at" in result.stderr, result.stderr


def test_compare_reads_and_writes_gcs(runs_folder: Path, run_job: RunJob, gcs_bucket: str) -> None:
    for run_id in RUN_IDS:
        for name in ("config.json", "metrics.jsonl", "summary.json"):
            GcsStore(gcs_bucket, f"runs/{run_id}").upload_file(name, runs_folder / run_id / name)
    result = run_job("compare", f"gs://{gcs_bucket}/runs", "--output", f"gs://{gcs_bucket}/comparison", "--json")
    assert result.returncode == 0, result.stderr
    accuracies = {row["run"]: row["test_accuracy"] for row in json.loads(result.stdout)}
    assert accuracies == {run_id: summary(runs_folder / run_id)["test_accuracy"] for run_id in RUN_IDS}
    assert set(GcsStore(gcs_bucket, "comparison").list_keys()) == {"comparison.md", "val_accuracy.png"}


def test_runs_list_and_show_read_the_trainers_own_output(trained_runs: dict[str, Path], run_job: RunJob) -> None:
    folder = trained_runs["symbolic-fit"].parent
    listed = run_job("runs", "list", str(folder))
    assert listed.returncode == 0, listed.stderr
    for run_id in trained_runs:
        assert run_id in listed.stdout
    shown = run_job("runs", "show", str(trained_runs["imperative-custom"]), "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    expected = summary(trained_runs["imperative-custom"])
    assert (report["status"], report["api"], report["loop"]) == ("complete", "imperative", "custom")
    assert (report["epochs_done"], report["epochs_planned"]) == (2, 2)
    assert (report["test_accuracy"], report["test_loss"]) == (expected["test_accuracy"], expected["test_loss"])
