"""`--follow`: stream every pod's log as its container starts and print each change of the run once.

Every poll reads the Job, its pods and the namespace's events. Log lines go to stdout; on stderr, each pod's
state line when it changes ("pod X: Pending: Unschedulable: 0/3 nodes are available: 3 Insufficient
nvidia.com/gpu.: <fix>") and each new Warning event once. The follow ends with the Job: Complete is exit 0,
Failed the code `diagnose.failure` finds (2-5 as the trainer's, else 1). A run with no running pod for
`--pending-timeout` seconds ends it with exit 69 and the reason; the Job itself is left alone.
"""

from __future__ import annotations

import time
from typing import Any

from job.errors import JobError, NotStarted
from job.kube import cluster, diagnose
from job.kube.logs import LogPrinter, LogStreams
from job.kube.render import Manifest

POLL_SECONDS = 2.0
END_OF_LOGS_SECONDS = 30.0  # After the Job ends, the streams' last lines; a stream of a vanished node may hang.


class RunFailed(JobError):
    """The Job failed; the exit code is the trainer's when the Job failed on one of the contract's codes."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def raise_for_outcome(job: Manifest, pods: list[Manifest]) -> None:
    """Nothing for Complete; RunFailed with the code from the Job's failure condition or failed indexes."""
    if diagnose.job_outcome(job) != "Failed":
        return
    found = diagnose.failure(job, pods)
    raise RunFailed(f"Job {job['metadata']['name']} failed ({found.detail})", found.exit_code)


def why_not_running(name: str, pods: list[Manifest], events: list[Manifest]) -> str:
    """The pending timeout's reason: the pods' problems, else the Job's events, else their plain states."""
    problems = [": ".join(problem) for problem in map(diagnose.pod_problem, pods) if problem]
    reasons = list(dict.fromkeys(problems)) or diagnose.event_lines(name, pods, events)
    if not reasons:
        states = sorted({diagnose.pod_phase(pod) for pod in pods})
        reasons = [f"its pods are {', '.join(states)}" if pods else "no pod was created"]
    return "; ".join(reasons)


class ChangeReport:
    """Print each pod's state line when it changes, and each Warning event once, on stderr."""

    def __init__(self, printer: LogPrinter) -> None:
        self.printer = printer
        self.pod_lines: dict[str, str] = {}
        self.events: set[str] = set()

    def update(self, name: str, pods: list[Manifest], events: list[Manifest]) -> None:
        for pod in pods:
            line = diagnose.pod_line(pod)
            if self.pod_lines.get(pod["metadata"]["name"]) != line:
                self.pod_lines[pod["metadata"]["name"]] = line
                self.printer.note(line)
        for line in diagnose.event_lines(name, pods, events):
            if line not in self.events:
                self.events.add(line)
                self.printer.note(line)


def follow(
    api: Any,
    namespace: str,
    name: str,
    pending_timeout: float,
    tail: int | None = None,
) -> None:
    """Stream the run's logs until the Job is Complete (return) or Failed (RunFailed), or nothing runs (NotStarted)."""
    job = cluster.read_job(api, namespace, name)
    printer = LogPrinter(api, namespace, prefixed=diagnose.runs_in_parallel(job))
    streams, report = LogStreams(printer, tail), ChangeReport(printer)
    started: set[str] = set()
    idle_since = time.monotonic()
    while True:
        pods = cluster.list_pods(api, namespace, name)
        report.update(name, pods, cluster.list_events(api, namespace))
        for pod in filter(diagnose.has_started, pods):
            streams.start(pod["metadata"]["name"], int(diagnose.container_status(pod).get("restartCount") or 0))
        now_started = {pod["metadata"]["name"] for pod in pods if diagnose.has_started(pod)}
        if any(diagnose.is_running(pod) for pod in pods) or now_started - started:
            idle_since = time.monotonic()
        started |= now_started
        if diagnose.job_outcome(job):
            streams.wait(END_OF_LOGS_SECONDS)
            printer.note(f"Job {name}: {diagnose.job_outcome(job)}")
            raise_for_outcome(job, cluster.list_pods(api, namespace, name))
            return
        if pending_timeout and time.monotonic() - idle_since >= pending_timeout:
            reason = why_not_running(name, pods, cluster.list_events(api, namespace))
            raise NotStarted(
                f"Job {name} has had no running pod for {pending_timeout:g} s: {reason}; the Job is left as it is: "
                f"fix that and follow again, or delete it (python -m job delete {name})"
            )
        time.sleep(POLL_SECONDS)
        job = cluster.read_job(api, namespace, name)
