"""Resumable training state: model, optimizer, position (epoch, step) and running metrics.

One `tf.train.Checkpoint` serves both loops, so a retried pod resumes the same way whichever loop it runs.
(Keras 3's BackupAndRestore is not used: it writes a .weights.h5 file and the epoch as JSON to a local
folder, and only `fit` knows it.) Epochs are counted as *completed* epochs.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from job.errors import OutputError
from job.faults import write_atomically

log = logging.getLogger(__name__)
CHECKPOINT_NAME = re.compile(r"^ckpt-(\d+)\.index$")

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
        self.directory = directory
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
        # Read before the manager, which trusts the state file; state_readable: it lists what is on disk.
        self.stored, self.state_readable = stored_checkpoints(directory)
        self.repaired = False  # Set when restore deleted damaged files or rewrote the state file.
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=KEEP)

    def restore(self) -> Restored:
        """Restore the newest readable checkpoint: where training goes on from, and which checkpoint.

        A save cut off by a kill or a full disk can leave the newest checkpoint damaged (its index, its data
        or the `checkpoint` state file); the previous one is then used and the damaged one deleted. With
        none readable the run cannot go on without losing its state: exit 4 naming the folder.
        """
        failures = []
        for number, prefix in enumerate(self.stored):
            try:
                self.checkpoint.restore(str(prefix)).assert_existing_objects_matched()
            except Exception as error:  # Damage shows as OpError, IndexError, ValueError, AssertionError...
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
                failures.append(f"{prefix.name}: {reason}")
                log.warning("checkpoint %s is unreadable (%s): trying the one before it", prefix, reason)
                continue
            if number or not self.state_readable:
                self._forget(self.stored[:number], keep=list(reversed(self.stored[number:])))
            log.info("resumed from %s", prefix)
            return Restored(int(self.completed_epochs.numpy()), int(self.steps_into_epoch.numpy()), prefix.name)
        if failures:
            raise OutputError(
                f"no readable checkpoint in {self.directory} ({'; '.join(failures)}): the run's state is lost; "
                f"delete {self.directory.parent} (or that folder in its bucket) to train this run again from the start"
            )
        return Restored(0, 0, None)

    def save(self, completed_epochs: int, steps_into_epoch: int) -> None:
        self.completed_epochs.assign(completed_epochs)
        self.steps_into_epoch.assign(steps_into_epoch)
        self.manager.save()

    def _forget(self, damaged: list[Path], keep: list[Path]) -> None:
        """Delete damaged checkpoints and point the state file (and a new manager) at the ones kept."""
        for prefix in damaged:
            for path in self.directory.glob(f"{prefix.name}.*"):
                path.unlink()
        # The state file's text format, as tf.train.CheckpointManager writes it (names relative to the folder).
        lines = [
            f'model_checkpoint_path: "{keep[-1].name}"',
            *(f'all_model_checkpoint_paths: "{p.name}"' for p in keep),
        ]
        write_atomically(self.directory / "checkpoint", ("\n".join(lines) + "\n").encode())
        self.repaired = True
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory), max_to_keep=KEEP)


def stored_checkpoints(directory: Path) -> tuple[list[Path], bool]:
    """Checkpoint prefixes in directory, newest first, found on disk and in the state file; and whether the
    state file was readable and listed them all. The leftovers of a cut-off save are removed."""
    for leftover in directory.glob("*_temp"):  # tf.train.Checkpoint writes into ckpt-N_temp, then renames.
        shutil.rmtree(leftover, ignore_errors=True)
    numbers = {int(match[1]) for path in directory.glob("ckpt-*.index") if (match := CHECKPOINT_NAME.match(path.name))}
    try:
        state = tf.train.get_checkpoint_state(str(directory))
    except Exception as error:  # Garbage fails as UnicodeDecodeError, ValueError or a parse error.
        log.warning("%s is unreadable (%s): using the checkpoints on disk", directory / "checkpoint", error)
        (directory / "checkpoint").unlink()
        state = None
    paths = state.all_model_checkpoint_paths if state else []
    listed = {int(match[1]) for name in paths if (match := CHECKPOINT_NAME.match(Path(name).name + ".index"))}
    readable = not numbers or (state is not None and listed >= numbers)
    return [directory / f"ckpt-{number}" for number in sorted(numbers | listed, reverse=True)], readable
