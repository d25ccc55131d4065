"""Test helpers shared across modules: generated data and the flags of a tiny run."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from job.data import FOLDER_NAME, TEST_BATCH, TRAIN_BATCHES, Cifar10
from tests.forkserver import ForkedJob, ForkServer

ROOT = Path(__file__).resolve().parents[1]


def job_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `python -m job` subprocess: this one, quieter, with the checkout importable."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), **(extra or {})}


# Trainers fork from a process that has TensorFlow imported (tests/forkserver.py); one per pytest worker.
FORK_SERVER = ForkServer()
JobProcess = subprocess.Popen[str] | ForkedJob


def start_job(args: list[str], env: dict[str, str] | None = None) -> JobProcess:
    """Start `python -m job ARGS...` in the background, as a pod would (stdout and stderr captured): forked
    from the fork server, or a fresh interpreter when `env` changes what imports read."""
    env = env if env is not None else job_env()
    forked = FORK_SERVER.launch(args, env, server_env=job_env())
    if forked is not None:
        return forked
    return subprocess.Popen(
        [sys.executable, "-m", "job", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


# A tiny, fast training run: 500 images in batches of 50 (10 steps per epoch), validation = test[:100].
# The chapter's learning rate (0.1) is on the edge of diverging on 10 steps of this data: it learned on AVX-512
# machines and fell to chance on an AVX2 AMD EPYC, whose kernels round differently. 0.02 reaches 0.84 there.
TINY_TRAIN = ("--epochs", "2", "--batch-size", "50", "--validation-size", "100", "--learning-rate", "0.02")


def make_cifar_like(train_size: int, test_size: int, seed: int = 0, noise: float = 30.0) -> Cifar10:
    """Learnable 32×32 RGB images: each class has its own colour and stripe pattern, plus noise."""
    rng = np.random.default_rng(seed)

    def images_for(labels: np.ndarray) -> np.ndarray:
        colours = np.array([[(c * 25) % 256, (c * 67) % 256, (c * 139) % 256] for c in range(10)], dtype=np.float32)
        rows = np.arange(32, dtype=np.float32)[None, :, None, None]
        stripes = 40 * np.sin(rows * (labels[:, None, None, None] + 1) / 3)
        pixels = colours[labels][:, None, None, :] + stripes + rng.normal(0, noise, (len(labels), 32, 32, 3))
        return np.clip(pixels, 0, 255).astype(np.uint8)

    y_train = np.arange(train_size) % 10  # Balanced classes, like CIFAR-10.
    y_test = np.arange(test_size) % 10
    rng.shuffle(y_train)
    rng.shuffle(y_test)
    return Cifar10(images_for(y_train), y_train.reshape(-1, 1), images_for(y_test), y_test.reshape(-1, 1), "generated")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def epoch_records(run_dir: Path) -> list[dict[str, Any]]:
    return [record for record in read_jsonl(run_dir / "metrics.jsonl") if record["kind"] == "epoch"]


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar under `folder`, read back with TensorBoard's own EventAccumulator: {tag: [(step, value)]}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0, "scalars": 0})
    accumulator.Reload()
    scalars = {
        tag: [(event.step, float(tensor_util.make_ndarray(event.tensor_proto))) for event in accumulator.Tensors(tag)]
        for tag in accumulator.Tags()["tensors"]
    }
    scalars |= {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}
    return scalars


def tensorboard_hparams(folder: Path) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """The HParams summary in `folder`, read with EventAccumulator and the plugin's own parsers:
    (the run's hyper-parameters, the experiment's metric tags as "group/tag", the trial's session info)."""
    from google.protobuf import json_format
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    accumulator.Reload()
    contents = accumulator.PluginTagToContent(metadata.PLUGIN_NAME)
    session = metadata.parse_session_start_info_plugin_data(contents[metadata.SESSION_START_INFO_TAG])
    experiment = metadata.parse_experiment_plugin_data(contents[metadata.EXPERIMENT_TAG])
    hparams = {name: json_format.MessageToDict(value) for name, value in session.hparams.items()}
    metrics = [f"{info.name.group}/{info.name.tag}" for info in experiment.metric_infos]
    return hparams, metrics, {"group_name": session.group_name}


def write_tarball(dataset: Cifar10, path: Path) -> None:
    """Write arrays in the official cifar-10-python.tar.gz layout, as job.data reads it."""
    with tarfile.open(path, "w:gz") as archive:
        batches = np.array_split(np.arange(len(dataset.x_train)), len(TRAIN_BATCHES))
        train = zip(TRAIN_BATCHES, batches, strict=True)
        parts = [(name, dataset.x_train[rows], dataset.y_train[rows]) for name, rows in train]
        for name, images, labels in [*parts, (TEST_BATCH, dataset.x_test, dataset.y_test)]:
            rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
            payload = pickle.dumps({b"data": rows, b"labels": labels.reshape(-1).tolist()}, protocol=2)
            info = tarfile.TarInfo(f"{FOLDER_NAME}/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
