"""What both training loops report to: step and epoch records, checkpoints, NaN checks, stop requests.

The loops differ only in how they compute a step; everything a run leaves behind goes through here, so
`fit` and the GradientTape loop write identical metrics.jsonl, checkpoints and TensorBoard logs.

TensorBoard gets Keras' own layout (keras.callbacks.TensorBoard): runs `train/` and `validation/` under the
run's `tensorboard/`, tags `epoch_loss`, `epoch_accuracy` (so training and validation share one chart) and
`batch_loss` every 100 steps, plus an HParams summary in `tensorboard/` itself, so a sweep read with
`tensorboard --logdir gs://BUCKET/runs` shows in the HParams dashboard. The x axis is the training step
for every scalar, epochs included (an epoch's values sit at the step it ended on).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf

from job import stopping
from job.artifacts import CHECKPOINTS, TENSORBOARD, RunWriter
from job.checkpoints import Checkpointer
from job.errors import DivergedError
from job.metrics import EpochRecord, StepRecord
from job.plan import Plan
from job.progress import Reporter
from job.stepping import LOG_EVERY_STEPS

HParams = dict[str, bool | int | float | str]
TRAIN, VALIDATION = "train", "validation"  # TensorBoard runs (sub-folders), as Keras names them.
# Record key → (TensorBoard run, tag). `batch_loss` is the epoch's running mean, as Keras logs it; the custom
# loop's loss of the single batch at that step is `single_batch_loss`.
TENSORBOARD_TAGS: dict[str, dict[str, tuple[str, str]]] = {
    "epoch": {
        "loss": (TRAIN, "epoch_loss"),
        "accuracy": (TRAIN, "epoch_accuracy"),
        "val_loss": (VALIDATION, "epoch_loss"),
        "val_accuracy": (VALIDATION, "epoch_accuracy"),
        "images_per_second": (TRAIN, "epoch_images_per_second"),
    },
    "step": {
        "loss": (TRAIN, "batch_loss"),
        "batch_loss": (TRAIN, "single_batch_loss"),
        "images_per_second": (TRAIN, "batch_images_per_second"),
    },
}


class Monitor:
    def __init__(self, writer: RunWriter, reporter: Reporter, checkpointer: Checkpointer, plan: Plan) -> None:
        self.writer = writer
        self.reporter = reporter
        self.checkpointer = checkpointer
        self.plan = plan
        self.steps_per_epoch = plan.steps_per_epoch
        self.batch_size = plan.config.batch_size
        self.epoch_records: list[Mapping[str, Any]] = [r for r in writer.read_metrics() if r["kind"] == "epoch"]
        self.tensorboard = {
            run: tf.summary.create_file_writer(str(writer.path(TENSORBOARD) / run)) for run in (TRAIN, VALIDATION)
        }
        self._epoch_started = self._train_ended = time.monotonic()
        self._first_step = 0

    @property
    def stop_requested(self) -> bool:
        """A stop was requested (job.stopping): the loops save their position and return at the next step."""
        return stopping.requested() is not None

    def epoch_begin(self, epoch: int, first_step: int = 0) -> None:
        """`epoch` is 0-based here and 1-based in every record and log line."""
        self._epoch_started = time.monotonic()
        self._first_step = first_step

    def step_end(
        self, epoch: int, step: int, loss: float | tf.Tensor, batch_loss: float | tf.Tensor | None = None
    ) -> None:
        """`step` counts completed steps in this epoch (1-based)."""
        if step % LOG_EVERY_STEPS == 0:
            elapsed = time.monotonic() - self._epoch_started
            record: StepRecord = {
                "kind": "step",
                "epoch": epoch + 1,
                "step": step,
                "samples_seen": step * self.batch_size,
                "loss": float(loss),
                "images_per_second": (step - self._first_step) * self.batch_size / max(elapsed, 1e-9),
            }
            if batch_loss is not None:
                record["batch_loss"] = float(batch_loss)
            self._check_finite(record)
            self.writer.append_metrics([record])
            self._log(record)
        if step == self.steps_per_epoch:
            self._train_ended = time.monotonic()
        # Mid-epoch checkpoints are the custom loop's alone: fit refuses the flag (job.config.validate).
        if self.plan.config.checkpoint_every_steps and step % self.plan.config.checkpoint_every_steps == 0:
            self.save_position(epoch, step)

    def stopped_at(self, epoch: int, step: int) -> None:
        """The loop stopped on request after `step` steps of `epoch`: keep them if this run can."""
        if self.plan.save_on_stop:
            self.save_position(epoch, step)

    def save_position(self, epoch: int, step: int) -> None:
        """A mid-epoch checkpoint (custom loop): resumes at `step` of `epoch` with the running metrics."""
        if 0 < step < self.steps_per_epoch:
            self.checkpointer.save(epoch, step)
            self.writer.sync_tree(CHECKPOINTS, prune=True)

    def epoch_end(self, epoch: int, metrics: dict[str, float | tf.Tensor]) -> None:
        """Record a completed epoch, then checkpoint it.

        In this order a kill between the two leaves a record past the checkpoint, which the resume trims
        and retrains; the other order would leave an epoch with no record.
        """
        train_seconds = max(self._train_ended - self._epoch_started, 1e-9)
        record: EpochRecord = {
            "kind": "epoch",
            "epoch": epoch + 1,
            "loss": float(metrics["loss"]),
            "accuracy": float(metrics["accuracy"]),
            "val_loss": float(metrics["val_loss"]),
            "val_accuracy": float(metrics["val_accuracy"]),
            "seconds": time.monotonic() - self._epoch_started,
            "train_seconds": train_seconds,
            "images_per_second": (self.steps_per_epoch - self._first_step) * self.batch_size / train_seconds,
        }
        self._check_finite(record)
        self.writer.append_metrics([record])
        self.checkpointer.save(epoch + 1, 0)
        self.writer.sync_tree(CHECKPOINTS, prune=True)
        self.writer.sync_tree(TENSORBOARD)
        self.epoch_records.append(record)
        self._log(record)

    def _check_finite(self, record: Mapping[str, Any]) -> None:
        if not all(math.isfinite(value) for key, value in record.items() if "loss" in key):
            raise DivergedError(
                f"training diverged at epoch {record['epoch']} step {record.get('step', self.steps_per_epoch)}: "
                f"loss is {record['loss']}; lower --learning-rate or use --precision float32"
            )

    def _log(self, record: Mapping[str, Any]) -> None:
        """TensorBoard's scalars at the training step, then the progress line with the time left."""
        epochs, steps_per_epoch = self.plan.config.epochs, self.steps_per_epoch
        done = (record["epoch"] - 1) * steps_per_epoch + record.get("step", steps_per_epoch)
        for key, (run, tag) in TENSORBOARD_TAGS[record["kind"]].items():
            if key in record:
                with self.tensorboard[run].as_default():
                    tf.summary.scalar(tag, record[key], step=done)
        for run_writer in self.tensorboard.values():
            run_writer.flush()
        speed = record.get("images_per_second")
        remaining_images = (epochs * steps_per_epoch - done) * self.batch_size
        self.reporter.record(record, epochs, steps_per_epoch, remaining_images / speed if speed else None)


def write_hparams(folder: Path, hparams: HParams, trial_id: str) -> None:
    """The run's HParams summary and the experiment's layout (the same in every run of a sweep).

    As TensorBoard's HParams guide writes them (hp.hparams_config, then hp.hparams per trial); the metrics
    are the epoch scalars of the runs beside it (group = the TensorBoard run under this folder).
    """
    from tensorboard.plugins.hparams import api as hp

    metrics = [
        hp.Metric(tag, group=run, display_name=f"{run} {tag.removeprefix('epoch_')}")
        for run in (VALIDATION, TRAIN)
        for tag in ("epoch_accuracy", "epoch_loss")
    ]
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        hp.hparams_config(hparams=[hp.HParam(name) for name in hparams], metrics=metrics)
        hp.hparams(hparams, trial_id=trial_id)
    writer.close()
