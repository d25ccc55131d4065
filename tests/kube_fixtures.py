"""An in-memory Kubernetes API server for the submit tests: kmock's `KubernetesEmulator` on 127.0.0.1.

This is an API *double*, not a cluster: it stores what clients POST and serves it back, answers
404 for namespaces it was not told about (as a real API server does) and lets a test add canned
responses (403, logs, a Job's status). No scheduler, no kubelet, no Job controller runs behind it,
so nothing here shows that a pod would start or train on a real cluster.

kmock is asyncio-based while the official `kubernetes` client is synchronous, so the server runs
on its own event loop in a background thread and the tests talk to it over real HTTP through a
kubeconfig file that `KUBECONFIG` points to.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock
import pytest

NAMESPACE = "cifar10-test"


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `Status` object, the body a real API server sends with every error."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }


@dataclass
class ApiDouble:
    """The running double: `handler` holds the reactions, the stored objects and every request."""

    handler: kmock.KubernetesEmulator
    url: str
    kubeconfig: Path
    namespaces: set[str] = field(default_factory=lambda: {NAMESPACE})

    def requests(self, method: str, path_part: str = "") -> list[kmock.Request]:
        """The requests received so far with this HTTP method and a path containing `path_part`."""
        return [
            request
            for request in list(self.handler)
            if request.method.value.upper() == method.upper() and path_part in request.url.path
        ]

    def job(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        """The Job object as the server stored it."""
        return dict(self.handler.objects["batch/v1/jobs", namespace, name].raw)

    def respond(self, method: str, path: str, code: int, body: Any) -> None:
        """Answer requests with this method and exact path with `code` and a JSON body."""
        self.handler[f"{method.lower()} {path}"] << code << body


def _missing_namespace(double: ApiDouble, request: kmock.Request) -> dict[str, Any]:
    return status_body(
        404,
        "NotFound",
        f'namespaces "{request.namespace}" not found',
        {"name": request.namespace, "kind": "namespaces"},
    )


SERVICE_ACCOUNT = "cifar10-job"
IDENTITY = "cifar10-job@my-project.iam.gserviceaccount.com"


def add_service_account(double: ApiDouble, identity: str = IDENTITY, namespace: str = NAMESPACE) -> None:
    """The pods' ServiceAccount with its Workload Identity annotation, stored in the double."""
    double.handler.objects["v1/serviceaccounts", namespace, SERVICE_ACCOUNT] = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": SERVICE_ACCOUNT,
            "namespace": namespace,
            "annotations": {"iam.gke.io/gcp-service-account": identity},
        },
    }


def _write_kubeconfig(path: Path, url: str) -> None:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: double\n"
        f"clusters:\n- name: double\n  cluster:\n    server: {url}\n"
        "users:\n- name: tester\n  user:\n    token: not-a-secret\n"
        f"contexts:\n- name: double\n  context:\n    cluster: double\n    user: tester\n    namespace: {NAMESPACE}\n"
    )


def _serve(handler: kmock.KubernetesEmulator, ready: threading.Event, box: dict[str, Any]) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        box["loop"], box["stop"] = asyncio.get_running_loop(), stop
        async with handler, kmock.Server(handler, host="127.0.0.1") as server:
            box["url"] = str(server.url).rstrip("/")
            ready.set()
            await stop.wait()

    asyncio.run(main())


@pytest.fixture
def kube_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiDouble]:
    """Start the API double on 127.0.0.1 and point KUBECONFIG at it for the duration of one test."""
    handler = kmock.KubernetesEmulator()
    ready, box = threading.Event(), {}  # type: ignore[var-annotated]
    thread = threading.Thread(target=_serve, args=(handler, ready, box), daemon=True)
    thread.start()
    assert ready.wait(10), "the kmock API double did not start"
    double = ApiDouble(handler=handler, url=box["url"], kubeconfig=tmp_path / "kubeconfig")
    # A real API server answers 404 for any namespaced request into a namespace that does not exist.
    (
        handler[lambda request: request.namespace is not None and request.namespace not in double.namespaces]
        << 404
        << (lambda request: _missing_namespace(double, request))
    )
    add_service_account(double)  # As `make k8s-setup` leaves the namespace; tests remove or change it.
    # A real API server lists these (empty) before any exists; kmock serves lists of declared resources only.
    for resource, kind in (("batch/v1/jobs", "Job"), ("v1/pods", "Pod"), ("v1/events", "Event")):
        handler.resources[resource].kind = kind
    _write_kubeconfig(double.kubeconfig, double.url)
    monkeypatch.setenv("KUBECONFIG", str(double.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    try:
        yield double
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)
