"""Talk to the cluster with the official `kubernetes` client: create, read, follow and delete Jobs.

Every API failure becomes one `job.errors` exception (one line, no traceback):
    no kubeconfig / in-cluster config, namespace missing, 401/403  -> UsageError, exit 2 (fix the setup)
    409 (a Job with this name exists)                              -> OutputError, exit 4 (like "run exists")
    API server unreachable or any other API error                  -> JobError, exit 1
`kubernetes` is imported inside functions so `python -m job --help` stays fast. What the Job's state
means is job/kube/diagnose.py; following a run is job/kube/follow.py.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from job.errors import JobError, OutputError, UsageError
from job.kube.indexed import COMPANION_KINDS, owned_by
from job.kube.render import CONTAINER, JOB_NAME_LABEL, LABEL_RUN_ID, Manifest

# Connections kept per host. `logs --follow` holds one open per pod of a multi-worker run or sweep while it
# polls; with the client's default (5 per CPU, so 10 on 2 cores) urllib3 warns "Connection pool is full".
CONNECTIONS = 64


def connect() -> Any:
    """An ApiClient from the in-cluster service account or the kubeconfig ($KUBECONFIG, ~/.kube/config)."""
    from kubernetes import client, config

    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or "~/.kube/config")
    except (config.ConfigException, OSError) as error:
        raise UsageError(
            f"no Kubernetes credentials ({error}): set KUBECONFIG or run "
            "`gcloud container clusters get-credentials CLUSTER`, or run inside a cluster"
        ) from None
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = CONNECTIONS
    return client.ApiClient(configuration)


def status_message(error: Any) -> tuple[str, dict[str, Any]]:
    """The API server's own message and details from an ApiException's Status body."""
    try:
        status = json.loads(error.body or "{}")
    except ValueError:
        status = {}
    return status.get("message") or str(error.reason), status.get("details") or {}


@contextlib.contextmanager
def api_errors(namespace: str, what: str, missing: str = "") -> Iterator[None]:
    """Map the client's exceptions for `what` in `namespace` to the exit-code contract; `missing`, when given, is
    the OutputError for a 404 (something the run needs is not there)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as error:
        message, details = status_message(error)
        if error.status == 404 and details.get("kind") == "namespaces":
            raise UsageError(
                f"namespace {namespace!r} not found: create it (kubectl create namespace {namespace}) or pass --namespace"
            ) from None
        if error.status == 404 and missing:
            raise OutputError(missing) from None
        if error.status == 404:
            raise UsageError(f"{what} not found in namespace {namespace!r}") from None
        if error.status in (401, 403):
            raise UsageError(
                f"the cluster refused {what} ({error.status}): {message}; check your credentials and RBAC"
            ) from None
        if error.status == 409:
            raise OutputError(
                f"{what} already exists in namespace {namespace!r}: choose another --run-id or delete it"
            ) from None
        raise JobError(f"Kubernetes API error for {what} ({error.status}): {message}") from None
    except HTTPError as error:
        raise JobError(f"cannot reach the Kubernetes API server: {error}") from None


# The kinds used here: the client's API class and the suffix of its *_namespaced_* methods (the model is V1<kind>).
KINDS = {
    "Job": ("BatchV1Api", "job"),
    "Service": ("CoreV1Api", "service"),
    "NetworkPolicy": ("NetworkingV1Api", "network_policy"),
    "ServiceAccount": ("CoreV1Api", "service_account"),
    "Pod": ("CoreV1Api", "pod"),
    "Event": ("CoreV1Api", "event"),
}
WORKLOAD_IDENTITY = "iam.gke.io/gcp-service-account"
PLACEHOLDER_PROJECT = "set-me-project"  # In k8s/base/kustomization.yaml until someone sets their own.
SETUP_HINT = "edit k8s/base/kustomization.yaml, then run `make k8s-setup`"


def check_service_account(api: Any, job: Manifest) -> None:
    """Refuse to submit when the pods' ServiceAccount is missing or still carries the placeholder identity.

    A missing one makes the Job controller's pod creation fail at admission (FailedCreate events only): no
    pod ever fails, the Job stays active until activeDeadlineSeconds and `--follow` waits in silence.
    """
    namespace = job["metadata"]["namespace"]
    name = job["spec"]["template"]["spec"].get("serviceAccountName") or "default"
    missing = (
        f"ServiceAccount {name} does not exist in namespace {namespace!r}: the Job's pods would be refused "
        f"and it would wait in silence until its deadline; {SETUP_HINT}"
    )
    with api_errors(namespace, f"ServiceAccount {name}", missing):
        account = _method(api, "ServiceAccount", "read")(name, namespace)
    identity = ((account.metadata and account.metadata.annotations) or {}).get(WORKLOAD_IDENTITY, "")
    if PLACEHOLDER_PROJECT in identity:
        raise OutputError(
            f"ServiceAccount {name} in namespace {namespace!r} still acts as the placeholder {identity}: the pods "
            f"could not reach the bucket; {SETUP_HINT}"
        )


def apply_object(api: Any, document: Manifest) -> str:
    """Create a ServiceAccount or NetworkPolicy, or replace the one already there; "created" or "updated"."""
    with contextlib.suppress(OutputError):  # What api_errors makes of 409: it exists.
        create_object(api, document)
        return "created"
    kind, namespace, name = document["kind"], document["metadata"]["namespace"], document["metadata"]["name"]
    with api_errors(namespace, f"{kind} {name}"):
        _method(api, kind, "patch")(name, namespace, document)
    return "updated"


def ensure_namespace(api: Any, namespace: str) -> str:
    """Create the namespace unless it exists; "created" or "exists"."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api)
    with api_errors(namespace, f"namespace {namespace}"):
        try:
            core.read_namespace(namespace)
            return "exists"
        except ApiException as error:
            if error.status != 404:
                raise
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    return "created"


def _method(api: Any, kind: str, verb: str) -> Any:
    """The client's bound `<verb>_namespaced_<kind>` method, e.g. CoreV1Api(api).create_namespaced_service."""
    from kubernetes import client

    api_class, suffix = KINDS[kind]
    return getattr(getattr(client, api_class)(api), f"{verb}_namespaced_{suffix}")


def create_object(api: Any, document: Manifest) -> Manifest:
    """Create a Job, Service or NetworkPolicy; the server's copy (with its uid) as plain JSON."""
    kind, namespace, name = document["kind"], document["metadata"]["namespace"], document["metadata"]["name"]
    try:  # The client's own models check the body first, e.g. that every quantity is a string.
        body = api.deserialize(json.dumps(document), f"V1{kind}", "application/json")
    except ValueError as error:
        raise UsageError(f"the rendered {kind} is not valid: {error}".replace("\n", " ")) from None
    with api_errors(namespace, f"{kind} {name}"):
        created = _method(api, kind, "create")(namespace, body)
    return dict(api.sanitize_for_serialization(created))


def create_run(api: Any, job: Manifest, companions: list[Manifest]) -> None:
    """Check the pods' ServiceAccount, create the Job, then its companions owned by it (if one fails: delete the Job)."""
    check_service_account(api, job)
    created = create_object(api, job)
    try:
        for document in companions:
            create_object(api, owned_by(document, created))
    except JobError as error:
        name = job["metadata"]["name"]
        try:  # Workers without their Service could never find each other.
            delete_job(api, job["metadata"]["namespace"], name)
            outcome = f"Job {name} deleted again"
        except JobError as rollback:
            outcome = f"deleting Job {name} failed too: {rollback}; delete it with `python -m job delete {name}`"
        raise type(error)(f"{error} ({outcome})") from None


def delete_companions(api: Any, namespace: str, name: str) -> list[str]:
    """Delete the run's Service and NetworkPolicy if it has them (named and labelled as the run); what went."""
    from kubernetes.client.exceptions import ApiException

    deleted = []
    for kind in COMPANION_KINDS:
        try:
            found = api.sanitize_for_serialization(_method(api, kind, "read")(name, namespace))
            if (found["metadata"].get("labels") or {}).get(LABEL_RUN_ID) != name:
                continue  # Someone else's object with the same name.
            _method(api, kind, "delete")(name, namespace)
        except ApiException as error:
            if error.status == 404:  # None (a one-worker run), or the garbage collector was first.
                continue
            with api_errors(namespace, f"{kind} {name}"):
                raise
        deleted.append(f"{kind} {name}")
    return deleted


def read_job(api: Any, namespace: str, name: str) -> Manifest:
    """The Job as plain JSON (camelCase keys, as kubectl shows it)."""
    with api_errors(namespace, f"Job {name}"):
        return dict(api.sanitize_for_serialization(_method(api, "Job", "read")(name, namespace)))


def list_objects(api: Any, kind: str, namespace: str, what: str, selector: str | None = None) -> list[Manifest]:
    """Every `kind` in the namespace that the label selector matches, as plain JSON; `what` names them in errors."""
    with api_errors(namespace, what):
        found = _method(api, kind, "list")(namespace, label_selector=selector)
    return [dict(api.sanitize_for_serialization(item)) for item in found.items]


def list_pods(api: Any, namespace: str, name: str | None = None) -> list[Manifest]:
    """The pods of Job `name` (of every Job when None), oldest first."""
    selector = f"{JOB_NAME_LABEL}={name}" if name else JOB_NAME_LABEL
    found = list_objects(api, "Pod", namespace, f"pods of Job {name}" if name else "listing pods", selector)
    if name:  # What the selector asked for, also from a server that ignores selectors (the test double).
        found = [pod for pod in found if (pod["metadata"].get("labels") or {}).get(JOB_NAME_LABEL) == name]
    return sorted(found, key=lambda pod: (pod["metadata"].get("creationTimestamp") or "", pod["metadata"]["name"]))


def list_events(api: Any, namespace: str) -> list[Manifest]:
    """The namespace's core/v1 Events (kept one hour by default), as plain JSON.

    A field selector matches one object name only; a run has a Job and several pods, so this lists the
    namespace (the project's own, holding only runs) and job/kube/diagnose.py picks the run's events.
    """
    return list_objects(api, "Event", namespace, "listing events")


def delete_job(api: Any, namespace: str, name: str) -> None:
    """Delete the Job and, in the background, its pods (the run folder in the bucket stays)."""
    with api_errors(namespace, f"Job {name}"):
        _method(api, "Job", "delete")(name, namespace, propagation_policy="Background")


def open_log(api: Any, namespace: str, pod: str, follow: bool, tail: int | None = None, previous: bool = False) -> Any:
    """The train container's log as an unread urllib3 response (`.stream()`, then `.release_conn()`).

    Raises the client's ApiException and urllib3 errors as they are: a caller streaming several pods decides
    per pod (a pod that never started answers 400, a deleted one 404, one on a vanished node 5xx).
    """
    from kubernetes import client

    # The client leaves out the parameters that are None: neither tailLines nor previous=false is sent.
    options: dict[str, Any] = {
        "container": CONTAINER,
        "follow": follow,
        "tail_lines": tail,
        "previous": previous or None,
    }
    return client.CoreV1Api(api).read_namespaced_pod_log(pod, namespace, _preload_content=False, **options)
