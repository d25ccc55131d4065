"""job.stepping: which steps each call into TensorFlow runs, so records, checkpoints and stops still land."""

from __future__ import annotations

import pytest

from job.stepping import AUTO_STEPS_PER_EXECUTION, LOG_EVERY_STEPS, chunks, fit_steps_per_execution, requested_steps


def ends(first_step: int, steps_per_epoch: int, requested: int, checkpoint_every: int = 0) -> list[int]:
    """The steps after which the loop returns to Python."""
    step, result = first_step, []
    for size in chunks(first_step, steps_per_epoch, requested, checkpoint_every):
        assert size >= 1
        step += size
        result.append(step)
    return result


def test_auto_runs_ten_steps_per_call_on_the_chapters_epoch() -> None:
    assert fit_steps_per_execution(0, 250) == AUTO_STEPS_PER_EXECUTION == 10
    assert ends(0, 250, requested_steps(0)) == list(range(10, 251, 10))


@pytest.mark.parametrize(
    ("requested", "steps_per_epoch", "expected"),
    [
        (1, 250, 1),
        (16, 250, 10),  # 16 divides neither 250 nor 100: the largest divisor of gcd(250, 100) = 50 below it.
        (50, 250, 50),
        (64, 250, 50),
        (10, 7, 1),  # gcd(7, 100) = 1: a 7-step epoch runs step by step.
        (0, 12, 4),  # gcd(12, 100) = 4.
        (0, 30, 10),
    ],
)
def test_fit_lowers_the_request_to_a_divisor_of_the_epoch_and_log_interval(
    requested: int, steps_per_epoch: int, expected: int
) -> None:
    chosen = fit_steps_per_execution(requested, steps_per_epoch)
    assert chosen == expected
    assert steps_per_epoch % chosen == 0 and LOG_EVERY_STEPS % chosen == 0


def test_custom_loop_chunks_end_on_every_log_step_checkpoint_and_epoch_end() -> None:
    got = ends(0, 250, 16, checkpoint_every=35)
    assert got[-1] == 250
    assert all(b - a <= 16 for a, b in zip([0, *got], got, strict=False))
    for due in [35, 70, 100, 105, 140, 175, 200, 210, 245, 250]:
        assert due in got, due


def test_custom_loop_resumes_mid_epoch_on_the_same_boundaries() -> None:
    assert ends(95, 250, 10) == [100, 110, 120, 130, 140, 150, 160, 170, 180, 190, 200, 210, 220, 230, 240, 250]
    assert ends(3, 12, 5, checkpoint_every=4) == [4, 8, 12]
    assert ends(250, 250, 10) == []  # Resumed exactly at the end: nothing left to run.


def test_one_step_per_call_is_the_chapters_loop() -> None:
    assert ends(0, 5, 1) == [1, 2, 3, 4, 5]


def test_fit_under_a_distribution_strategy_runs_one_step_per_call() -> None:
    """Keras 3.15's multi-step fit function fails under MirroredStrategy (tests/test_distribute.py trains it)."""
    assert fit_steps_per_execution(0, 250, distributed=True) == 1
    assert fit_steps_per_execution(50, 250, distributed=True) == 1
