"""TF_CONFIG from an Indexed Job pod's environment (job/cluster_env.py): what each worker would see."""

from __future__ import annotations

import json

import pytest

from job import cluster_env
from job.errors import UsageError

# What k8s/overlays/multiworker gives pod 1 of a 3-worker run named run-1 (the Job controller adds the index).
POD = {"JOB_WORKERS": "3", "JOB_NAME": "run-1", "JOB_SERVICE": "run-1", "JOB_WORKER_PORT": "2222"}


def test_an_indexed_job_pod_gets_every_worker_by_stable_hostname() -> None:
    config = cluster_env.resolve_tf_config({**POD, "JOB_COMPLETION_INDEX": "1"})
    assert config == {
        "cluster": {"worker": ["run-1-0.run-1:2222", "run-1-1.run-1:2222", "run-1-2.run-1:2222"]},
        "task": {"type": "worker", "index": 1},
    }
    assert not cluster_env.is_chief(config) and cluster_env.worker_count(config) == 3


def test_index_0_is_the_chief_and_the_port_defaults_to_2222() -> None:
    env = {key: value for key, value in POD.items() if key != "JOB_WORKER_PORT"}
    config = cluster_env.resolve_tf_config({**env, "JOB_COMPLETION_INDEX": "0"})
    assert config is not None and config["cluster"]["worker"][0] == "run-1-0.run-1:2222"
    assert cluster_env.is_chief(config)


def test_explicit_worker_addresses_replace_the_hostnames() -> None:
    env = {"JOB_WORKERS": "2", "JOB_COMPLETION_INDEX": "1", "JOB_WORKER_ADDRESSES": "127.0.0.1:5001, 127.0.0.1:5002"}
    config = cluster_env.resolve_tf_config(env)
    assert config == {
        "cluster": {"worker": ["127.0.0.1:5001", "127.0.0.1:5002"]},
        "task": {"type": "worker", "index": 1},
    }
    with pytest.raises(UsageError, match="lists 1 addresses but JOB_WORKERS=2"):
        cluster_env.resolve_tf_config({**env, "JOB_WORKER_ADDRESSES": "127.0.0.1:5001"})


@pytest.mark.parametrize(
    "env",
    [
        {},  # A laptop.
        {"JOB_COMPLETION_INDEX": "2", "JOB_RUN_ID": "sweep-1"},  # A sweep pod: indexed, but one worker.
        {"JOB_WORKERS": "1", "JOB_COMPLETION_INDEX": "0"},
    ],
)
def test_one_worker_has_no_cluster(env: dict[str, str]) -> None:
    assert cluster_env.resolve_tf_config(env) is None
    assert cluster_env.is_chief(None) and cluster_env.worker_count(None) == 1


def test_a_given_tf_config_wins() -> None:
    vertex = {
        "cluster": {"chief": ["cmle-training-workerpool0-0:2222"], "worker": ["cmle-training-workerpool1-0:2222"]},
        "task": {"type": "worker", "index": 0},
        "environment": "cloud",
    }
    config = cluster_env.resolve_tf_config({**POD, "JOB_COMPLETION_INDEX": "2", "TF_CONFIG": json.dumps(vertex)})
    assert config == vertex
    assert not cluster_env.is_chief(config)  # Worker 0 is not the chief when the cluster has one.
    assert cluster_env.worker_count(config) == 2
    assert cluster_env.is_chief({**vertex, "task": {"type": "chief", "index": 0}})


def test_evaluators_do_not_count_as_workers() -> None:
    config = {"cluster": {"worker": ["a:1", "b:1"], "evaluator": ["c:1"]}, "task": {"type": "evaluator", "index": 0}}
    assert cluster_env.worker_count(config) == 2 and not cluster_env.is_chief(config)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({**POD, "JOB_COMPLETION_INDEX": "3"}, "JOB_COMPLETION_INDEX=3 is out of range for JOB_WORKERS=3"),
        ({**POD, "JOB_COMPLETION_INDEX": "-1"}, "JOB_COMPLETION_INDEX=-1 is out of range"),
        ({**POD, "JOB_COMPLETION_INDEX": "one"}, "JOB_COMPLETION_INDEX must be an integer, got 'one'"),
        ({**POD, "JOB_WORKERS": "0", "JOB_COMPLETION_INDEX": "0"}, "JOB_WORKERS must be at least 1, got 0"),
        ({**POD, "JOB_WORKERS": "two"}, "JOB_WORKERS must be an integer, got 'two'"),
        (POD, "JOB_WORKERS=3 needs JOB_COMPLETION_INDEX"),
        ({**POD, "JOB_NAME": "", "JOB_COMPLETION_INDEX": "0"}, "JOB_NAME is unset"),
        ({**POD, "JOB_SERVICE": " ", "JOB_COMPLETION_INDEX": "0"}, "JOB_SERVICE is unset"),
        ({**POD, "JOB_WORKER_PORT": "70000", "JOB_COMPLETION_INDEX": "0"}, "JOB_WORKER_PORT must be a TCP port"),
        ({"TF_CONFIG": "{cluster"}, "TF_CONFIG is not valid JSON"),
        ({"TF_CONFIG": "[]"}, 'TF_CONFIG needs a "cluster" object and a "task" object'),
        ({"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}'}, "worker/1"),
        ({"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}'}, "chief/0"),
    ],
)
def test_bad_settings_are_one_line_usage_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError) as raised:
        cluster_env.resolve_tf_config(env)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_local_tf_config_for_tests_on_one_machine() -> None:
    config = cluster_env.local_tf_config([23456, 23457], index=1)
    assert config == {
        "cluster": {"worker": ["localhost:23456", "localhost:23457"]},
        "task": {"type": "worker", "index": 1},
    }
    assert cluster_env.resolve_tf_config({"TF_CONFIG": json.dumps(config)}) == config
    with pytest.raises(UsageError, match="out of range"):
        cluster_env.local_tf_config([23456], index=1)


def test_no_tensorflow_import() -> None:
    import subprocess
    import sys

    code = "import sys, job.cluster_env, job.sweep, job.hypertune; print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
