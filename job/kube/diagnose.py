"""Why a run is (not) running: read a Job, its pods and their events as the API server returns them.

Pure functions over plain JSON (camelCase, as kubectl shows it), no requests:
    pod_line(pod)             "pod NAME: Running", "pod NAME: Pending: ImagePullBackOff: <kubelet's message>: <fix>"
    event_lines(...)          Warning events of the Job (FailedCreate) and of pods whose own status names no problem
    run_state(job, pods)      Complete | Failed | Suspended | Running (a container runs) | Unschedulable... | Pending
    failure(job, pods)        the exit code the Job failed on: its Failed condition, its failedIndexes, else the last pod
`Job.status.active` counts pods that were created, not pods that run: a pod in ImagePullBackOff or
Unschedulable is "active". So the state comes from the pods' own conditions and container states.
"""

from __future__ import annotations

import re

from job.errors import EXIT_DATA, EXIT_DIVERGED, EXIT_NOT_READY, EXIT_OUTPUT, EXIT_UNEXPECTED, EXIT_USAGE
from job.kube.render import CONTAINER, JOB_NAME_LABEL, Manifest

# The trainer's codes that name why the Job failed: 2-5 (FailJob at once), and 6 (environment never ready, once
# backoffLimit is used up). Anything else (1, a peer's 75 or 137) becomes 1.
CONTRACT_CODES = {EXIT_USAGE, EXIT_DATA, EXIT_OUTPUT, EXIT_DIVERGED, EXIT_NOT_READY}
INDEX_KEY = "batch.kubernetes.io/job-completion-index"  # Annotation (and, since 1.28, label) of Indexed pods.
GPU = "nvidia.com/gpu"
IMAGE_FIX = "check --image (registry, name, tag) and that the nodes may pull from that registry"
# The Job controller's message for a FailJob rule (kubernetes pkg/controller/job/pod_failure_policy.go):
# "Container %s for pod %s/%s failed with exit code %v matching %v rule at index %d".
FAIL_JOB_MESSAGE = re.compile(r"^Container (\S+) for pod (\S+) failed with exit code (\d+) matching FailJob rule")

# Waiting reasons of a container that will not start by itself, with what to do about each.
WAITING_FIXES = {
    "ImagePullBackOff": IMAGE_FIX,
    "ErrImagePull": IMAGE_FIX,
    "ErrImageNeverPull": "the image is not on the node and imagePullPolicy is Never: push it and allow pulls",
    "InvalidImageName": "fix --image (or images: in k8s/base/kustomization.yaml)",
    "CreateContainerConfigError": "create the ConfigMap or Secret it names, or fix the manifests in k8s/",
    "CreateContainerError": "the runtime cannot create the container: see the message and the pod's events",
    "RunContainerError": "the runtime cannot start the container: see the message and the pod's events",
}
EVENT_FIXES = {
    "FailedCreate": "the Job controller cannot create pods: fix what the message names "
    "(a missing ServiceAccount: make k8s-setup; a quota; an admission policy)",
    "FailedMount": "a volume cannot be mounted: create what the message names or fix the manifests in k8s/",
    "FailedAttachVolume": "a volume cannot be attached: see the message",
}


def container_status(pod: Manifest) -> Manifest:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return dict(next((status for status in statuses if status.get("name") == CONTAINER), {}))


def container_state(pod: Manifest) -> Manifest:
    """The train container's state: {"waiting": ...}, {"running": ...} or {"terminated": ...} ({} before it exists)."""
    return dict(container_status(pod).get("state") or {})


def has_started(pod: Manifest) -> bool:
    """The train container runs or ran, so it has a log (a waiting container answers 400)."""
    return bool(is_running(pod) or container_state(pod).get("terminated"))


def is_running(pod: Manifest) -> bool:
    return bool(container_state(pod).get("running"))


def unschedulable_fix(message: str) -> str:
    if f"Insufficient {GPU}" in message:
        return f"no node has a free {GPU}: add or scale up a GPU node pool (autoscaling), or wait for other GPU pods"
    return "no node can take the pod: add nodes with the resources it requests, or check its tolerations and selectors"


def pod_problem(pod: Manifest) -> tuple[str, str, str] | None:
    """(reason, message, fix) when the pod cannot get going on its own: unschedulable or a stuck container."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            message = str(condition.get("message") or "")
            return str(condition.get("reason") or "Unschedulable"), message, unschedulable_fix(message)
    status = container_status(pod)
    waiting = (status.get("state") or {}).get("waiting") or {}
    reason = str(waiting.get("reason") or "")
    if reason == "CrashLoopBackOff":
        last = ((status.get("lastState") or {}).get("terminated") or {}).get("exitCode")
        crashed = f"restarted {status.get('restartCount', 0)} times" + (f", last exit code {last}" if last else "")
        fix = f"read the crashed container's log: python -m job logs {pod_job(pod)} --previous"
        return reason, f"{crashed}; {waiting.get('message', '')}".strip("; "), fix
    if reason in WAITING_FIXES:
        return reason, str(waiting.get("message") or ""), WAITING_FIXES[reason]
    return None


def pod_job(pod: Manifest) -> str:
    return str((pod["metadata"].get("labels") or {}).get(JOB_NAME_LABEL, ""))


def pod_phase(pod: Manifest) -> str:
    """Pending, Pending (ContainerCreating), Running, Succeeded, Failed (exit 75, OOMKilled)..."""
    phase = str((pod.get("status") or {}).get("phase") or "Pending")
    state = container_state(pod)
    if phase == "Pending" and (state.get("waiting") or {}).get("reason"):
        return f"Pending ({state['waiting']['reason']})"
    terminated = state.get("terminated") or {}
    if phase == "Failed" and terminated:
        reason = terminated.get("reason")
        return f"Failed (exit {terminated.get('exitCode')}{', ' + reason if reason not in (None, 'Error') else ''})"
    if phase == "Failed" and (pod.get("status") or {}).get("reason"):  # Evicted, DeadlineExceeded: no container exit.
        return f"Failed ({pod['status']['reason']}: {pod['status'].get('message', '')})".replace(": )", ")")
    return phase


def pod_line(pod: Manifest) -> str:
    """One line on the pod's state; for a stuck pod also the problem and its fix."""
    name = pod["metadata"]["name"]
    if (problem := pod_problem(pod)) is None:
        return f"pod {name}: {pod_phase(pod)}"
    phase = str((pod.get("status") or {}).get("phase") or "Pending")  # CrashLoopBackOff is phase Running.
    return ": ".join(part for part in (f"pod {name}", phase, *problem) if part)


def event_lines(job_name: str, pods: list[Manifest], events: list[Manifest]) -> list[str]:
    """Warning events of the Job, and of each pod whose own status does not already name its problem.

    The pod's conditions and container states say the same as its FailedScheduling and BackOff events, and
    stay current; events fill in what they cannot show (FailedCreate: no pod exists; FailedMount).
    """
    wanted = {("Job", job_name)} | {("Pod", pod["metadata"]["name"]) for pod in pods if pod_problem(pod) is None}
    lines = []
    for event in sorted(events, key=lambda event: str(event.get("lastTimestamp") or event.get("eventTime") or "")):
        involved = event.get("involvedObject") or {}
        kind, name = str(involved.get("kind")), str(involved.get("name"))
        reason, message = str(event.get("reason")), str(event.get("message"))
        if event.get("type") != "Warning" or (kind, name) not in wanted:
            continue
        fix = EVENT_FIXES.get(reason) or (unschedulable_fix(message) if reason == "FailedScheduling" else "")
        lines.append(f"{kind} {name}: {reason}: {message}" + (f": {fix}" if fix else ""))
    return list(dict.fromkeys(lines))


def finished_condition(job: Manifest) -> Manifest:
    """The Job's Complete or Failed condition once it has finished, else {}."""
    conditions = (job.get("status") or {}).get("conditions") or []
    finished = (c for c in conditions if c.get("type") in ("Complete", "Failed") and c.get("status") == "True")
    return dict(next(finished, {}))


def job_outcome(job: Manifest) -> str | None:
    """'Complete' or 'Failed' once the Job has finished, else None."""
    return finished_condition(job).get("type")


def runs_in_parallel(job: Manifest) -> bool:
    """Pods of different workers or sweep points (an Indexed Job, or parallelism above 1): prefix their logs."""
    spec = job.get("spec") or {}
    return spec.get("completionMode") == "Indexed" or int(spec.get("parallelism") or 1) > 1


def run_state(job: Manifest, pods: list[Manifest]) -> str:
    """Complete, Failed, Suspended (queued, e.g. by Kueue), Running (a train container runs), else what stops the
    first stuck pod (Unschedulable, ImagePullBackOff, CrashLoopBackOff...), else Pending."""
    if outcome := job_outcome(job):
        return outcome
    if (job.get("spec") or {}).get("suspend"):
        return "Suspended"
    if any(is_running(pod) for pod in pods):
        return "Running"
    problems = [problem for problem in map(pod_problem, pods) if problem]
    return problems[0][0] if problems else "Pending"


def parse_indexes(text: str) -> list[int]:
    """`status.failedIndexes` ("1,3-5") as a sorted list of indexes."""
    indexes: set[int] = set()
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        indexes.update(range(int(first), int(last or first) + 1))
    return sorted(indexes)


def pod_index(pod: Manifest) -> int | None:
    metadata = pod["metadata"]
    value = (metadata.get("annotations") or {}).get(INDEX_KEY) or (metadata.get("labels") or {}).get(INDEX_KEY)
    return int(value) if value is not None else None


def finished_at(pod: Manifest) -> str:
    terminated = container_state(pod).get("terminated") or {}
    return str(terminated.get("finishedAt") or pod["metadata"].get("creationTimestamp") or "")


def last_exit_code(pods: list[Manifest]) -> int | None:
    """The exit code of the pod that ended last (not the one created last: that is often a peer killed later)."""
    ended = [pod for pod in pods if container_state(pod).get("terminated")]
    return int(container_state(max(ended, key=finished_at))["terminated"]["exitCode"]) if ended else None


def failure(job: Manifest, pods: list[Manifest]) -> tuple[int, str]:
    """Why a Failed Job failed: (exit code for the CLI, one line of detail). The code (2-6 as the trainer's, else 1)
    is the one a FailJob rule matched, else the failed indexes' own pods' codes, else the last pod's."""
    condition = finished_condition(job)  # Failed: the caller saw job_outcome(job) == "Failed".
    reason, message = str(condition.get("reason") or ""), str(condition.get("message") or "")
    summary = f"{reason}: {message}".strip(": ") or "failed"
    if matched := FAIL_JOB_MESSAGE.match(message):
        return contract_code(int(matched.group(3))), summary
    failed_indexes = parse_indexes(str((job.get("status") or {}).get("failedIndexes") or ""))
    if failed_indexes:
        codes = {index: last_exit_code([pod for pod in pods if pod_index(pod) == index]) for index in failed_indexes}
        listed = ", ".join(f"index {index} exit {code if code is not None else '?'}" for index, code in codes.items())
        return contract_code(codes[failed_indexes[0]]), f"{summary}; {listed}"
    last = last_exit_code(pods)
    return contract_code(last), f"{summary}, last exit code {last}" if last is not None else summary


def contract_code(code: int | None) -> int:
    """The trainer's code when it names why the Job failed (2-6), else 1."""
    return code if code is not None and code in CONTRACT_CODES else EXIT_UNEXPECTED


def describe(job: Manifest, pods: list[Manifest], events: list[Manifest]) -> list[str]:
    """Every line `status` prints under a run: each pod's state, then the Warning events that add to them."""
    name = job["metadata"]["name"]
    lines = [pod_line(pod) for pod in pods]
    if job_outcome(job) == "Failed":
        code, detail = failure(job, pods)
        lines.append(f"Job {name}: Failed: {detail} (exit {code})")
    elif not pods and run_state(job, pods) == "Pending":
        lines.append(f"Job {name}: no pod yet")
    return lines + event_lines(name, pods, events)
