"""What a training pod may reach, computed from every rendered NetworkPolicy that selects it.

A small evaluator of the NetworkPolicy semantics (https://kubernetes.io/docs/concepts/services-networking/network-policies/):
a pod is isolated for a direction when some policy in its namespace selects it and lists that direction in
its policyTypes; an isolated pod's traffic in that direction is allowed when any rule of any such policy
allows it (policies add up); a connection between two pods needs the sender's egress and the receiver's
ingress. The tests probe a grid of destinations and ports and compare the whole allowed set, so a rule
added or removed anywhere changes the answer. No cluster enforces anything here.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from job.kube import indexed, render
from tests.test_manifests import rendered
from tests.test_manifests_scaleout import submitted

Policy = dict[str, Any]


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    namespace_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Address:
    """An IP outside the pod network: the metadata server, NodeLocal DNSCache, the internet."""

    name: str
    ip: str


Endpoint = Pod | Address


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector: matchLabels and matchExpressions; {} selects everything."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        matched = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not matched:
            return False
    return True


def policy_types(policy: Policy) -> set[str]:
    """spec.policyTypes, or its default: Ingress, plus Egress when the policy has egress rules."""
    spec = policy["spec"]
    return set(spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])])


def peer_matches(peer: Mapping[str, Any], policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if not isinstance(other, Address):
            return False  # Pod IPs are the CNI's business; these policies never name them by address.
        ip = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
        )
    if not isinstance(other, Pod):
        return False
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], other.namespace_labels)
    else:
        in_namespace = other.namespace == policy_namespace
    return in_namespace and selects(peer.get("podSelector", {}), other.labels)


def port_matches(ports: list[Mapping[str, Any]] | None, protocol: str, port: int) -> bool:
    """A rule's ports; none listed means every port. (Our policies name no ports by name.)"""
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        if int(entry["port"]) <= port <= int(entry.get("endPort", entry["port"])):
            return True
    return False


def allows(policies: list[Policy], pod: Pod, direction: str, other: Endpoint, protocol: str, port: int) -> bool:
    """Whether `pod` may send to (Egress) or receive from (Ingress) `other` on protocol/port."""
    isolating = [
        policy
        for policy in policies
        if policy["metadata"].get("namespace") == pod.namespace
        and selects(policy["spec"]["podSelector"], pod.labels)
        and direction in policy_types(policy)
    ]
    if not isolating:
        return True
    rules_key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in isolating:
        for rule in policy["spec"].get(rules_key) or []:
            peers = rule.get(peers_key)
            peer_ok = not peers or any(peer_matches(peer, policy["metadata"]["namespace"], other) for peer in peers)
            if peer_ok and port_matches(rule.get("ports"), protocol, port):
                return True
    return False


def connects(policies: list[Policy], source: Endpoint, target: Endpoint, protocol: str, port: int) -> bool:
    """The sender's egress and the receiver's ingress, each where it is a pod."""
    sends = not isinstance(source, Pod) or allows(policies, source, "Egress", target, protocol, port)
    receives = not isinstance(target, Pod) or allows(policies, target, "Ingress", source, protocol, port)
    return sends and receives


PORTS = [("UDP", 53), ("TCP", 53), ("TCP", 80), ("TCP", 443), ("UDP", 443), ("TCP", 988), ("TCP", 2222), ("TCP", 22)]
DNS_AND_HTTPS = {("UDP", 53), ("TCP", 53), ("TCP", 443)}  # The port-only rules: to any address.


def worker(job: dict[str, Any], index: int, run_id: str | None = None) -> Pod:
    """Pod `index` of the Job, labelled as the Job controller labels it (or as another run's pod)."""
    labels = dict(job["spec"]["template"]["metadata"]["labels"])
    name = job["metadata"]["name"]
    if run_id is not None:
        labels[render.LABEL_RUN_ID] = name = run_id
    labels.update({render.JOB_NAME_LABEL: name, "batch.kubernetes.io/job-completion-index": str(index)})
    namespace = job["metadata"]["namespace"]
    return Pod(f"{name}-{index}", namespace, labels, {"kubernetes.io/metadata.name": namespace})


def others(job: dict[str, Any]) -> list[Endpoint]:
    kube_system = {"kubernetes.io/metadata.name": "kube-system"}
    return [
        worker(job, 1),
        worker(job, 0, run_id="someone-elses-run"),
        Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, kube_system),
        Address("node-local-dns", "169.254.20.10"),
        Address("metadata", "169.254.169.254"),
        Address("gke-metadata", "169.254.169.252"),
        Address("storage.googleapis.com", "142.250.180.251"),
        Address("internet", "203.0.113.7"),
    ]


def connections(policies: list[Policy], job: dict[str, Any], outgoing: bool) -> dict[str, set[tuple[str, int]]]:
    """For worker 0: {other address: the (protocol, port) pairs of the connections from worker 0 to it (outgoing)
    or from it to worker 0}."""
    zero = worker(job, 0)
    found = {}
    for other in others(job):
        source, target = (zero, other) if outgoing else (other, zero)
        found[other.name] = {
            (protocol, port) for protocol, port in PORTS if connects(policies, source, target, protocol, port)
        }
    return found


def reachable(policies: list[Policy], job: dict[str, Any]) -> dict[str, set[tuple[str, int]]]:
    """For worker 0: {destination: the (protocol, port) pairs worker 0 can connect to}."""
    return connections(policies, job, outgoing=True)


def reachers(policies: list[Policy], job: dict[str, Any]) -> dict[str, set[tuple[str, int]]]:
    """For worker 0: {source: the (protocol, port) pairs on which it can connect to worker 0}."""
    return connections(policies, job, outgoing=False)


def expected_reach(job: dict[str, Any], peers: bool) -> dict[str, set[tuple[str, int]]]:
    name = job["metadata"]["name"]
    return {
        f"{name}-1": {("TCP", 2222)} if peers else set(),
        "someone-elses-run-0": set(),  # Its pods take nothing but their own run's 2222.
        "kube-dns": DNS_AND_HTTPS,
        "node-local-dns": DNS_AND_HTTPS,
        "metadata": DNS_AND_HTTPS | {("TCP", 80)},
        "gke-metadata": DNS_AND_HTTPS | {("TCP", 988)},
        "storage.googleapis.com": DNS_AND_HTTPS,
        "internet": DNS_AND_HTTPS,  # Not 22, not plain HTTP, not QUIC.
    }


def shared_policy(namespace: str) -> Policy:
    """The shared NetworkPolicy as `make k8s-setup` creates it: from the symbolic rendering, in `namespace`."""
    (policy,) = render.find(rendered("overlays/symbolic"), "NetworkPolicy")
    policy["metadata"]["namespace"] = namespace
    return policy


def scenario(case: str, capsys: pytest.CaptureFixture[str]) -> tuple[list[Policy], dict[str, Any]]:
    """The policies in the namespace and the run's Job, for each way a run reaches the cluster."""
    if case in ("apply-k multiworker", "apply-k symbolic"):
        documents = rendered(f"overlays/{case.split()[1]}")
    else:  # submit --workers 3: the Job, its Service and its own policy, nothing shared.
        documents = submitted(["submit", "--workers", "3", "--run-id", "mw-run"], capsys)
    (job,) = render.find(documents, "Job")
    policies = render.find(documents, "NetworkPolicy")
    if case == "submit after k8s-setup":
        policies.append(shared_policy(job["metadata"]["namespace"]))
    # Someone else's run of the same kind in the namespace, with its own per-run policy.
    name = job["metadata"]["name"]
    own = [policy for policy in policies if policy["metadata"].get("labels", {}).get(render.LABEL_RUN_ID) == name]
    theirs = [indexed.rename_run_label(policy, name, "someone-elses-run") for policy in own]
    for policy in theirs:
        policy["metadata"]["name"] = "someone-elses-run"
    return policies + theirs, job


MULTIWORKER = ["apply-k multiworker", "submit without k8s-setup", "submit after k8s-setup"]


@pytest.mark.parametrize("case", MULTIWORKER)
def test_a_worker_reaches_dns_metadata_https_and_its_peers_only(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    policies, job = scenario(case, capsys)
    assert reachable(policies, job) == expected_reach(job, peers=True)


@pytest.mark.parametrize("case", MULTIWORKER)
def test_only_its_peers_reach_a_worker_and_only_on_2222(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    policies, job = scenario(case, capsys)
    allowed = {source: ports for source, ports in reachers(policies, job).items() if ports}
    assert allowed == {f"{job['metadata']['name']}-1": {("TCP", 2222)}}


def test_a_single_pod_run_reaches_dns_metadata_and_https_and_takes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    policies, job = scenario("apply-k symbolic", capsys)
    assert reachable(policies, job) == expected_reach(job, peers=False)
    assert not any(reachers(policies, job).values())


@pytest.mark.parametrize("case", ["apply-k multiworker", "submit without k8s-setup"])
def test_removing_any_egress_rule_of_the_run_policy_loses_something(
    case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run's own policy alone carries every rule the workers need (no rule is only in the shared one)."""
    policies, job = scenario(case, capsys)
    name = job["metadata"]["name"]
    if case.startswith("apply-k"):  # Without the shared policy: what submit leaves in a namespace.
        policies = [policy for policy in policies if policy["metadata"]["name"] != "cifar10-job"]
    (own,) = [policy for policy in policies if policy["metadata"]["name"] == name]
    for index in range(len(own["spec"]["egress"])):
        weakened = copy.deepcopy(policies)
        (policy,) = [policy for policy in weakened if policy["metadata"]["name"] == name]
        del policy["spec"]["egress"][index]
        assert reachable(weakened, job) != expected_reach(job, peers=True), index
    assert reachable(policies, job) == expected_reach(job, peers=True)


def test_the_evaluator_follows_the_api_semantics() -> None:
    """Unselected or ingress-only policies do not restrict egress; an empty rule list denies; rules without
    ports or peers allow all; a podSelector alone stays in its namespace."""
    pod = Pod("p", "ns", {"app": "a"})
    elsewhere = Pod("q", "other", {"app": "a"}, {"kubernetes.io/metadata.name": "other"})
    internet = Address("internet", "203.0.113.7")

    def policy(spec: dict[str, Any]) -> Policy:
        return {"metadata": {"name": "x", "namespace": "ns"}, "spec": {"podSelector": {}, **spec}}

    assert allows([], pod, "Egress", internet, "TCP", 22)
    assert allows([policy({"ingress": []})], pod, "Egress", internet, "TCP", 22)  # Default policyTypes: Ingress.
    assert not allows([policy({"egress": []})], pod, "Egress", internet, "TCP", 22)
    assert allows([policy({"egress": [{}]})], pod, "Egress", internet, "UDP", 9)
    same_labels = policy({"egress": [{"to": [{"podSelector": {"matchLabels": {"app": "a"}}}]}]})
    assert allows([same_labels], pod, "Egress", pod, "TCP", 1) and not allows(
        [same_labels], pod, "Egress", elsewhere, "TCP", 1
    )
    any_namespace = policy(
        {"egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "a"}}}]}]}
    )
    assert allows([any_namespace], pod, "Egress", elsewhere, "TCP", 1)
    not_selected = {
        "metadata": {"name": "y", "namespace": "ns"},
        "spec": {"podSelector": {"matchLabels": {"app": "b"}}, "egress": []},
    }
    assert allows([not_selected], pod, "Egress", internet, "TCP", 22)
    ranged = policy({"egress": [{"ports": [{"port": 8000, "endPort": 8100}]}]})
    assert allows([ranged], pod, "Egress", internet, "TCP", 8050) and not allows(
        [ranged], pod, "Egress", internet, "UDP", 8050
    )
    expressions = {
        "matchExpressions": [
            {"key": "app", "operator": "In", "values": ["a"]},
            {"key": "x", "operator": "DoesNotExist"},
        ]
    }
    assert selects(expressions, {"app": "a"}) and not selects(expressions, {"app": "a", "x": "1"})
