"""`status` and `logs [--follow]`: why a run is not running, as a real cluster shows it, served by a double.

The kmock API double (tests/kube_fixtures.py) serves Jobs, pods and core/v1 Events in the shapes the kubelet,
the scheduler and the Job controller write them (waiting reasons, the PodScheduled condition, FailedCreate
events, a FailJob condition's message, `status.failedIndexes`). Nothing here runs a controller: each test sets
the states a cluster would reach, and checks what the CLI makes of them. Whether a given cluster really
reaches those states (and words them so) is for a real cluster to confirm.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from job.kube import follow
from job.kube.diagnose import INDEX_KEY
from job.kube.render import JOB_NAME_LABEL
from tests import kube_fixtures
from tests.kube_fixtures import NAMESPACE, ApiDouble, status_body
from tests.test_submit import run_cli

kube_api = kube_fixtures.kube_api
# A log stream's exception escaping its thread would only be a warning; here it fails the test.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

IMAGE = "registry.example/team/cifar10-job:1.2.3"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
JOB = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/run-1"
GPU_MESSAGE = (
    "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. "
    "preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
)
WAITING = {
    "ImagePullBackOff": f'Back-off pulling image "{IMAGE}"',
    "ErrImagePull": f'rpc error: code = NotFound desc = failed to pull and unpack image "{IMAGE}": not found',
    "CreateContainerConfigError": 'configmap "cifar10-job-config" not found',
    "CrashLoopBackOff": "back-off 40s restarting failed container=train pod=run-1-abcde_cifar10-test(1f0e)",
}


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow, "POLL_SECONDS", 0.05)


def job(name: str = "run-1", status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "cifar10-job", "cifar10-job/run-id": name}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {"template": {"spec": {"containers": [{"name": "train", "image": IMAGE}]}}, **spec},
        "status": status or {},
    }


def failed(reason: str, message: str, **status: Any) -> dict[str, Any]:
    """A Job status as the controller leaves it after failing: FailureTarget, then Failed (1.31+)."""
    conditions = [
        {"type": kind, "status": "True", "reason": reason, "message": message} for kind in ("FailureTarget", "Failed")
    ]
    return {"conditions": conditions, **status}


def pod(
    name: str, phase: str, state: dict[str, Any], job_name: str = "run-1", index: int | None = None, **status: Any
) -> dict[str, Any]:
    """A pod of Job `job_name` with its train container in `state` (waiting / running / terminated)."""
    metadata: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "labels": {JOB_NAME_LABEL: job_name}}
    if index is not None:
        metadata["annotations"] = {INDEX_KEY: str(index)}
    container = {"name": "train", "image": IMAGE, "imageID": "", "ready": False, "restartCount": 0, "state": state}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "train", "image": IMAGE}]},
        "status": {"phase": phase, "containerStatuses": [container], **status},
    }


def waiting(reason: str) -> dict[str, Any]:
    return {"waiting": {"reason": reason, "message": WAITING.get(reason, "")}}


def unschedulable(name: str) -> dict[str, Any]:
    """As the scheduler leaves a pod no node can take: no container status yet, PodScheduled False."""
    found = pod(name, "Pending", {})
    found["status"] = {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": GPU_MESSAGE}],
    }
    return found


def running(name: str, **keys: Any) -> dict[str, Any]:
    return pod(name, "Running", {"running": {"startedAt": "2026-01-01T00:00:00Z"}}, **keys)


def ended(name: str, exit_code: int, finished_at: str = "2026-01-01T01:00:00Z", **keys: Any) -> dict[str, Any]:
    state = {
        "terminated": {
            "exitCode": exit_code,
            "reason": "Error" if exit_code else "Completed",
            "finishedAt": finished_at,
        }
    }
    return pod(name, "Failed" if exit_code else "Succeeded", state, **keys)


def event(kind: str, name: str, reason: str, message: str, kind_of: str = "Warning") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{reason.lower()}", "namespace": NAMESPACE},
        "involvedObject": {"kind": kind, "name": name, "namespace": NAMESPACE},
        "reason": reason,
        "message": message,
        "type": kind_of,
        "count": 3,
        "lastTimestamp": "2026-01-01T00:00:10Z",
    }


def store(double: ApiDouble, *objects: dict[str, Any]) -> None:
    """Put Jobs, pods and events in the double, as the controllers would have written them."""
    resources = {"Job": "batch/v1/jobs", "Pod": "v1/pods", "Event": "v1/events"}
    for found in objects:
        double.handler.objects[resources[found["kind"]], NAMESPACE, found["metadata"]["name"]] = found


def serve_in_turn(double: ApiDouble, path: str, bodies: list[dict[str, Any]]) -> None:
    """Answer GET `path` with each body in turn, then the last one for ever: a cluster changing between polls."""
    answers: Iterator[dict[str, Any]] = itertools.chain(bodies, itertools.repeat(bodies[-1]))
    double.handler[f"get {path}"] << 200 << (lambda request: next(answers))


def pod_list(*pods: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": list(pods)}


def add_log(double: ApiDouble, pod_name: str, text: bytes) -> None:
    double.handler[f"get {PODS}/{pod_name}/log"] << text


STATUS = ["status", "run-1", "--namespace", NAMESPACE]


# status: one run ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stuck", "line"),
    [
        (pod("run-1-abcde", "Pending", waiting("ImagePullBackOff")),
         f'pod run-1-abcde: Pending: ImagePullBackOff: Back-off pulling image "{IMAGE}": check --image (registry, '
         "name, tag) and that the nodes may pull from that registry"),
        (pod("run-1-abcde", "Pending", waiting("ErrImagePull")),
         f"pod run-1-abcde: Pending: ErrImagePull: {WAITING['ErrImagePull']}: check --image"),
        (pod("run-1-abcde", "Pending", waiting("CreateContainerConfigError")),
         'pod run-1-abcde: Pending: CreateContainerConfigError: configmap "cifar10-job-config" not found: create the '
         "ConfigMap or Secret it names, or fix the manifests in k8s/"),
        (unschedulable("run-1-abcde"),
         f"pod run-1-abcde: Pending: Unschedulable: {GPU_MESSAGE}: no node has a free nvidia.com/gpu: add or scale "
         "up a GPU node pool (autoscaling), or wait for other GPU pods"),
    ],
)  # fmt: skip
def test_status_names_why_an_active_pod_is_not_running(
    stuck: dict[str, Any], line: str, kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Job controller counts these pods as active; status used to print Running for each of them."""
    store(kube_api, job(status={"active": 1}), stuck)
    code, out, err = run_cli(STATUS, capsys)
    reason = line.split(": ")[2]
    assert (code, err) == (0, "")
    first, detail = out.splitlines()
    assert first == f"run-1\t{reason}\tactive=1 succeeded=0 failed=0"
    assert detail.startswith(f"  {line}")


def test_status_shows_a_crash_loop_with_its_restarts_and_where_its_log_is(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    crashing = pod("run-1-abcde", "Running", waiting("CrashLoopBackOff"))
    crashing["status"]["containerStatuses"][0].update(restartCount=4, lastState={"terminated": {"exitCode": 1}})
    store(kube_api, job(status={"active": 1}), crashing)
    code, out, _ = run_cli(STATUS, capsys)
    assert code == 0
    assert out.splitlines() == [
        "run-1\tCrashLoopBackOff\tactive=1 succeeded=0 failed=0",
        f"  pod run-1-abcde: Running: CrashLoopBackOff: restarted 4 times, last exit code 1; "
        f"{WAITING['CrashLoopBackOff']}: read the crashed container's log: python -m job logs run-1 --previous",
    ]


def test_status_shows_the_jobs_failed_create_events_when_no_pod_exists(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = (
        'Error creating: pods "run-1-" is forbidden: error looking up service account '
        f'{NAMESPACE}/cifar10-job: serviceaccount "cifar10-job" not found'
    )
    store(
        kube_api,
        job(),
        event("Job", "run-1", "FailedCreate", refused),
        event("Job", "run-1", "SuccessfulCreate", "Created pod: run-1-zzzzz", kind_of="Normal"),
        event("Job", "other-run", "FailedCreate", "someone else's"),
    )
    code, out, _ = run_cli(STATUS, capsys)
    assert code == 0
    assert out.splitlines() == [
        "run-1\tPending\tactive=0 succeeded=0 failed=0",
        "  Job run-1: no pod yet",
        f"  Job run-1: FailedCreate: {refused}: the Job controller cannot create pods: fix what the message names "
        "(a missing ServiceAccount: make k8s-setup; a quota; an admission policy)",
    ]


def test_status_adds_a_pods_events_only_where_its_state_is_silent(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    """FailedScheduling repeats the PodScheduled condition: shown once. FailedMount has no other trace: shown."""
    mounting = pod("run-1-bbbbb", "Pending", {"waiting": {"reason": "ContainerCreating"}})
    mount_message = 'MountVolume.SetUp failed for volume "scratch" : no space left on device'
    store(
        kube_api,
        job(status={"active": 2}, parallelism=2),
        unschedulable("run-1-aaaaa"),
        mounting,
        event("Pod", "run-1-aaaaa", "FailedScheduling", GPU_MESSAGE),
        event("Pod", "run-1-bbbbb", "FailedMount", mount_message),
    )
    code, out, _ = run_cli(STATUS, capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "run-1\tUnschedulable\tactive=2 succeeded=0 failed=0"
    assert sum(GPU_MESSAGE in line for line in lines) == 1
    assert "  pod run-1-bbbbb: Pending (ContainerCreating)" in lines
    assert lines[-1].startswith(f"  Pod run-1-bbbbb: FailedMount: {mount_message}: a volume cannot be mounted")


def test_status_running_complete_and_failed(kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]) -> None:
    store(kube_api, job(status={"active": 1}), running("run-1-abcde"))
    assert run_cli(STATUS, capsys)[1] == "run-1\tRunning\tactive=1 succeeded=0 failed=0\n  pod run-1-abcde: Running\n"

    complete = {"conditions": [{"type": "Complete", "status": "True", "reason": "CompletionsReached"}], "succeeded": 1}
    store(kube_api, job(status=complete), ended("run-1-abcde", 0))
    assert (
        run_cli(STATUS, capsys)[1] == "run-1\tComplete\tactive=0 succeeded=1 failed=0\n  pod run-1-abcde: Succeeded\n"
    )

    message = (
        f"Container train for pod {NAMESPACE}/run-1-abcde failed with exit code 4 matching FailJob rule at index 0"
    )
    store(kube_api, job(status=failed("PodFailurePolicy", message, failed=1)), ended("run-1-abcde", 4))
    code, out, _ = run_cli(STATUS, capsys)
    assert code == 0  # status reports; only --follow exits with the run's outcome.
    assert out.splitlines() == [
        "run-1\tFailed\tactive=0 succeeded=0 failed=1",
        "  pod run-1-abcde: Failed (exit 4)",
        f"  Job run-1: Failed: PodFailurePolicy: {message} (exit 4)",
    ]


# status: every run ----------------------------------------------------------------------------------------------
def test_status_without_a_run_id_lists_every_run_with_its_own_pods(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    store(
        kube_api,
        job("run-a", status={"active": 1}),
        job("run-b", status={"active": 1}),
        running("run-a-11111", job_name="run-a"),
        pod("run-b-22222", "Pending", waiting("ImagePullBackOff"), job_name="run-b"),
    )
    code, out, err = run_cli(["status", "--namespace", NAMESPACE], capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:2] == ["run-a\tRunning\tactive=1 succeeded=0 failed=0", "  pod run-a-11111: Running"]
    assert lines[2] == "run-b\tImagePullBackOff\tactive=1 succeeded=0 failed=0"
    assert lines[3].startswith("  pod run-b-22222: Pending: ImagePullBackOff") and len(lines) == 4


def test_status_without_a_run_id_in_an_empty_namespace(kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["status", "--namespace", NAMESPACE], capsys)
    assert (code, out, err) == (0, "", f"no runs in namespace {NAMESPACE}\n")


# The exit code after a failure ----------------------------------------------------------------------------------
def test_follow_takes_the_exit_code_from_the_failjob_condition_not_the_last_pod(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    """Worker 1 exits 2 (FailJob); worker 0, killed afterwards with the Job, ended last with 137."""
    message = (
        f"Container train for pod {NAMESPACE}/run-1-1-bbbbb failed with exit code 2 matching FailJob rule at index 0"
    )
    store(
        kube_api,
        job(status=failed("PodFailurePolicy", message, failed=2), completionMode="Indexed", parallelism=2),
        ended("run-1-1-bbbbb", 2, "2026-01-01T01:00:00Z", index=1),
        ended("run-1-0-aaaaa", 137, "2026-01-01T01:00:09Z", index=0),
    )
    for name in ("run-1-0-aaaaa", "run-1-1-bbbbb"):
        add_log(kube_api, name, b"")
    code, _, err = run_cli(["logs", "run-1", "--follow", "--namespace", NAMESPACE], capsys)
    assert code == 2
    assert err.endswith(f"error: Job run-1 failed (PodFailurePolicy: {message})\n")


@pytest.mark.parametrize(
    ("reason", "message", "expected_code", "detail"),
    [  # A sweep's FailIndex: every point ran, point 1 diverged (5). Its retried peer point 2 was killed later.
        ("FailedIndexes", "Job has failed indexes", 5, "index 1 exit 5"),
        # Multi-worker, maxFailedIndexes 0: worker 1 crashed (1) out of retries; worker 0 was stopped after it (75).
        ("MaxFailedIndexesExceeded", "Job has exceeded the specified maximal number of failed indexes", 1,
         "index 1 exit 1"),
    ],
)  # fmt: skip
def test_follow_takes_the_exit_code_from_the_failed_indexes(
    reason: str,
    message: str,
    expected_code: int,
    detail: str,
    kube_api: ApiDouble,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store(
        kube_api,
        job(status=failed(reason, message, failedIndexes="1"), completionMode="Indexed", completions=3),
        ended("run-1-0-aaaaa", 0, "2026-01-01T01:00:00Z", index=0),
        ended("run-1-1-bbbbb", expected_code, "2026-01-01T01:10:00Z", index=1),
        ended("run-1-2-ccccc", 75 if expected_code == 1 else 137, "2026-01-01T01:20:00Z", index=2),
    )
    for name in ("run-1-0-aaaaa", "run-1-1-bbbbb", "run-1-2-ccccc"):
        add_log(kube_api, name, b"")
    code, _, err = run_cli(["logs", "run-1", "--follow", "--namespace", NAMESPACE], capsys)
    assert code == expected_code
    assert err.endswith(f"error: Job run-1 failed ({reason}: {message}; {detail})\n"), err


def test_follow_of_a_job_whose_retries_all_met_an_unready_environment_exits_6(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 6 matches no podFailurePolicy rule: the Job retried it on new pods until backoffLimit was used up."""
    message = "Job has reached the specified backoff limit"
    pods = [ended(f"run-1-{n}", 6, f"2026-01-01T01:0{n}:00Z") for n in range(4)]
    store(kube_api, job(status=failed("BackoffLimitExceeded", message, failed=4)), *pods)
    for n in range(4):
        add_log(kube_api, f"run-1-{n}", b"")
    code, _, err = run_cli(["logs", "run-1", "--follow", "--namespace", NAMESPACE], capsys)
    assert code == 6
    assert err.endswith(f"error: Job run-1 failed (BackoffLimitExceeded: {message}, last exit code 6)\n"), err


# logs --follow ---------------------------------------------------------------------------------------------------
def test_logs_follow_alone_streams_and_exits_0_on_complete(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    complete = {"conditions": [{"type": "Complete", "status": "True", "reason": "CompletionsReached"}], "succeeded": 1}
    store(kube_api, job(status=complete), ended("run-1-abcde", 0))
    add_log(kube_api, "run-1-abcde", b'{"kind": "epoch", "epoch": 1}\n{"kind": "epoch", "epoch": 2}')
    code, out, err = run_cli(["logs", "run-1", "--follow", "--namespace", NAMESPACE], capsys)
    assert code == 0, err
    assert out == '{"kind": "epoch", "epoch": 1}\n{"kind": "epoch", "epoch": 2}\n'  # The unfinished last line too.
    assert err == "pod run-1-abcde: Succeeded\nJob run-1: Complete\n"
    (request,) = kube_api.requests("get", f"{PODS}/run-1-abcde/log")
    assert request.params["follow"] == "true" and request.params["container"] == "train"


def test_follow_prints_each_change_once_then_the_logs(kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]) -> None:
    """Five polls: unschedulable twice (one line), a node comes up, the container runs, the Job completes."""
    complete = {"conditions": [{"type": "Complete", "status": "True", "reason": "CompletionsReached"}], "succeeded": 1}
    store(kube_api, job(status={"active": 1}))
    serve_in_turn(kube_api, JOB, [job(status={"active": 1})] * 4 + [job(status=complete)])
    creating = pod("run-1-abcde", "Pending", {"waiting": {"reason": "ContainerCreating"}})
    states = [unschedulable("run-1-abcde")] * 2 + [creating, running("run-1-abcde"), ended("run-1-abcde", 0)]
    serve_in_turn(kube_api, PODS, [pod_list(state) for state in states])
    add_log(kube_api, "run-1-abcde", b"epoch 1\n")
    code, out, err = run_cli(["logs", "run-1", "--follow", "--namespace", NAMESPACE], capsys)
    assert code == 0, err
    assert out == "epoch 1\n"
    assert err.splitlines() == [
        f"pod run-1-abcde: Pending: Unschedulable: {GPU_MESSAGE}: no node has a free nvidia.com/gpu: add or scale up "
        "a GPU node pool (autoscaling), or wait for other GPU pods",
        "pod run-1-abcde: Pending (ContainerCreating)",
        "pod run-1-abcde: Running",
        "pod run-1-abcde: Succeeded",
        "Job run-1: Complete",
    ]
    assert len(kube_api.requests("get", f"{PODS}/run-1-abcde/log")) == 1  # One stream, not one per poll.


def test_pending_timeout_ends_the_follow_with_the_reason_and_exit_69(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    store(kube_api, job(status={"active": 1}), pod("run-1-abcde", "Pending", waiting("ImagePullBackOff")))
    code, _, err = run_cli(["logs", "run-1", "--follow", "--namespace", NAMESPACE, "--pending-timeout", "0.3"], capsys)
    assert code == 69
    *states, last = err.splitlines()
    assert states == [f"pod run-1-abcde: Pending: ImagePullBackOff: {WAITING['ImagePullBackOff']}: check --image "
                      "(registry, name, tag) and that the nodes may pull from that registry"]  # fmt: skip
    assert last == (
        f"error: Job run-1 has had no running pod for 0.3 s: ImagePullBackOff: {WAITING['ImagePullBackOff']}: "
        "check --image (registry, name, tag) and that the nodes may pull from that registry; the Job is left as it "
        "is: fix that and follow again, or delete it (python -m job delete run-1)"
    )
    assert kube_api.requests("delete") == []


def test_pending_timeout_names_failed_create_when_no_pod_was_made(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    quota = 'Error creating: pods "run-1-x" is forbidden: exceeded quota: gpu-quota, requested: nvidia.com/gpu=1'
    store(kube_api, job(), event("Job", "run-1", "FailedCreate", quota))
    code, _, err = run_cli(["logs", "run-1", "--follow", "--namespace", NAMESPACE, "--pending-timeout", "0.2"], capsys)
    assert code == 69
    assert err.splitlines()[-1].startswith(
        f"error: Job run-1 has had no running pod for 0.2 s: Job run-1: FailedCreate: {quota}"
    )


def test_a_running_pod_keeps_the_follow_going_past_the_pending_timeout(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    complete = {"conditions": [{"type": "Complete", "status": "True", "reason": "CompletionsReached"}], "succeeded": 1}
    serve_in_turn(kube_api, JOB, [job(status={"active": 1})] * 12 + [job(status=complete)])  # About 0.6 s of polls.
    serve_in_turn(kube_api, PODS, [pod_list(running("run-1-abcde"))] * 12 + [pod_list(ended("run-1-abcde", 0))])
    add_log(kube_api, "run-1-abcde", b"")
    code, _, err = run_cli(["logs", "run-1", "--follow", "--namespace", NAMESPACE, "--pending-timeout", "0.2"], capsys)
    assert code == 0, err


def test_one_pods_failing_log_stream_does_not_end_the_follow(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three workers: one streams, one sat on a node that went away (500), one was deleted already (404)."""
    complete = {"conditions": [{"type": "Complete", "status": "True", "reason": "SuccessPolicy"}], "succeeded": 1}
    store(
        kube_api,
        job(status=complete, completionMode="Indexed", parallelism=3),
        ended("run-1-0-aaaaa", 0, index=0),
        ended("run-1-1-bbbbb", 0, index=1),
        ended("run-1-2-ccccc", 0, index=2),
    )
    add_log(kube_api, "run-1-0-aaaaa", b"chief epoch 1\nchief epoch 2\n")
    node_gone = (
        'Get "https://10.128.0.7:10250/containerLogs/cifar10-test/run-1-1-bbbbb/train?follow=true": '
        "dial tcp 10.128.0.7:10250: connect: no route to host"
    )
    kube_api.respond("get", f"{PODS}/run-1-1-bbbbb/log", 500, status_body(500, "InternalError", node_gone))
    gone = 'pods "run-1-2-ccccc" not found'
    kube_api.respond("get", f"{PODS}/run-1-2-ccccc/log", 404, status_body(404, "NotFound", gone))
    code, out, err = run_cli(["logs", "run-1", "--follow", "--namespace", NAMESPACE], capsys)
    assert code == 0, err
    assert out == "[run-1-0-aaaaa] chief epoch 1\n[run-1-0-aaaaa] chief epoch 2\n"
    assert f"pod run-1-1-bbbbb: no log (500): {node_gone}\n" in err
    assert f"pod run-1-2-ccccc: no log (404): {gone}\n" in err
    assert err.endswith("Job run-1: Complete\n")


# logs without --follow --------------------------------------------------------------------------------------------
def test_logs_of_a_sweep_prefix_every_line_with_its_pod_and_pass_tail(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    store(
        kube_api,
        job(status={"active": 1}, completionMode="Indexed", completions=3, parallelism=2),
        ended("run-1-0-aaaaa", 0, index=0),
        running("run-1-1-bbbbb", index=1),
        pod("run-1-2-ccccc", "Pending", waiting("ImagePullBackOff"), index=2),
    )
    add_log(kube_api, "run-1-0-aaaaa", b"point 0 done\n")
    add_log(kube_api, "run-1-1-bbbbb", b"point 1 step 100\npoint 1 step 200\n")
    never_started = 'container "train" in pod "run-1-2-ccccc" is waiting to start: trying and failing to pull image'
    kube_api.respond("get", f"{PODS}/run-1-2-ccccc/log", 400, status_body(400, "BadRequest", never_started))
    code, out, err = run_cli(["logs", "run-1", "--tail", "2", "--namespace", NAMESPACE], capsys)
    assert code == 0, err
    assert out == "[run-1-0-aaaaa] point 0 done\n[run-1-1-bbbbb] point 1 step 100\n[run-1-1-bbbbb] point 1 step 200\n"
    assert err == f"pod run-1-2-ccccc: no log (400): {never_started}\n"
    requests = kube_api.requests("get", "/log")
    assert [request.params.get("tailLines") for request in requests] == ["2", "2", "2"]
    assert all("follow" not in request.params or request.params["follow"] == "false" for request in requests)


def test_logs_previous_asks_for_the_previous_container(kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]) -> None:
    crashing = pod("run-1-abcde", "Running", waiting("CrashLoopBackOff"))
    store(kube_api, job(status={"active": 1}), crashing)
    add_log(kube_api, "run-1-abcde", b"Traceback (most recent call last):\n")
    code, out, err = run_cli(["logs", "run-1", "--previous", "--namespace", NAMESPACE], capsys)
    assert (code, out, err) == (0, "Traceback (most recent call last):\n", "--- pod run-1-abcde ---\n")
    (request,) = kube_api.requests("get", "/log")
    assert request.params["previous"] == "true"


def test_previous_cannot_be_followed(kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["logs", "run-1", "--previous", "--follow", "--namespace", NAMESPACE], capsys)
    assert code == 2 and err == (
        "error: --previous prints a container that has ended, which cannot be followed: drop --follow\n"
    )
    assert list(kube_api.handler) == []
