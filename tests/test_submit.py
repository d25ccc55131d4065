"""`python -m job submit|status|logs|delete` against an in-memory Kubernetes API *double* (kmock).

The double (tests/kube_fixtures.py) receives real HTTP from the official `kubernetes` client, so
these tests pin the exact Job body a cluster would receive and the error paths a real API server
produces (404 namespace, 409 name taken, 403 RBAC). They cannot show that a real cluster admits,
schedules or runs the Job: no Job controller or kubelet runs behind the double.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from job.cli import main
from job.kube import render
from tests import kube_fixtures
from tests.gcs_fixtures import free_port
from tests.kube_fixtures import NAMESPACE, ApiDouble, status_body

kube_api = kube_fixtures.kube_api  # The fixture (until tests/conftest.py lists tests.kube_fixtures in pytest_plugins).

JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
IMAGE = "registry.example/team/cifar10-job:1.2.3"
SUBMIT = ["submit", "--image", IMAGE, "--bucket", "test-bucket", "--namespace", NAMESPACE, "--run-id", "run-1"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def expected_job(overlay: str, api: str, loop: str, args: list[str]) -> dict[str, Any]:
    """The overlay as `kubectl kustomize` renders it, changed exactly as docs/kubernetes.md says submit does."""
    documents = render.render(render.KUSTOMIZE_DIR / "overlays" / overlay)
    (job,) = copy.deepcopy(render.find(documents, "Job"))
    (config_map,) = render.find(documents, "ConfigMap")
    container = job["spec"]["template"]["spec"]["containers"][0]
    inlined = dict(
        config_map["data"], JOB_DATA="gs://test-bucket/data/cifar-10-python.tar.gz", JOB_OUTPUT="gs://test-bucket/runs"
    )
    container["env"] = [{"name": key, "value": value} for key, value in sorted(inlined.items())] + container["env"]
    del container["envFrom"]
    container["image"], container["args"] = IMAGE, ["train", *args]
    job["metadata"].update(name="run-1", namespace=NAMESPACE)
    for metadata in (job["metadata"], job["spec"]["template"]["metadata"]):
        metadata["labels"].update({"cifar10-job/api": api, "cifar10-job/loop": loop, "cifar10-job/run-id": "run-1"})
    return job


def test_submit_creates_exactly_the_rendered_job(kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli([*SUBMIT, "--api", "imperative", "--loop", "custom", "--epochs", "2"], capsys)
    assert (code, err) == (0, "")
    (request,) = kube_api.requests("post")
    assert request.url.path == JOBS
    assert request.data == expected_job("imperative", "imperative", "custom", ["--epochs", "2"])
    container = request.data["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE and container["args"] == ["train", "--epochs", "2"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert request.data["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, 3, 4, 5]
    assert kube_api.job("run-1")["metadata"]["labels"]["cifar10-job/run-id"] == "run-1"
    assert "results: gs://test-bucket/runs/run-1" in out


def test_submit_custom_loop_overlay_keeps_its_loop(kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run_cli([*SUBMIT, "--overlay", "custom-loop"], capsys)
    assert code == 0
    (request,) = kube_api.requests("post")
    assert request.data == expected_job("custom-loop", "symbolic", "custom", [])


def test_submit_names_each_run_uniquely(kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]) -> None:
    args = [argument for argument in SUBMIT if argument not in ("--run-id", "run-1")]
    assert run_cli(args, capsys)[0] == run_cli(args, capsys)[0] == 0
    names = [request.data["metadata"]["name"] for request in kube_api.requests("post")]
    assert len(set(names)) == 2 and all(name.startswith("cifar10-symbolic-fit-") for name in names)


def test_missing_namespace_is_a_usage_error(kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli([*SUBMIT, "--namespace", "missing"], capsys)
    assert code == 2
    assert (
        err
        == "error: namespace 'missing' not found: create it (kubectl create namespace missing) or pass --namespace\n"
    )


def test_taken_name_is_exit_4(kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(SUBMIT, capsys)[0] == 0
    code, _, err = run_cli(SUBMIT, capsys)
    assert code == 4
    assert err.startswith("error: Job run-1 already exists in namespace 'cifar10-test'") and err.count("\n") == 1


def test_forbidden_is_a_usage_error_with_the_servers_reason(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    message = 'jobs.batch is forbidden: User "tester" cannot create resource "jobs" in API group "batch"'
    kube_api.respond("post", JOBS, 403, status_body(403, "Forbidden", message))
    code, _, err = run_cli(SUBMIT, capsys)
    assert code == 2
    assert err == f"error: the cluster refused Job run-1 (403): {message}; check your credentials and RBAC\n"


def test_unset_image_fails_before_any_request(kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]) -> None:
    args = [argument for argument in SUBMIT if argument not in ("--image", IMAGE)]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.startswith("error: image unset: pass --image")
    assert list(kube_api.handler) == []


def test_no_kubeconfig_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, _, err = run_cli(SUBMIT, capsys)
    assert code == 2 and err.startswith("error: no Kubernetes credentials") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("bucket", "root"),
    [("test-bucket", "gs://test-bucket"), ("gs://test-bucket", "gs://test-bucket"),
     ("gs://test-bucket/team/", "gs://test-bucket/team")],
)  # fmt: skip
def test_bucket_accepts_a_name_or_a_gs_url(bucket: str, root: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*SUBMIT[:3], "--bucket", bucket, *SUBMIT[5:], "--dry-run"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    container = json.loads(out)["spec"]["template"]["spec"]["containers"][0]
    env = {entry["name"]: entry.get("value") for entry in container["env"]}
    assert (env["JOB_DATA"], env["JOB_OUTPUT"]) == (f"{root}/data/cifar-10-python.tar.gz", f"{root}/runs")


@pytest.mark.parametrize("bucket", ["gs://gs://test-bucket", "test-bucket/runs", "s3://test-bucket", "Test_Bucket!"])
def test_a_malformed_bucket_is_refused_before_any_request(
    bucket: str, kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*SUBMIT[:3], "--bucket", bucket, *SUBMIT[5:]]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.startswith(f"error: --bucket {bucket!r} is neither a bucket name nor gs://BUCKET"), err
    assert list(kube_api.handler) == []


def test_an_unreachable_api_server_is_exit_1_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: exit 1 (retried, counted) for an unreachable API. Nothing listens on the kubeconfig's port."""
    kubeconfig = tmp_path / "kubeconfig"
    kube_fixtures._write_kubeconfig(kubeconfig, f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for args in (SUBMIT, ["status", "run-1", "--namespace", NAMESPACE]):
        code, _, err = run_cli(args, capsys)
        assert code == 1, err
        assert err.startswith("error: cannot reach the Kubernetes API server") and err.count("\n") == 1, err
        assert "Traceback" not in err


def test_a_missing_service_account_is_exit_4_before_anything_is_created(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without it the Job's pods are refused at admission and the Job waits in silence until its deadline."""
    del kube_api.handler.objects["v1/serviceaccounts", NAMESPACE, kube_fixtures.SERVICE_ACCOUNT]
    for args in (SUBMIT, ["sweep", *SUBMIT[1:], "--learning-rate", "0.1,0.05"]):
        code, _, err = run_cli(args, capsys)
        assert code == 4, err
        assert err == (
            f"error: ServiceAccount cifar10-job does not exist in namespace '{NAMESPACE}': the Job's pods would be "
            "refused and it would wait in silence until its deadline; edit k8s/base/kustomization.yaml, then run "
            "`make k8s-setup`\n"
        )
    assert kube_api.requests("post") == []


def test_a_placeholder_workload_identity_is_exit_4(kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]) -> None:
    kube_fixtures.add_service_account(kube_api, identity="cifar10-job@set-me-project.iam.gserviceaccount.com")
    code, _, err = run_cli(SUBMIT, capsys)
    assert code == 4 and "still acts as the placeholder cifar10-job@set-me-project" in err, err
    assert kube_api.requests("post") == []


def test_setup_creates_the_account_and_policy_only_and_then_submit_runs(
    kube_api: ApiDouble, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    del kube_api.handler.objects["v1/serviceaccounts", NAMESPACE, kube_fixtures.SERVICE_ACCOUNT]
    code, _, err = run_cli(["setup", "--namespace", NAMESPACE], capsys)
    assert code == 2 and "placeholder cifar10-job@set-me-project" in err, err  # k8s/ as shipped: edit it first.
    assert kube_api.requests("post") == []

    # The namespace exists already, as a real API server would show it.
    kube_api.respond(
        "get", f"/api/v1/namespaces/{NAMESPACE}", 200, {"kind": "Namespace", "metadata": {"name": NAMESPACE}}
    )
    k8s = tmp_path / "k8s"
    shutil.copytree(render.KUSTOMIZE_DIR, k8s)
    kustomization = k8s / "base" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("set-me-project", "my-project"))
    setup = ["setup", "--namespace", NAMESPACE, "--kustomize-dir", str(k8s)]
    code, out, err = run_cli(setup, capsys)
    assert code == 0, err
    created = sorted(request.data["kind"] for request in kube_api.requests("post"))
    assert created == ["NetworkPolicy", "ServiceAccount"]  # No Job, no ConfigMap: nothing trains.
    assert (
        f"namespace {NAMESPACE}: exists" in out
        and f"ServiceAccount cifar10-job: created in namespace {NAMESPACE}" in out
    )
    account = kube_api.handler.objects["v1/serviceaccounts", NAMESPACE, kube_fixtures.SERVICE_ACCOUNT].raw
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(
        "@my-project.iam.gserviceaccount.com"
    )
    assert run_cli(setup, capsys)[0] == 0  # Again: everything is there already, and is updated in place.

    code, _, err = run_cli(SUBMIT, capsys)
    assert code == 0, err


# The Job controller's own wording for a FailJob rule (kubernetes pkg/controller/job/pod_failure_policy.go).
FAIL_JOB_MESSAGE = (
    f"Container train for pod {NAMESPACE}/run-1-abcde failed with exit code 3 matching FailJob rule at index 0"
)


def finished_job(condition: str) -> dict[str, Any]:
    job = expected_job("symbolic", "symbolic", "fit", [])
    reason, message = ("PodFailurePolicy", FAIL_JOB_MESSAGE) if condition == "Failed" else ("CompletionsReached", "")
    job["status"] = {"conditions": [{"type": condition, "status": "True", "reason": reason, "message": message}]}
    return job


def add_pod(double: ApiDouble, exit_code: int) -> None:
    double.handler.objects["v1/pods", NAMESPACE, "run-1-abcde"] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "run-1-abcde", "namespace": NAMESPACE, "labels": {render.JOB_NAME_LABEL: "run-1"}},
        "spec": {"containers": [{"name": "train", "image": IMAGE}]},
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": "train",
                    "image": IMAGE,
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": exit_code}},
                }
            ],
        },
    }
    double.handler[f"get /api/v1/namespaces/{NAMESPACE}/pods/run-1-abcde/log"] << b'{"epoch": 1, "loss": 1.5}\n'


@pytest.mark.parametrize(("condition", "exit_code"), [("Complete", 0), ("Failed", 3)])
def test_follow_streams_logs_and_exits_with_the_jobs_outcome(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str], condition: str, exit_code: int
) -> None:
    add_pod(kube_api, exit_code)
    kube_api.respond("get", f"{JOBS}/run-1", 200, finished_job(condition))
    code, out, err = run_cli([*SUBMIT, "--follow"], capsys)
    assert code == exit_code
    assert '{"epoch": 1, "loss": 1.5}\n' in out
    if condition == "Failed":
        assert err.endswith(f"error: Job run-1 failed (PodFailurePolicy: {FAIL_JOB_MESSAGE})\n")


def test_status_logs_and_delete(kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(SUBMIT, capsys)[0] == 0
    add_pod(kube_api, 0)
    code, out, _ = run_cli(["status", "run-1", "--namespace", NAMESPACE], capsys)
    assert (code, out) == (0, "run-1\tPending\tactive=0 succeeded=0 failed=0\n  pod run-1-abcde: Succeeded\n")
    code, out, _ = run_cli(["logs", "run-1", "--namespace", NAMESPACE], capsys)
    assert (code, out) == (0, '{"epoch": 1, "loss": 1.5}\n')
    code, out, _ = run_cli(["delete", "run-1", "--namespace", NAMESPACE], capsys)
    assert (code, out) == (0, f"deleted Job run-1 in namespace {NAMESPACE}\n")
    (request,) = kube_api.requests("delete")
    assert request.url.path == f"{JOBS}/run-1" and request.params["propagationPolicy"] == "Background"
    code, _, err = run_cli(["status", "run-1", "--namespace", NAMESPACE], capsys)
    assert code == 2 and err == "error: Job run-1 not found in namespace 'cifar10-test'\n"


# Multi-worker runs: the Job plus its headless Service and NetworkPolicy, owned by the Job.
SERVICES = f"/api/v1/namespaces/{NAMESPACE}/services"
POLICIES = f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies"
JOB_UID = "0b7c6f5e-1d2a-4c3b-9e8f-7a6b5c4d3e2f"


def assign_uid(double: ApiDouble) -> None:
    """Answer Job creation as a real API server does: with the stored object and its new uid."""
    (
        double.handler[f"post {JOBS}"]
        << 201
        << (lambda request: {**request.data, "metadata": {**request.data["metadata"], "uid": JOB_UID}})
    )


def expected_multiworker(workers: int) -> list[dict[str, Any]]:
    """The multiworker overlay as rendered, changed exactly as docs/scaleout.md says submit --workers does."""
    documents = render.render(render.KUSTOMIZE_DIR / "overlays" / "multiworker")
    job = expected_job("multiworker", "symbolic", "fit", [])
    job["spec"]["completions"] = job["spec"]["parallelism"] = workers
    job["spec"]["template"]["spec"]["subdomain"] = "run-1"
    for entry in job["spec"]["template"]["spec"]["containers"][0]["env"]:
        entry.update({"JOB_WORKERS": {"value": str(workers)}, "JOB_SERVICE": {"value": "run-1"}}.get(entry["name"], {}))
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "run-1", "uid": JOB_UID}
    companions = []
    for kind in ("Service", "NetworkPolicy"):
        (document,) = [
            found for found in render.find(documents, kind) if found["metadata"]["name"] == "cifar10-multiworker"
        ]
        text = json.dumps(document).replace('"cifar10-multiworker"', '"run-1"')
        document = json.loads(text)
        document["metadata"].update(namespace=NAMESPACE, ownerReferences=[owner])
        companions.append(document)
    return [job, *companions]


def test_submit_workers_creates_the_job_then_its_service_and_policy(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    assign_uid(kube_api)
    code, out, err = run_cli([*SUBMIT, "--workers", "3"], capsys)
    assert (code, err) == (0, "")
    requests = kube_api.requests("post")
    assert [request.url.path for request in requests] == [JOBS, SERVICES, POLICIES]
    assert [request.data for request in requests] == expected_multiworker(3)
    service = requests[1].data
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["selector"]["cifar10-job/run-id"] == "run-1"
    assert out.startswith(
        f"created Job run-1 in namespace {NAMESPACE}\ncreated Service run-1 in namespace {NAMESPACE}\n"
        f"created NetworkPolicy run-1 in namespace {NAMESPACE}\n"
    )


def test_a_refused_service_deletes_the_job_again(kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]) -> None:
    assign_uid(kube_api)
    message = 'services is forbidden: User "tester" cannot create resource "services"'
    kube_api.respond("post", SERVICES, 403, status_body(403, "Forbidden", message))
    code, _, err = run_cli([*SUBMIT, "--workers", "2"], capsys)
    assert code == 2
    assert err == (
        f"error: the cluster refused Service run-1 (403): {message}; check your credentials and RBAC "
        "(Job run-1 deleted again)\n"
    )
    (request,) = kube_api.requests("delete")
    assert request.url.path == f"{JOBS}/run-1"
    assert [request.url.path for request in kube_api.requests("post")] == [JOBS, SERVICES]  # No NetworkPolicy.


def test_delete_removes_a_multiworker_runs_service_and_policy(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    assign_uid(kube_api)
    assert run_cli([*SUBMIT, "--workers", "2"], capsys)[0] == 0
    code, out, _ = run_cli(["delete", "run-1", "--namespace", NAMESPACE], capsys)
    assert code == 0
    assert out == "".join(
        f"deleted {kind} run-1 in namespace {NAMESPACE}\n" for kind in ("Job", "Service", "NetworkPolicy")
    )
    paths = [request.url.path for request in kube_api.requests("delete")]
    assert paths == [f"{JOBS}/run-1", f"{SERVICES}/run-1", f"{POLICIES}/run-1"]


def test_delete_leaves_a_same_named_service_of_someone_else(
    kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(SUBMIT, capsys)[0] == 0  # A one-worker run: no Service of its own.
    kube_api.handler.objects["v1/services", NAMESPACE, "run-1"] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "run-1", "namespace": NAMESPACE, "labels": {"app": "other"}},
        "spec": {"clusterIP": "None"},
    }
    code, out, _ = run_cli(["delete", "run-1", "--namespace", NAMESPACE], capsys)
    assert (code, out) == (0, f"deleted Job run-1 in namespace {NAMESPACE}\n")
    assert [request.url.path for request in kube_api.requests("delete")] == [f"{JOBS}/run-1"]
