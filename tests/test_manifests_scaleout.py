"""The scale-out manifests: k8s/overlays/multiworker and k8s/overlays/sweep, as kustomize renders them and as
`python -m job submit --workers N` / `python -m job sweep` change them, through the same checks as the other
manifests: kubernetes-validate --strict (1.31 and the newest schema), the client's models, and checkov.

No cluster runs here: this shows the objects are well-formed and agree with each other (hostnames,
selectors, ports, sizes), not that a Job controller honours successPolicy or that DNS resolves.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

from job import cluster_env
from job.cli import main
from job.kube import indexed, render
from tests.helpers import ROOT
from tests.test_manifests import K8S, SCHEMA_VERSIONS, rendered

SUBMIT = ["--image", "registry.example/cifar10-job:1", "--bucket", "my-bucket", "--namespace", "ns", "--dry-run"]
MODELS = {"Job": "V1Job", "Service": "V1Service", "NetworkPolicy": "V1NetworkPolicy"}


def submitted(args: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The objects `python -m job ARGS --dry-run` would create."""
    assert main([*args, *SUBMIT]) == 0
    printed = json.loads(capsys.readouterr().out)
    return list(printed["items"]) if printed["kind"] == "List" else [printed]


QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


@pytest.fixture(scope="session")
def queued_k8s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A k8s/ folder whose overlays/multiworker is the repository's plus k8s/components/kueue (docs/kubernetes.md)."""
    root = tmp_path_factory.mktemp("queued") / "k8s"
    overlay = root / "overlays" / "multiworker"
    overlay.mkdir(parents=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / "multiworker", overlay)],
        "components": [os.path.relpath(K8S / "components" / "kueue", overlay)],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return root


def all_renderings(capsys: pytest.CaptureFixture[str], queued_k8s: Path) -> dict[str, list[dict[str, Any]]]:
    queued = ["submit", "--workers", "3", "--run-id", "mw-queued", "--kustomize-dir", str(queued_k8s)]
    return {
        "multiworker": rendered("overlays/multiworker"),
        "sweep": rendered("overlays/sweep"),
        "submit-workers-4": submitted(["submit", "--workers", "4", "--run-id", "mw-run"], capsys),
        "sweep-6-points": submitted(["sweep", "--learning-rate", "0.1,0.05,0.01", "--batch-size", "200,100"], capsys),
        "multiworker-kueue": render.render(queued_k8s / "overlays" / "multiworker"),
        "submit-workers-3-kueue": submitted(queued, capsys),
    }


def by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Job, Service and the run's NetworkPolicy (the one named like the Job)."""
    (job,) = render.find(documents, "Job")
    found = {"Job": job}
    for document in documents:
        if document["kind"] in indexed.COMPANION_KINDS and document["metadata"]["name"] == job["metadata"]["name"]:
            found[document["kind"]] = document
    return found


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_scaleout_renderings_validate_strictly(
    tmp_path: Path, version: str, capsys: pytest.CaptureFixture[str], queued_k8s: Path
) -> None:
    files, count = [], 0
    for name, documents in all_renderings(capsys, queued_k8s).items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(documents))
        files.append(str(tmp_path / f"{name}.yaml"))
        count += len(documents)
    cli = Path(sys.executable).with_name("kubernetes-validate")
    result = subprocess.run([str(cli), "--strict", "-k", version, *files], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = f"against version {version.rsplit('.', 1)[0]}"
    assert result.stdout.count(" passed for resource ") == result.stdout.count(passed) == count == 6 + 4 + 3 + 1 + 6 + 3


def test_every_object_loads_into_the_client_models(capsys: pytest.CaptureFixture[str], queued_k8s: Path) -> None:
    for documents in all_renderings(capsys, queued_k8s).values():
        for kind, document in by_kind(documents).items():
            model = ApiClient().deserialize(json.dumps(document), MODELS[kind], "application/json")
            assert model.metadata.name == document["metadata"]["name"]


CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
SINGLE_RUN_TARGETS = ["base", "overlays/symbolic", "overlays/imperative", "overlays/custom-loop"]


@pytest.mark.slow  # checkov takes about 15 s.
def test_checkov_finds_no_failure_in_the_dockerfile_and_every_rendering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], queued_k8s: Path
) -> None:
    """One checkov run (it takes seconds to start) over the Dockerfile and every Kubernetes object we render.

    checkov without a Prisma Cloud key reports no severities, so the bar is stricter than "no high severity":
    no failed check at all, and every skipped check carries its reason in the file.
    """
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: run `make {CHECKOV.relative_to(ROOT)}` (make test does)")
    renderings = {target.replace("/", "-"): rendered(target) for target in SINGLE_RUN_TARGETS}
    for name, documents in (renderings | all_renderings(capsys, queued_k8s)).items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(documents))
    shutil.copy(ROOT / "Dockerfile", tmp_path / "Dockerfile")
    frameworks = ["--framework", "dockerfile", "kubernetes"]
    command = [str(CHECKOV), "--directory", str(tmp_path), *frameworks, "--skip-download", "--output", "json"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    reports = {report["check_type"]: report for report in json.loads(result.stdout)}
    assert sorted(reports) == ["dockerfile", "kubernetes"], result.stderr
    for check_type, minimum_passed in (("dockerfile", 50), ("kubernetes", 500)):
        report = reports[check_type]
        summary = report["summary"]
        failed = [(c["check_id"], c["check_name"], c["file_path"]) for c in report["results"]["failed_checks"]]
        assert failed == [] and summary["parsing_errors"] == 0, failed
        assert summary["passed"] >= minimum_passed, summary  # The checks really ran.
        for check in report["results"]["skipped_checks"]:
            assert len(check["check_result"].get("suppress_comment") or "") > 20, check["check_id"]
    checked = {Path(c["file_path"]).stem for c in reports["kubernetes"]["results"]["passed_checks"]}
    assert checked == set(renderings) | set(all_renderings(capsys, queued_k8s)), checked  # Nothing went unread.
    skipped = {check["check_id"] for check in reports["kubernetes"]["results"]["skipped_checks"]}
    assert skipped == {"CKV_K8S_43", "CKV_K8S_15"}  # Image digest and pull policy, justified in k8s/base/job.yaml.


def env_of(job: dict[str, Any]) -> dict[str, str | None]:
    return {entry["name"]: entry.get("value") for entry in render.train_container(job)["env"]}


@pytest.mark.parametrize(("source", "workers"), [("overlay", 2), ("submit", 4)])
def test_workers_find_each_other(source: str, workers: int, capsys: pytest.CaptureFixture[str]) -> None:
    documents = (
        rendered("overlays/multiworker")
        if source == "overlay"
        else submitted(["submit", "--workers", str(workers), "--run-id", "mw-run"], capsys)
    )
    objects = by_kind(documents)
    job, service, policy = objects["Job"], objects["Service"], objects["NetworkPolicy"]
    name, spec, pod = job["metadata"]["name"], job["spec"], job["spec"]["template"]
    assert service["metadata"]["name"] == policy["metadata"]["name"] == pod["spec"]["subdomain"] == name
    assert {document["metadata"]["namespace"] for document in objects.values()} == {job["metadata"]["namespace"]}
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", workers, workers)
    env = env_of(job)
    assert (env["JOB_WORKERS"], env["JOB_SERVICE"], env["JOB_WORKER_PORT"]) == (str(workers), name, "2222")
    assert env["JOB_STRATEGY"] == "multiworker"
    # The Service selects exactly this Job's pods, headless, on the TensorFlow port.
    pod_labels = pod["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["ports"][0]["port"] == 2222
    # The NetworkPolicy opens 2222 between this Job's pods, both ways (what else they reach: test_network_policy.py).
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items() and selector[render.LABEL_RUN_ID] == name
    (ingress,), peers = policy["spec"]["ingress"], policy["spec"]["egress"][0]
    assert ingress["from"] == peers["to"] == [{"podSelector": {"matchLabels": selector}}]
    assert ingress["ports"] == peers["ports"] == [{"protocol": "TCP", "port": 2222}]
    # What worker 1 will build from the pod's variables (JOB_NAME is the Job's name via the downward API).
    pod_env = {**{key: value or "" for key, value in env.items()}, "JOB_NAME": name, "JOB_COMPLETION_INDEX": "1"}
    config = cluster_env.resolve_tf_config(pod_env)
    assert config is not None and config["cluster"]["worker"][workers - 1] == f"{name}-{workers - 1}.{name}:2222"


def test_multiworker_failure_and_success_policy() -> None:
    spec = by_kind(rendered("overlays/multiworker"))["Job"]["spec"]
    assert spec["podReplacementPolicy"] == "Failed"
    assert spec["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    assert (spec["backoffLimitPerIndex"], spec["maxFailedIndexes"]) == (3, 0) and "backoffLimit" not in spec
    actions = [
        (rule["action"], rule.get("onExitCodes", {}).get("values")) for rule in spec["podFailurePolicy"]["rules"]
    ]
    assert actions == [("FailJob", [2, 3, 4, 5]), ("Ignore", [75]), ("Ignore", None)]
    container = render.train_container({"spec": spec})
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"  # The GPU component is kept: one per worker.
    assert container["ports"] == [{"name": "tf-worker", "containerPort": 2222}]
    job_name = next(entry for entry in container["env"] if entry["name"] == "JOB_NAME")
    assert job_name["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.labels['{render.JOB_NAME_LABEL}']"


def test_sweep_overlay_fails_a_point_not_the_sweep() -> None:
    job = by_kind(rendered("overlays/sweep"))["Job"]
    spec = job["spec"]
    grid = json.loads(env_of(job)["JOB_SWEEP"] or "")
    assert (spec["completionMode"], spec["completions"], len(grid)) == ("Indexed", 3, 3)
    assert [rule["action"] for rule in spec["podFailurePolicy"]["rules"]] == ["FailIndex", "Ignore", "Ignore"]
    assert spec["backoffLimitPerIndex"] == 3 and spec["podReplacementPolicy"] == "Failed"
    assert "successPolicy" not in spec and "subdomain" not in spec["template"]["spec"]


def test_workers_need_the_multiworker_overlay(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "--workers", "2", "--overlay", "imperative", *SUBMIT]) == 2
    assert (
        capsys.readouterr().err
        == "error: this overlay has no headless Service for its workers: use --overlay multiworker\n"
    )
    assert main(["submit", "--workers", "1", "--overlay", "multiworker", *SUBMIT]) == 2
    assert "--workers must be at least 2" in capsys.readouterr().err
    assert main(["submit", "--workers", "2", "--run-id", "9-starts-with-a-digit", *SUBMIT]) == 2
    assert "must start with a letter" in capsys.readouterr().err
    (job,) = submitted(["submit", "--workers", "1"], capsys)  # One worker: the ordinary single-pod Job.
    assert "completionMode" not in job["spec"]


def test_the_kueue_component_queues_the_whole_run_suspended(queued_k8s: Path) -> None:
    """Only the queue label and suspend change: Kueue admits parallelism x requests at once or not at all."""
    queued = by_kind(render.render(queued_k8s / "overlays" / "multiworker"))
    plain = by_kind(rendered("overlays/multiworker"))
    job = queued["Job"]
    assert job["metadata"]["labels"][QUEUE_LABEL] == "cifar10" and job["spec"]["suspend"] is True
    # No kueue.x-k8s.io/job-min-parallelism annotation: partial admission would start a subset of the workers.
    assert not any(key.startswith("kueue.x-k8s.io/") for key in job["metadata"].get("annotations", {}))
    assert job["spec"]["parallelism"] == job["spec"]["completions"] == 2
    del job["metadata"]["labels"][QUEUE_LABEL], job["spec"]["suspend"]
    assert queued == plain


def test_submit_keeps_the_queue_for_any_number_of_workers(capsys: pytest.CaptureFixture[str], queued_k8s: Path) -> None:
    documents = submitted(
        ["submit", "--workers", "3", "--run-id", "mw-queued", "--kustomize-dir", str(queued_k8s)], capsys
    )
    objects = by_kind(documents)
    job = objects["Job"]
    assert job["metadata"]["labels"][QUEUE_LABEL] == "cifar10" and job["spec"]["suspend"] is True
    assert job["spec"]["parallelism"] == job["spec"]["completions"] == 3
    assert set(objects) == {"Job", "Service", "NetworkPolicy"}  # Created at once; only the pods wait for admission.
    assert QUEUE_LABEL not in job["spec"]["template"]["metadata"]["labels"]  # Kueue reads the Job's label.
