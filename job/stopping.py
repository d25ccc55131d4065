"""Stop requests (SIGTERM from a drain, an eviction or a preemption; Ctrl-C): recorded, then acted on at safe points.

A Python signal handler runs between two bytecodes of whatever the main thread executes: inside
TensorFlow, matplotlib or the storage client as often as in our own code. An exception raised from the
handler there is caught and dropped by any library's `except Exception` (seen: a SIGTERM landing while
matplotlib laid out a label was swallowed, and the run trained to the end and exited 0; in a container,
where the job is PID 1, `docker stop` then waited for it). So the handler never raises: it records the
request, and the job asks `raise_if_requested()` at the points where stopping is safe (between loading
steps, pictures and publishing steps), while the training loops look at `requested()` at step boundaries
and save their position first. The latency is the time to the next such point: a few seconds at most.

A second Ctrl-C stops at once (KeyboardInterrupt), for a person at a terminal who will not wait.

Until the train command takes over (`install()`), `install_at_start()` makes SIGTERM end the process at
once, as the default action would, but with the retryable exit code and one line: the job is PID 1 in a
container, where a signal without a handler is ignored, and `docker stop` or the kubelet would wait out
the grace period and then kill it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType

from job.errors import EXIT_INTERRUPTED, Interrupted
from job.progress import WARNING, stderr_line

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_requested: str | None = None


def install_at_start() -> None:
    """SIGTERM ends the process at once with exit 75: for start-up and the commands that do not train."""
    signal.signal(signal.SIGTERM, _exit_now)


def install() -> None:
    """Record SIGTERM and SIGINT from now on, to be acted on at safe points (the train command, first thing)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _record)


def requested() -> str | None:
    """The name of the signal that asked to stop ('SIGTERM'), or None."""
    return _requested


def raise_if_requested(moment: str) -> None:
    """At a safe point: stop with the retryable exit code if a stop was requested. `moment`: 'before training'."""
    if _requested is not None:
        raise Interrupted(f"received {_requested} {moment}: rerun the same command to resume")


def reset() -> None:
    """Forget a recorded request (tests)."""
    global _requested
    _requested = None


def _exit_now(signum: int, frame: FrameType | None) -> None:
    stderr_line(f"error: received {signal.Signals(signum).name}: stopped; rerun the same command", WARNING)
    exit_at_once(EXIT_INTERRUPTED)


def _record(signum: int, frame: FrameType | None) -> None:
    global _requested
    name = signal.Signals(signum).name
    if _requested is None:
        _requested = name
        stderr_line(f"received {name}: stopping at the next safe point", WARNING)
    if signum == signal.SIGINT:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # The next Ctrl-C raises KeyboardInterrupt.


def exit_at_once(exit_code: int) -> None:
    """End the process now, after a stop request was handled and its last line printed.

    Python's own shutdown with TensorFlow loaded (its thread pools, the input pipeline's threads, garbage
    collection of traced graphs) takes about a second here, time a preemption's grace period should not
    spend. Every file the job writes was written and flushed before the line was printed (checkpoints and
    uploads are synchronous, metrics are flushed per record), so only the standard streams are left to flush.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(exit_code)
