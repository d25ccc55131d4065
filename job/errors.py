"""The exit-code contract: every failure a user can fix maps to one code and one line.

Kubernetes acts on these codes (k8s/base/job.yaml podFailurePolicy), so they are stable:
    0 success · 1 unexpected · 2 bad usage/config · 3 data missing or corrupt
    4 output unusable or run exists · 5 training diverged · 75 interrupted, state saved (retryable)
    6 environment not ready (no GPU visible, metadata server silent): retried on a new pod, counted
Only the client (`submit --follow`, `logs --follow`) exits with:
    69 no pod of the run got running within --pending-timeout (the Job is left as it is)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_OUTPUT = 4
EXIT_DIVERGED = 5
EXIT_NOT_READY = 6  # Not in the Job's FailJob or Ignore rules: a new pod is tried, counting toward backoffLimit.
EXIT_NOT_STARTED = 69  # EX_UNAVAILABLE from sysexits.h: "a service is unavailable"; never a trainer's exit.
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL from sysexits.h: "try again later".


class JobError(Exception):
    """A failure the user can act on: printed as one line, no traceback."""

    exit_code = EXIT_UNEXPECTED


class UsageError(JobError):
    exit_code = EXIT_USAGE


class DataError(JobError):
    exit_code = EXIT_DATA


class OutputError(JobError):
    exit_code = EXIT_OUTPUT


class DivergedError(JobError):
    exit_code = EXIT_DIVERGED


class EnvironmentNotReady(JobError):
    """The pod's environment is not ready (a GPU driver or device plugin, the metadata server): retry elsewhere.

    Not a usage error: the same command can succeed on a new pod, perhaps on another node.
    """

    exit_code = EXIT_NOT_READY


class Interrupted(JobError):
    exit_code = EXIT_INTERRUPTED


class NotStarted(JobError):
    """Following a run that the cluster does not start (unschedulable, image not pullable...): ends the follow."""

    exit_code = EXIT_NOT_STARTED
