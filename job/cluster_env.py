"""TF_CONFIG for MultiWorkerMirroredStrategy, derived from an Indexed Job's pod environment. No TensorFlow here.

In a pod of k8s/overlays/multiworker the Job controller sets JOB_COMPLETION_INDEX, and the manifest
sets JOB_NAME (the pod's batch.kubernetes.io/job-name label), JOB_SERVICE (the headless Service),
JOB_WORKERS (the Job's completions) and JOB_WORKER_PORT. Worker i's pod has the hostname
<JOB_NAME>-<i> and the Service as its subdomain, so it is reachable at <JOB_NAME>-<i>.<JOB_SERVICE>
(https://kubernetes.io/docs/concepts/workloads/controllers/job/#completion-mode).
A TF_CONFIG that is already set (Vertex AI, Kubeflow's TFJob) wins over all of that.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from job.errors import UsageError

DEFAULT_WORKER_PORT = 2222  # TensorFlow's conventional gRPC port, also in the Service and NetworkPolicy.
TRAINING_TASK_TYPES = ("chief", "worker")  # Evaluators and parameter servers do not run the training steps.

TfConfig = dict[str, Any]


def resolve_tf_config(env: Mapping[str, str]) -> TfConfig | None:
    """The given TF_CONFIG, else one built from an Indexed Job's variables, else None (one worker)."""
    if raw := env.get("TF_CONFIG", "").strip():
        return parse_tf_config(raw)
    workers = _int_variable(env, "JOB_WORKERS", default=1)
    if workers < 1:
        raise UsageError(f"JOB_WORKERS must be at least 1, got {workers}: set it to the Job's completions")
    if workers == 1:
        return None
    if not env.get("JOB_COMPLETION_INDEX", "").strip():
        raise UsageError(
            f"JOB_WORKERS={workers} needs JOB_COMPLETION_INDEX (an Indexed Job sets it) or TF_CONFIG: "
            "run it through k8s/overlays/multiworker, or unset JOB_WORKERS"
        )
    index = _int_variable(env, "JOB_COMPLETION_INDEX", default=0)
    if not 0 <= index < workers:
        raise UsageError(
            f"JOB_COMPLETION_INDEX={index} is out of range for JOB_WORKERS={workers}: "
            "set JOB_WORKERS to the Job's completions"
        )
    return {"cluster": {"worker": _worker_addresses(env, workers)}, "task": {"type": "worker", "index": index}}


def _worker_addresses(env: Mapping[str, str], workers: int) -> list[str]:
    """<JOB_NAME>-<i>.<JOB_SERVICE>:<port>, or the explicit JOB_WORKER_ADDRESSES (host:port,...) when given.

    The explicit list serves clusters that name pods differently and local runs (tests start the workers
    as processes on 127.0.0.1 ports, where the Indexed Job's DNS names do not exist).
    """
    if explicit := [address.strip() for address in env.get("JOB_WORKER_ADDRESSES", "").split(",") if address.strip()]:
        if len(explicit) != workers:
            raise UsageError(
                f"JOB_WORKER_ADDRESSES lists {len(explicit)} addresses but JOB_WORKERS={workers}: give one per worker"
            )
        return explicit
    job_name, service = _required(env, "JOB_NAME"), _required(env, "JOB_SERVICE")
    port = _int_variable(env, "JOB_WORKER_PORT", default=DEFAULT_WORKER_PORT)
    if not 0 < port < 65536:
        raise UsageError(f"JOB_WORKER_PORT must be a TCP port (1-65535), got {port}")
    return [f"{job_name}-{worker}.{service}:{port}" for worker in range(workers)]


def parse_tf_config(raw: str) -> TfConfig:
    """TF_CONFIG's JSON, checked for the fields MultiWorkerMirroredStrategy reads."""
    try:
        config = json.loads(raw)
    except ValueError as error:
        raise UsageError(f"TF_CONFIG is not valid JSON ({error}): fix it or unset it") from None
    cluster, task = (config.get("cluster"), config.get("task")) if isinstance(config, dict) else (None, None)
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UsageError('TF_CONFIG needs a "cluster" object and a "task" object: fix it or unset it')
    task_type, index = task.get("type"), task.get("index")
    tasks = cluster.get(task_type) if isinstance(task_type, str) else None
    if not isinstance(tasks, list) or not isinstance(index, int) or not 0 <= index < len(tasks):
        raise UsageError(
            f"TF_CONFIG task {task_type}/{index} is not in its cluster "
            f"({', '.join(f'{name}: {len(hosts)}' for name, hosts in cluster.items())}): fix it or unset it"
        )
    return config


def is_chief(tf_config: TfConfig | None) -> bool:
    """True for the one task that writes artifacts: no cluster, the chief, or worker 0 when there is no chief."""
    if tf_config is None:
        return True
    task, cluster = tf_config["task"], tf_config["cluster"]
    return task["type"] == "chief" or (task["type"] == "worker" and task["index"] == 0 and not cluster.get("chief"))


def worker_count(tf_config: TfConfig | None) -> int:
    """How many tasks run the training steps (chief plus workers); 1 without a cluster."""
    if tf_config is None:
        return 1
    return sum(len(tf_config["cluster"].get(task_type) or []) for task_type in TRAINING_TASK_TYPES)


def local_tf_config(ports: Sequence[int], index: int) -> TfConfig:
    """A TF_CONFIG for len(ports) workers on this machine (tests, a laptop): worker `index` of them."""
    if not 0 <= index < len(ports):
        raise UsageError(f"worker index {index} is out of range for {len(ports)} ports")
    return {"cluster": {"worker": [f"localhost:{port}" for port in ports]}, "task": {"type": "worker", "index": index}}


def _int_variable(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{name} must be an integer, got {text!r}") from None


def _required(env: Mapping[str, str], name: str) -> str:
    if not (value := env.get(name, "").strip()):
        raise UsageError(
            f"{name} is unset but JOB_WORKERS > 1 needs it to build TF_CONFIG: "
            "k8s/overlays/multiworker sets it, or set TF_CONFIG yourself"
        )
    return value
