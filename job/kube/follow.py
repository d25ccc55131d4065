"""`--follow`: stream every pod's log as its container starts and print each change of the run once.

Every poll reads the Job, its pods and the namespace's events. Log lines go to stdout; on stderr, each pod's
state line when it changes ("pod X: Pending: Unschedulable: 0/3 nodes are available: 3 Insufficient
nvidia.com/gpu.: <fix>") and each new Warning event once. The follow ends with the Job: Complete is exit 0,
Failed the code `diagnose.failure` finds (2-5 as the trainer's, else 1). A run with no running pod for
`--pending-timeout` seconds ends it with exit 69 and the reason; the Job itself is left alone.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from job.errors import JobError, NotStarted
from job.kube import cluster, diagnose
from job.kube.logs import LogPrinter
from job.kube.render import Manifest

POLL_SECONDS = 2.0
END_OF_LOGS_SECONDS = 30.0  # After the Job ends, the streams' last lines; a stream of a vanished node may hang.


def why_not_running(name: str, pods: list[Manifest], events: list[Manifest]) -> str:
    """The pending timeout's reason: the pods' problems, else the Job's events, else their plain states."""
    problems = [": ".join(problem) for problem in map(diagnose.pod_problem, pods) if problem]
    reasons = list(dict.fromkeys(problems)) or diagnose.event_lines(name, pods, events)
    if not reasons:
        states = sorted({diagnose.pod_phase(pod) for pod in pods})
        reasons = [f"its pods are {', '.join(states)}" if pods else "no pod was created"]
    return "; ".join(reasons)


def follow(api: Any, namespace: str, name: str, pending_timeout: float, tail: int | None = None) -> None:
    """Stream the run's logs until the Job is Complete (return) or Failed (JobError), or nothing runs (NotStarted)."""
    job = cluster.read_job(api, namespace, name)
    printer = LogPrinter(api, namespace, prefixed=diagnose.runs_in_parallel(job))
    streams: dict[tuple[str, int], threading.Thread] = {}  # One per started container: (pod, restarts).
    idle_since = time.monotonic()
    while True:
        pods = cluster.list_pods(api, namespace, name)
        # Each pod's state line when it changes, and each Warning event once.
        for pod in pods:
            printer.note_change(pod["metadata"]["name"], diagnose.pod_line(pod))
        for line in diagnose.event_lines(name, pods, cluster.list_events(api, namespace)):
            printer.note_change(line, line)
        streamed = {pod for pod, _ in streams}
        for pod in filter(diagnose.has_started, pods):
            key = pod["metadata"]["name"], int(diagnose.container_status(pod).get("restartCount") or 0)
            if key not in streams:
                # A container restarted in place (restartPolicy OnFailure) starts its log afresh: print all of it.
                args = (key[0], True, tail if key[1] == 0 else None)
                streams[key] = threading.Thread(target=printer.copy, args=args, daemon=True)
                streams[key].start()
        # Not idle: a container runs, or a pod's container started (and perhaps ended) since the last poll.
        if any(diagnose.is_running(pod) for pod in pods) or {pod for pod, _ in streams} - streamed:
            idle_since = time.monotonic()
        if outcome := diagnose.job_outcome(job):
            deadline = time.monotonic() + END_OF_LOGS_SECONDS  # The kubelet ends the streams when the containers exit.
            for thread in streams.values():
                thread.join(max(0.0, deadline - time.monotonic()))
            printer.note(f"Job {name}: {outcome}")
            if outcome == "Failed":
                code, detail = diagnose.failure(job, cluster.list_pods(api, namespace, name))
                failed = JobError(f"Job {name} failed ({detail})")
                failed.exit_code = code  # The trainer's when the Job failed on one of the contract's codes, else 1.
                raise failed
            return
        if pending_timeout and time.monotonic() - idle_since >= pending_timeout:
            reason = why_not_running(name, pods, cluster.list_events(api, namespace))
            raise NotStarted(
                f"Job {name} has had no running pod for {pending_timeout:g} s: {reason}; the Job is left as it is: "
                f"fix that and follow again, or delete it (python -m job delete {name})"
            )
        time.sleep(POLL_SECONDS)
        job = cluster.read_job(api, namespace, name)
