"""The kustomize manifests: rendered by the real `kubectl kustomize`, checked against the official
Kubernetes JSON schemas (kubernetes-validate --strict) and loaded into the client's `V1Job` model.

No cluster runs here: this shows the manifests are well-formed and say what we mean, not that a
scheduler would place the pod or that the GPU node pool exists.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes.client import ApiClient

from job.errors import EXIT_NOT_READY
from job.kube import render

K8S = Path(__file__).resolve().parents[1] / "k8s"
TARGETS = ["base", "overlays/symbolic", "overlays/imperative", "overlays/custom-loop"]
OVERLAYS = {"symbolic": ("symbolic", "fit"), "imperative": ("imperative", "fit"), "custom-loop": ("symbolic", "custom")}
SCHEMA_VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]
RUN_OVERLAYS = sorted(path.parent.name for path in (K8S / "overlays").glob("*/kustomization.yaml"))
# What `make k8s-setup` creates once per namespace and every run shares: no run's cleanup may select them.
SHARED = {("ServiceAccount", "cifar10-job"), ("NetworkPolicy", "cifar10-job")}


@functools.cache
def _rendered_once(target: str) -> list[dict[str, Any]]:
    return render.render(K8S / target)


def rendered(target: str) -> list[dict[str, Any]]:
    """`kubectl kustomize` of a target, run once per session; each caller gets its own copy to change."""
    return copy.deepcopy(_rendered_once(target))


def job_of(target: str) -> dict[str, Any]:
    (job,) = render.find(rendered(target), "Job")
    return job


def container_of(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_rendering_validates_strictly(tmp_path: Path, version: str) -> None:
    files = []
    for target in TARGETS:
        path = tmp_path / f"{target.replace('/', '-')}.yaml"
        path.write_text(yaml.safe_dump_all(rendered(target)))
        files.append(str(path))
    cli = Path(sys.executable).with_name("kubernetes-validate")
    result = subprocess.run([str(cli), "--strict", "-k", version, *files], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = f"against version {version.rsplit('.', 1)[0]}"
    # Four resources per rendering: ServiceAccount, NetworkPolicy, ConfigMap, Job.
    assert result.stdout.count(" passed for resource ") == result.stdout.count(passed) == 4 * len(TARGETS), (
        result.stdout
    )


def test_strict_validation_catches_a_misspelled_field() -> None:
    job = job_of("overlays/symbolic")
    job["spec"]["podFailurePolicies"] = job["spec"].pop("podFailurePolicy")
    with pytest.raises(kubernetes_validate.ValidationError, match="podFailurePolicies"):
        kubernetes_validate.validate(job, "1.31.0", strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_job_loads_into_the_client_model(target: str) -> None:
    model = ApiClient().deserialize(json.dumps(job_of(target)), "V1Job", "application/json")
    assert model.spec.template.spec.restart_policy == "Never"
    assert model.spec.template.spec.containers[0].name == render.CONTAINER


def test_the_client_rejects_a_bare_integer_gpu_count() -> None:
    job = job_of("overlays/symbolic")
    container_of(job)["resources"]["limits"]["nvidia.com/gpu"] = 1
    with pytest.raises(ValueError, match="valid string"):
        ApiClient().deserialize(json.dumps(job), "V1Job", "application/json")


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_sets_style_loop_name_and_one_gpu(overlay: str) -> None:
    job = job_of(f"overlays/{overlay}")
    api, loop = OVERLAYS[overlay]
    expected = {render.LABEL_API: api, render.LABEL_LOOP: loop, render.LABEL_RUN_ID: f"cifar10-{overlay}"}
    assert job["metadata"]["name"] == f"cifar10-{overlay}"
    assert expected.items() <= job["metadata"]["labels"].items()
    assert expected.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    resources = container_of(job)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"
    pod = job["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"name": "JOB_REQUIRE_GPU", "value": "true"} in container_of(job)["env"]


def test_pod_failure_policy_maps_the_exit_code_contract() -> None:
    spec = job_of("overlays/symbolic")["spec"]
    assert spec["podFailurePolicy"]["rules"] == [
        {"action": "FailJob", "onExitCodes": {"containerName": "train", "operator": "In", "values": [2, 3, 4, 5]}},
        {"action": "Ignore", "onExitCodes": {"containerName": "train", "operator": "In", "values": [75]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy requires it.
    assert spec["backoffLimit"] == 3
    assert spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] > 0


@pytest.mark.parametrize("target", sorted({*TARGETS, *(f"overlays/{overlay}" for overlay in RUN_OVERLAYS)}))
def test_environment_not_ready_is_retried_and_counted(target: str) -> None:
    """Exit 6 (no GPU visible, metadata server silent) matches no FailJob/FailIndex/Ignore rule of any Job: the
    controller starts a new pod and counts the failure toward backoffLimit (or backoffLimitPerIndex)."""
    for job in render.find(rendered(target), "Job"):
        spec = job["spec"]
        for rule in spec["podFailurePolicy"]["rules"]:
            codes = rule.get("onExitCodes")
            if codes is None:
                continue
            matches = (EXIT_NOT_READY in codes["values"]) == (codes["operator"] == "In")
            assert not matches or rule["action"] == "Count", (target, rule)
        assert spec.get("backoffLimit", spec.get("backoffLimitPerIndex", 6)) > 0, target


def test_pod_is_restricted_with_a_writable_scratch_volume() -> None:
    pod = job_of("overlays/symbolic")["spec"]["template"]["spec"]
    container = container_of({"spec": {"template": {"spec": pod}}})
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["volumeMounts"] == [{"name": "scratch", "mountPath": "/scratch"}]
    assert {"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}} in pod["volumes"]
    env = {entry["name"]: entry.get("value") for entry in container["env"]}
    assert env["HOME"] == env["TMPDIR"] == "/scratch" and env["KERAS_HOME"].startswith("/scratch/")


def test_settings_come_from_the_config_map_and_the_downward_api() -> None:
    documents = rendered("overlays/symbolic")
    (config_map,) = render.find(documents, "ConfigMap")
    (job,) = render.find(documents, "Job")
    container = container_of(job)
    assert container["args"] == ["train"]
    assert container["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]
    assert config_map["data"]["JOB_OUTPUT"].startswith("gs://") and config_map["data"]["JOB_LOG_FORMAT"] == "json"
    field_paths = {
        entry["name"]: entry["valueFrom"]["fieldRef"]["fieldPath"] for entry in container["env"] if "valueFrom" in entry
    }
    assert field_paths == {
        "JOB_API": "metadata.labels['cifar10-job/api']",
        "JOB_LOOP": "metadata.labels['cifar10-job/loop']",
        "JOB_RUN_ID": "metadata.labels['batch.kubernetes.io/job-name']",
        # The lease's owner (job/lease.py): a retried pod of the same Job takes over a killed one's lease.
        "POD_NAME": "metadata.name",
        "JOB_CONTROLLER_UID": "metadata.labels['batch.kubernetes.io/controller-uid']",
    }


def test_workload_identity_service_account_and_namespace_in_one_place() -> None:
    documents = rendered("overlays/symbolic")
    (account,) = render.find(documents, "ServiceAccount")
    (job,) = render.find(documents, "Job")
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert {document["metadata"]["namespace"] for document in documents} == {"cifar10"}
    assert container_of(job)["image"].startswith(render.PLACEHOLDER_IMAGE)


def test_every_quantity_is_a_string_in_the_yaml() -> None:
    for target in TARGETS:
        resources = container_of(job_of(target))["resources"]
        for kind in ("requests", "limits"):
            assert all(isinstance(value, str) for value in resources[kind].values()), (target, resources)


def cleanup_command() -> tuple[set[str], str]:
    """The resource kinds and the label key of the cleanup command docs/kubernetes.md gives for `apply -k` runs."""
    text = (K8S.parent / "docs" / "kubernetes.md").read_text()
    (match,) = re.findall(r"kubectl delete ([a-z,]+) --namespace \S+ --selector ([\w./-]+)=RUN\b", text)
    return set(match[0].split(",")), match[1]


def run_objects(overlay: str) -> tuple[str, set[tuple[str, str]], set[tuple[str, str]]]:
    """The overlay's run id, the (kind, name) of what the documented cleanup deletes, and of all it renders."""
    kinds, key = cleanup_command()
    documents = rendered(f"overlays/{overlay}")
    (job,) = render.find(documents, "Job")
    run = job["metadata"]["name"]
    every = {(document["kind"], document["metadata"]["name"]) for document in documents}
    selected = {
        (document["kind"], document["metadata"]["name"])
        for document in documents
        if document["kind"].lower() in kinds and document["metadata"].get("labels", {}).get(key) == run
    }
    return run, selected, every


@pytest.mark.parametrize("overlay", RUN_OVERLAYS)
def test_the_documented_cleanup_removes_everything_of_the_run_but_nothing_shared(overlay: str) -> None:
    run, selected, every = run_objects(overlay)
    assert every >= SHARED and selected == every - SHARED, (run, every - SHARED - selected)
    (job,) = render.find(rendered(f"overlays/{overlay}"), "Job")
    assert job["spec"]["template"]["metadata"]["labels"][render.LABEL_RUN_ID] == run  # The pods too.
    (source,) = container_of(job)["envFrom"]
    assert ("ConfigMap", source["configMapRef"]["name"]) in selected  # Its settings go with it, not before it.


def test_no_two_runs_share_an_object_a_cleanup_would_delete() -> None:
    """kubectl apply -k of every overlay into one namespace: deleting one run leaves the others whole."""
    owner: dict[tuple[str, str], str] = {}
    for overlay in RUN_OVERLAYS:
        run, selected, _ = run_objects(overlay)
        for key in selected:
            assert key not in owner, f"{key} belongs to both {owner.get(key)} and {run}"
            owner[key] = run
    assert len(set(owner.values())) == len(RUN_OVERLAYS) >= 5
