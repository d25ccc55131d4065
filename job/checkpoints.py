"""Resumable training state: model, optimizer, position (epoch, step) and running metrics.

One `tf.train.Checkpoint` serves both loops (it is what Keras' BackupAndRestore uses underneath), so a
retried pod resumes the same way whichever loop it runs. Epochs are counted as *completed* epochs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

log = logging.getLogger(__name__)

KEEP = 2  # The newest and one spare, in case the newest was cut off mid-write by a kill -9.


@dataclass(frozen=True)
class Restored:
    """What a restore found: completed epochs, steps into the next one, and the checkpoint's name (None: none)."""

    completed_epochs: int
    steps_into_epoch: int
    checkpoint: str | None


class Checkpointer:
    def __init__(
        self,
        directory: Path,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        metrics: dict[str, keras.metrics.Metric],
    ) -> None:
        self.completed_epochs = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.steps_into_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            model=model,
            optimizer=optimizer,
            completed_epochs=self.completed_epochs,
            steps_into_epoch=self.steps_into_epoch,
            # Keras metrics are not trackable themselves, but their variables are (the running mean of a
            # half-finished epoch, so a mid-epoch resume reports the whole epoch's loss and accuracy).
            metrics={name: list(metric.variables) for name, metric in metrics.items()},
        )
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=KEEP)

    def restore(self) -> Restored:
        """Restore the newest checkpoint if there is one: where training goes on from, and which checkpoint."""
        latest = self.manager.latest_checkpoint
        if latest is None:
            return Restored(0, 0, None)
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        log.info("resumed from %s", latest)
        return Restored(int(self.completed_epochs.numpy()), int(self.steps_into_epoch.numpy()), Path(latest).name)

    def save(self, completed_epochs: int, steps_into_epoch: int = 0) -> str:
        self.completed_epochs.assign(completed_epochs)
        self.steps_into_epoch.assign(steps_into_epoch)
        return str(self.manager.save())
