"""--data-on-device: the training set kept on the device and each batch gathered in the training step trains to
the same numbers as tf.data gathering on the host (checked here with `on` on the CPU); it is recorded in
config.json, a resumed run may change it, and a tf.distribute strategy refuses `on` with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunJob
from tests.helpers import TINY_TRAIN

SAME_AS_SHARED_RUNS = ("--seed", "7", "--precision", "float32", *TINY_TRAIN)  # How trained_runs were trained.
EPOCH_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def epoch_records(run: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [record for record in records if record["kind"] == "epoch"]


def assert_same_epochs(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    assert len(ours) == len(theirs)
    for our_epoch, their_epoch in zip(ours, theirs, strict=True):
        for key in EPOCH_KEYS:
            assert our_epoch[key] == pytest.approx(their_epoch[key], rel=1e-6), (our_epoch["epoch"], key)


@pytest.mark.parametrize("variant", ["symbolic-fit", "imperative-custom"])
def test_on_device_trains_to_the_same_numbers_as_off(
    trained_runs: dict[str, Path], run_job: RunJob, tiny_tarball: Path, tmp_path: Path, variant: str
) -> None:
    api, loop = variant.split("-")
    result = run_job(
        "train", "--api", api, "--loop", loop, "--data", str(tiny_tarball), "--output", str(tmp_path),
        "--run-id", "on-device", "--data-on-device", "on", *SAME_AS_SHARED_RUNS,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    shared, on_device = trained_runs[variant], tmp_path / "on-device"
    assert {key: read_json(shared / "config.json")[key] for key in ("data_on_device", "data_on_device_requested")} == {
        "data_on_device": False,  # auto, on a CPU.
        "data_on_device_requested": "auto",
    }
    assert {
        key: read_json(on_device / "config.json")[key] for key in ("data_on_device", "data_on_device_requested")
    } == {
        "data_on_device": True,
        "data_on_device_requested": "on",
    }
    assert_same_epochs(epoch_records(on_device), epoch_records(shared))
    for key in ("test_accuracy", "test_loss"):
        assert read_json(on_device / "summary.json")[key] == pytest.approx(read_json(shared / "summary.json")[key])


def test_a_run_resumes_with_the_other_setting_to_the_same_numbers(
    trained_runs: dict[str, Path], run_job: RunJob, tiny_tarball: Path, tmp_path: Path
) -> None:
    """A pod retried on another node may resolve auto differently: started off, resumed on, as if never stopped."""
    common = ("--loop", "custom", "--data", str(tiny_tarball), "--output", str(tmp_path))
    resumed = tmp_path / "resumed"
    shutil.copytree(trained_runs["symbolic-custom"], resumed)  # 2 epochs with auto = off.
    (resumed / "summary.json").unlink()
    settings = [*SAME_AS_SHARED_RUNS, "--epochs", "3"]  # The later --epochs wins: one more epoch.
    result = run_job("train", *common, "--run-id", "resumed", "--data-on-device", "on", *settings)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout
    assert read_json(resumed / "config.json")["data_on_device"] is True
    straight = run_job("train", *common, "--run-id", "straight", "--data-on-device", "off", *settings)
    assert straight.returncode == 0, straight.stderr
    assert_same_epochs(epoch_records(resumed), epoch_records(tmp_path / "straight"))


def test_on_under_a_strategy_is_refused_with_one_line(run_job: RunJob, tiny_tarball: Path, tmp_path: Path) -> None:
    result = run_job(
        "train", "--data", str(tiny_tarball), "--output", str(tmp_path), "--run-id", "mirrored",
        "--strategy", "mirrored", "--data-on-device", "on", *TINY_TRAIN,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --data-on-device on keeps the training set on one device, but this run uses the mirrored strategy: "
        "drop it (auto or off) or train on one device (--strategy none)"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mirrored" / "summary.json").exists()


def test_a_bad_value_is_a_usage_error(run_job: RunJob, tiny_tarball: Path, tmp_path: Path) -> None:
    result = run_job("train", "--data", str(tiny_tarball), "--output", str(tmp_path), "--data-on-device", "gpu")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--data-on-device" in result.stderr and "'gpu' is not one of 'auto', 'on', 'off'" in result.stderr
