"""How a run trains, worked out once before its first step and then only read (job.train makes it).

The loops and the Monitor take their decisions from here instead of each being handed a share of them:
the precision and XLA that the hardware allows, the steps per call into TensorFlow, where training starts
after a restore, and this worker's role. No TensorFlow here.
"""

from __future__ import annotations

from dataclasses import dataclass

from job.config import Loop, TrainConfig


@dataclass(frozen=True)
class Plan:
    config: TrainConfig
    precision: str  # The resolved Keras dtype policy: "float32", "mixed_bfloat16" or "mixed_float16".
    jit_compile: bool
    steps_per_epoch: int
    steps_per_execution: int  # What each call into TensorFlow runs (fit: a divisor of the epoch and the log).
    first_epoch: int  # Completed epochs restored from the checkpoint: training starts at this 0-based epoch.
    first_step: int  # Steps already done in that epoch (the custom loop resumes mid-epoch; fit at epoch starts).
    is_chief: bool  # The run's one writer: pictures, TensorBoard HParams and publishing.
    workers: int  # Worker processes in the run (1 unless multi-worker).

    @property
    def fit(self) -> bool:
        return self.config.loop == Loop.fit

    @property
    def save_on_stop(self) -> bool:
        """A stop saves the position only when the run has one worker: a lone stopping worker cannot join a
        collective save."""
        return self.workers == 1
