"""End to end through the CLI: all four api × loop variants train on generated data and leave a full run folder."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, VARIANTS, RunJob
from tests.helpers import TINY_TRAIN, epoch_records, tensorboard_hparams, tensorboard_scalars

EPOCH_KEYS = {"kind", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "images_per_second"}

pytestmark = pytest.mark.slow  # The shared trained runs: tests/conftest.py.


def read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


@pytest.mark.parametrize(("api", "loop"), VARIANTS)
def test_run_folder_has_the_full_layout(trained_runs: dict[str, Path], api: str, loop: str) -> None:
    run = trained_runs[f"{api}-{loop}"]
    for name in ("config.json", "metrics.jsonl", "summary.json", "model.keras", "model/1/saved_model.pb"):
        assert (run / name).is_file(), name
    assert all(any((run / "tensorboard" / folder).glob("events.out.tfevents.*")) for folder in ("train", "validation"))
    assert (run / "checkpoints" / "checkpoint").is_file()

    config = read_json(run / "config.json")
    assert (config["api"], config["loop"], config["batch_size"], config["seed"]) == (api, loop, 50, 7)
    assert config["versions"]["tensorflow"].startswith("2.21")
    assert config["data"]["train_size"] == 500 and config["data"]["test_size"] == 200
    assert config["data"]["train_label_counts"]["cat"] == 50 and config["data"]["train_balanced"] is True
    assert config["steps_per_epoch"] == 10

    epochs = epoch_records(run)
    assert [record["epoch"] for record in epochs] == [1, 2]
    assert all(set(record) >= EPOCH_KEYS for record in epochs)
    # TensorBoard holds the same numbers as metrics.jsonl, at the step where each epoch ended, in Keras' layout:
    # runs train/ and validation/ with the same tags, so each chart draws training and validation together.
    runs = {folder: tensorboard_scalars(run / "tensorboard" / folder) for folder in ("train", "validation")}
    for folder, prefix in (("train", ""), ("validation", "val_")):
        for tag in ("epoch_loss", "epoch_accuracy"):
            key = prefix + tag.removeprefix("epoch_")
            expected = [(record["epoch"] * 10, pytest.approx(record[key], rel=1e-5)) for record in epochs]
            assert runs[folder][tag] == expected, (folder, tag)
    hparams, metrics, session = tensorboard_hparams(run / "tensorboard")
    assert {name: hparams[name] for name in ("api", "loop", "batch_size", "seed", "precision")} == {
        "api": api, "loop": loop, "batch_size": 50.0, "seed": 7.0, "precision": "float32"
    }  # fmt: skip
    assert hparams["learning_rate"] == pytest.approx(0.02)
    assert set(metrics) >= {"validation/epoch_accuracy", "validation/epoch_loss", "train/epoch_loss"}
    assert session["group_name"] == run.name  # The trial id: a retried pod adds to the same trial.

    summary = read_json(run / "summary.json")
    assert summary["parameters"] == 1_070_794
    assert summary["epochs"] == 2 and (summary["api"], summary["loop"]) == (api, loop)
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["train_images_per_second"] > 0
    assert summary["val_accuracy"] == epochs[-1]["val_accuracy"]


def test_models_learn_the_generated_classes(trained_runs: dict[str, Path]) -> None:
    for run in trained_runs.values():
        # Chance is 0.1; these float32 runs reach 0.84 (2 epochs of 500 images; AMD EPYC, AVX2).
        assert read_json(run / "summary.json")["test_accuracy"] > 0.2, run.name


@pytest.mark.parametrize("api", ["symbolic", "imperative"])
def test_fit_and_custom_loop_train_identically(trained_runs: dict[str, Path], api: str) -> None:
    """Same seed, same batches, same optimizer: the two loops are the same computation."""
    fit, custom = (epoch_records(trained_runs[f"{api}-{loop}"]) for loop in ("fit", "custom"))
    for fit_epoch, custom_epoch in zip(fit, custom, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert fit_epoch[key] == pytest.approx(custom_epoch[key], rel=1e-4), key


RELOAD_SCRIPT = """
import sys, json, numpy as np, keras, tensorflow as tf
import job.models  # Registers the ConvNet class for .keras loading.
run = sys.argv[1]
images = np.random.default_rng(3).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
trained = keras.saving.load_model(run + "/model.keras")
served = tf.saved_model.load(run + "/model/1")
serving = served.signatures["serving_default"]
output = list(serving(image=tf.constant(images)).values())[0].numpy()
spec = serving.structured_input_signature[1]["image"]
print(json.dumps({"max_diff": float(np.abs(output - trained.predict(images, verbose=0)).max()),
                  "shape": list(output.shape), "dtype": spec.dtype.name, "sums": output.sum(axis=1).tolist()}))
"""


@pytest.mark.parametrize("api", ["symbolic", "imperative"])
def test_saved_model_reloads_in_a_fresh_process_with_the_same_predictions(
    trained_runs: dict[str, Path], api: str
) -> None:
    run = trained_runs[f"{api}-custom"]
    result = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, str(run)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"] == [16, 10] and report["dtype"] == "uint8"
    assert report["max_diff"] < 1e-5
    assert report["sums"] == pytest.approx([1.0] * 16, abs=1e-4)


def test_existing_finished_run_is_refused_then_overwritten(
    trained_runs: dict[str, Path], run_job: RunJob, tiny_tarball: Path, tmp_path: Path
) -> None:
    run = tmp_path / "symbolic-fit"
    shutil.copytree(trained_runs["symbolic-fit"], run)  # The shared run stays as it is for the other tests.
    before = (run / "summary.json").read_bytes()
    args = ("train", "--data", str(tiny_tarball), "--output", str(run.parent), "--run-id", run.name, *TINY_TRAIN)
    refused = run_job(*args)
    assert refused.returncode == 4
    assert refused.stderr.strip() == (
        f"error: run {run} already finished (it has summary.json): pick another --run-id or pass --overwrite"
    )
    assert (run / "summary.json").read_bytes() == before
    replaced = run_job(*args, "--overwrite", "--epochs", "1")
    assert replaced.returncode == 0, replaced.stderr
    assert read_json(run / "summary.json")["epochs"] == 1
    assert len(epoch_records(run)) == 1


@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_steps_per_execution_changes_speed_not_results(
    trained_runs: dict[str, Path], run_job: RunJob, tiny_tarball: Path, tmp_path: Path, loop: str
) -> None:
    """The shared runs group steps (auto: 10 per call); one step per call must train to the same numbers."""
    result = run_job(
        "train", "--api", "imperative", "--loop", loop, "--data", str(tiny_tarball), "--output", str(tmp_path),
        "--run-id", "one-step", "--seed", "7", "--steps-per-execution", "1", "--precision", "float32", *TINY_TRAIN,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    grouped_run = trained_runs[f"imperative-{loop}"]
    assert read_json(grouped_run / "config.json")["steps_per_execution"] == 10
    assert read_json(tmp_path / "one-step" / "config.json")["steps_per_execution"] == 1
    grouped, single = epoch_records(grouped_run), epoch_records(tmp_path / "one-step")
    for grouped_epoch, single_epoch in zip(grouped, single, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert grouped_epoch[key] == pytest.approx(single_epoch[key], rel=1e-6), key


def test_resuming_in_another_precision_is_refused_with_exit_2(
    trained_runs: dict[str, Path], run_job: RunJob, tiny_tarball: Path, tmp_path: Path
) -> None:
    """A run trained in float32, made unfinished again, may not continue in bfloat16: two runs would mix."""
    run = tmp_path / "symbolic-fit"
    shutil.copytree(trained_runs["symbolic-fit"], run)
    (run / "summary.json").unlink()
    result = run_job(
        "train", "--data", str(tiny_tarball), "--output", str(tmp_path), "--run-id", run.name, "--seed", "7",
        "--precision", "mixed_bfloat16", *TINY_TRAIN,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: run {run} was trained in float32, this machine resolves --precision to mixed_bfloat16: "
        "pass --precision float32 to resume it"
    )
    assert not (run / "summary.json").exists()


def test_log_format_json_prints_one_json_object_per_line_end_to_end(trained_runs: dict[str, Path]) -> None:
    """README: `--log-format json` for log collectors. Every line parses, and carries the same numbers as the run."""
    run = trained_runs["imperative-custom"]
    lines = (run.parent / "imperative-custom.stdout").read_text().splitlines()
    events = [json.loads(line) for line in lines]  # Fails on any line that is not JSON.
    assert all(isinstance(event, dict) and isinstance(event["time"], float) for event in events)
    names = [event["event"] for event in events]
    assert names[0] == "devices" and names[-1] == "finished" and "training" in names
    assert [event["epoch"] for event in events if event["event"] == "epoch"] == [1, 2]
    epochs = epoch_records(run)
    logged = [event for event in events if event["event"] == "epoch"]
    assert [event["val_accuracy"] for event in logged] == [record["val_accuracy"] for record in epochs]
    finished = events[-1]
    assert finished["run"] == str(run) and float(finished["test_accuracy"]) == pytest.approx(
        read_json(run / "summary.json")["test_accuracy"], abs=1e-4
    )
    text = (run.parent / "symbolic-custom.stdout").read_text()
    assert not text.lstrip().startswith("{") and "epoch 2/2" in text  # The default stays human-readable.


def test_config_json_records_where_and_how_the_run_happened(trained_runs: dict[str, Path]) -> None:
    """README: config.json holds every resolved setting and where the run happened."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    for run in trained_runs.values():
        config = read_json(run / "config.json")
        assert config["precision"] == "float32" and config["precision_requested"] == "float32"
        assert config["xla"] is False  # auto is off on a CPU.
        assert any("CPU" in device for device in config["devices"]), config["devices"]
        assert config["host"] == socket.gethostname()
        assert config["git_commit"] == commit and config["version"]
        started = datetime.fromisoformat(config["started_at"])
        assert timedelta(0) <= datetime.now(UTC) - started < timedelta(hours=2)
        assert config["attempts"] == 1 and "resumed" not in config
        assert config["versions"]["tensorflow"].startswith("2.21")
