"""How many training steps each call into TensorFlow runs (`--steps-per-execution`), for both loops.

One step per call costs a Python round trip, a tf.function dispatch and callbacks every step: about 7% of
a CPU step here (bench/README.md). Running several steps per call removes most of it, but the loops must
still come back to Python wherever something is due: the loss record every LOG_EVERY_STEPS steps, a
mid-epoch checkpoint, the end of the epoch, and a stop request (seen at the next return, ≤ N steps later).

- `fit` runs whole chunks of N steps (Keras' `steps_per_execution`), so N must divide the steps per epoch
  and the log interval; the requested N is lowered to the largest such divisor. Under a tf.distribute
  strategy fit runs one step per call: Keras 3.15's multi-step `fit` function fails there ("You must feed
  a value for placeholder tensor 'while/cond/Placeholder_1'" under MirroredStrategy).
- The GradientTape loop cuts each epoch into chunks of at most N steps that end on every step where
  something is due, so any N works there and resume-at-any-step still holds.
No TensorFlow here: this is plain arithmetic, tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

AUTO_STEPS_PER_EXECUTION = 10  # ~0.3 s of CPU steps per call: stop requests are still seen promptly.
LOG_EVERY_STEPS = 100  # The chapter records the loss every 100 steps.


def requested_steps(requested: int) -> int:
    """0 means auto."""
    return requested or AUTO_STEPS_PER_EXECUTION


def fit_steps_per_execution(requested: int, steps_per_epoch: int, distributed: bool = False) -> int:
    """The largest N ≤ the request that divides both the epoch and the 100-step log interval."""
    if distributed:
        return 1
    aligned = math.gcd(steps_per_epoch, LOG_EVERY_STEPS)
    limit = min(requested_steps(requested), aligned)
    return max(divisor for divisor in range(1, limit + 1) if aligned % divisor == 0)


def chunks(first_step: int, steps_per_epoch: int, per_call: int, checkpoint_every_steps: int = 0) -> Iterator[int]:
    """Sizes of the GradientTape loop's calls from `first_step` to the end of the epoch.

    Each chunk is at most `per_call` (≥ 1) steps and ends on every multiple of the log interval and of
    `checkpoint_every_steps` (when set), so the Monitor sees exactly the steps it acts on.
    """
    intervals = [interval for interval in (LOG_EVERY_STEPS, checkpoint_every_steps) if interval > 0]
    step = first_step
    while step < steps_per_epoch:
        end = min([step + per_call, steps_per_epoch] + [(step // interval + 1) * interval for interval in intervals])
        yield end - step
        step = end
