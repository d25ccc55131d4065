"""Sweeps (job/sweep.py, `python -m job sweep`): the grid, the point each pod trains, and the Indexed Job.

The Job is checked as `--dry-run` prints it and as the kmock API double receives it; no Job
controller runs here, so nothing shows that a cluster starts one pod per index. A point is trained
for real once, to show that a resubmitted sweep skips the points it already finished.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from job import sweep
from job.cli import main
from job.errors import UsageError
from job.kube import indexed, render
from tests import kube_fixtures
from tests.conftest import RunJob
from tests.helpers import ROOT, TINY_TRAIN
from tests.kube_fixtures import NAMESPACE, ApiDouble

kube_api = kube_fixtures.kube_api
IMAGE = "registry.example/team/cifar10-job:1.2.3"
SWEEP = ["sweep", "--image", IMAGE, "--bucket", "test-bucket", "--namespace", NAMESPACE, "--run-id", "lr-sweep"]
GRID_3x2 = "0.1,0.05,0.01"


def test_the_grid_is_the_cartesian_product_in_flag_order() -> None:
    axes = {"learning_rate": sweep.parse_values("learning_rate", GRID_3x2), "batch_size": [200, 100]}
    grid = sweep.expand_grid(axes)
    assert grid == [
        {"learning_rate": 0.1, "batch_size": 200},
        {"learning_rate": 0.1, "batch_size": 100},
        {"learning_rate": 0.05, "batch_size": 200},
        {"learning_rate": 0.05, "batch_size": 100},
        {"learning_rate": 0.01, "batch_size": 200},
        {"learning_rate": 0.01, "batch_size": 100},
    ]
    assert sweep.encode(grid[:1]) == '[{"learning_rate":0.1,"batch_size":200}]'


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        ({}, "a sweep needs at least one value list"),
        ({"learning_rate": [0.1, -1.0]}, "--learning-rate must be a positive finite number, got -1.0"),
        ({"momentum": [0.9, 1.0]}, "--momentum must be in [0, 1), got 1.0"),
        ({"batch_size": [0]}, "--batch-size must be at least 1, got 0"),
        ({"seed": [1, 2]}, "cannot sweep seed"),
        ({"learning_rate": [0.1] * 17, "batch_size": list(range(1, 17))}, "the grid has 272 points, more than 256"),
    ],
)
def test_bad_grids_are_refused_before_any_job(axes: dict[str, list[Any]], message: str) -> None:
    with pytest.raises(UsageError) as raised:
        sweep.expand_grid(axes)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        ("batch_size", "200,1e2", "--batch-size takes comma-separated ints, got '1e2'"),
        ("learning_rate", "0.1,,0.2", "--learning-rate takes comma-separated floats, got ''"),
        ("learning_rate", "0.1,0.10", "--learning-rate lists 0.10 twice"),
    ],
)
def test_bad_value_lists(field: str, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        sweep.parse_values(field, text)


def pod_env(
    index: int, grid: str = '[{"learning_rate":0.1},{"learning_rate":0.05,"batch_size":100}]'
) -> dict[str, str]:
    return {"JOB_SWEEP": grid, "JOB_COMPLETION_INDEX": str(index), "JOB_RUN_ID": "lr-sweep"}


def test_each_pod_trains_its_own_point_into_its_own_run() -> None:
    assert sweep.sweep_point(pod_env(0)) == {"learning_rate": 0.1, "run_id": "lr-sweep-0"}
    assert sweep.sweep_point(pod_env(1)) == {"learning_rate": 0.05, "batch_size": 100, "run_id": "lr-sweep-1"}
    assert sweep.sweep_point(pod_env(1), sweep_name="other") == {
        "learning_rate": 0.05,
        "batch_size": 100,
        "run_id": "other-1",
    }
    assert sweep.sweep_point({"JOB_COMPLETION_INDEX": "1", "JOB_RUN_ID": "x"}) is None  # Not a sweep.


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (pod_env(2), "JOB_COMPLETION_INDEX='2' does not pick one of the 2 JOB_SWEEP points"),
        ({**pod_env(0), "JOB_COMPLETION_INDEX": ""}, "JOB_COMPLETION_INDEX='' does not pick"),
        (pod_env(0, "[{learning_rate"), "JOB_SWEEP is not valid JSON"),
        (pod_env(0, "[]"), "JOB_SWEEP must be a non-empty JSON list of objects"),
        (pod_env(0, '[{"learning_rate":"0.1"}]'), "JOB_SWEEP has learning_rate='0.1'"),
        (pod_env(0, '[{"batch_size":1.5}]'), "JOB_SWEEP has batch_size=1.5"),
        (pod_env(0, '[{"epochs":3}]'), "JOB_SWEEP has epochs=3"),
        ({**pod_env(0), "JOB_RUN_ID": ""}, "a sweep point needs the sweep's name"),
    ],
)
def test_a_broken_sweep_environment_is_a_usage_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError) as raised:
        sweep.sweep_point(env)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def dry_run(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main([*SWEEP, *args, "--dry-run"]) == 0
    job: dict[str, Any] = json.loads(capsys.readouterr().out)
    return job


def env_of(job: dict[str, Any]) -> dict[str, str]:
    return {entry["name"]: entry.get("value") for entry in render.train_container(job)["env"]}


def test_dry_run_prints_one_indexed_job_over_the_grid(capsys: pytest.CaptureFixture[str]) -> None:
    job = dry_run(
        ["--learning-rate", GRID_3x2, "--batch-size", "200,100", "--api", "imperative", "--epochs", "3"], capsys
    )
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 6, 4)
    assert spec["backoffLimitPerIndex"] == 3 and "backoffLimit" not in spec and "maxFailedIndexes" not in spec
    assert spec["podFailurePolicy"]["rules"][0]["action"] == "FailIndex"  # A diverged point fails only itself.
    grid = json.loads(env_of(job)["JOB_SWEEP"])
    assert len(grid) == 6 and grid[5] == {"learning_rate": 0.01, "batch_size": 100}
    expected = {"cifar10-job/sweep": "lr-sweep", "cifar10-job/run-id": "lr-sweep", "cifar10-job/api": "imperative"}
    assert expected.items() <= job["metadata"]["labels"].items()
    assert expected.items() <= spec["template"]["metadata"]["labels"].items()
    assert render.train_container(job)["args"] == ["train", "--epochs", "3"]
    # What pod 5 will train: the last point, into its own run folder.
    pod = {"JOB_SWEEP": env_of(job)["JOB_SWEEP"], "JOB_COMPLETION_INDEX": "5", "JOB_RUN_ID": job["metadata"]["name"]}
    assert sweep.sweep_point(pod) == {"learning_rate": 0.01, "batch_size": 100, "run_id": "lr-sweep-5"}


def test_parallelism_is_configurable_and_never_above_the_grid(capsys: pytest.CaptureFixture[str]) -> None:
    assert dry_run(["--learning-rate", GRID_3x2, "--parallelism", "2"], capsys)["spec"]["parallelism"] == 2
    assert dry_run(["--learning-rate", GRID_3x2, "--parallelism", "10"], capsys)["spec"]["parallelism"] == 3


def point_budget() -> int:
    """One point's deadline: the base Job's activeDeadlineSeconds, the hard stop of one training run."""
    base = yaml.safe_load((ROOT / "k8s" / "base" / "job.yaml").read_text())
    return int(base["spec"]["activeDeadlineSeconds"])


@pytest.mark.parametrize(
    ("grid", "parallelism", "waves"),
    [(GRID_3x2, None, 1), (GRID_3x2, "1", 3), (GRID_3x2, "2", 2), ("0.1,0.09,0.08,0.07,0.06,0.05", None, 2)],
)
def test_the_deadline_grows_with_the_waves_of_points(
    grid: str, parallelism: str | None, waves: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """activeDeadlineSeconds covers the whole Job: one point's budget per ceil(points / parallelism)."""
    job = dry_run(["--learning-rate", grid, *(["--parallelism", parallelism] if parallelism else [])], capsys)
    assert job["spec"]["activeDeadlineSeconds"] == point_budget() * waves
    assert "activeDeadlineSeconds" not in job["spec"]["template"]["spec"]  # No per-pod deadline (docs/scaleout.md).


def test_the_sweep_overlay_applied_as_is_has_the_deadline_of_its_own_grid() -> None:
    """`kubectl apply -k k8s/overlays/sweep` gets no resizing: its literal deadline must fit its own waves."""
    (job,) = render.find(render.render(render.overlay_dir("sweep", None)), "Job")
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] == point_budget() * indexed.waves(spec["completions"], spec["parallelism"])


def test_default_sweep_names_are_unique_and_say_sweep(capsys: pytest.CaptureFixture[str]) -> None:
    args = [argument for argument in SWEEP if argument not in ("--run-id", "lr-sweep")]
    names = set()
    for _ in range(2):
        assert main([*args, "--learning-rate", "0.1", "--dry-run"]) == 0
        names.add(json.loads(capsys.readouterr().out)["metadata"]["name"])
    assert len(names) == 2 and all(name.startswith("cifar10-sweep-symbolic-fit-") for name in names)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: a sweep needs at least one value list"),
        (["--learning-rate", "0.1,x"], "error: --learning-rate takes comma-separated floats, got 'x'"),
        (["--learning-rate", "0.1", "--parallelism", "0"], "error: --parallelism must be at least 1, got 0"),
        (
            ["--learning-rate", "0.1", "--run-id", "x" * 62, "--batch-size", ",".join(map(str, range(1, 11)))],
            "hostnames",
        ),
    ],
)
def test_bad_sweeps_are_one_line_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SWEEP, *args, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message if message.startswith("error:") else "error:") and message in err
    assert err.count("\n") == 1


def test_sweep_creates_the_job_through_the_client(kube_api: ApiDouble, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SWEEP, "--learning-rate", GRID_3x2]) == 0
    out = capsys.readouterr().out
    (request,) = kube_api.requests("post")
    assert request.url.path == f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
    assert request.data["metadata"]["labels"][indexed.LABEL_SWEEP] == "lr-sweep"
    assert request.data["spec"]["completions"] == 3 and request.data["spec"]["parallelism"] == 3
    assert request.data["spec"]["activeDeadlineSeconds"] == point_budget()  # 3 points at once: one wave.
    assert env_of(request.data)["JOB_SWEEP"] == '[{"learning_rate":0.1},{"learning_rate":0.05},{"learning_rate":0.01}]'
    runs = " ".join(f"gs://test-bucket/runs/lr-sweep-{index}" for index in range(3))
    assert f"compare: python -m job compare {runs}\n" in out
    assert out.startswith(f"created Job lr-sweep in namespace {NAMESPACE}: 3 points, 3 at once\n")


@pytest.mark.slow
def test_a_resubmitted_sweep_point_that_already_finished_exits_0_and_trains_nothing(
    run_job: RunJob, tiny_tarball: Path, tmp_path: Path
) -> None:
    """What a sweep's Indexed Job pod does: JOB_SWEEP and its JOB_COMPLETION_INDEX pick the settings and run id.
    Resubmitted, the finished point says so and exits 0 (not 4, which fails its index and the Job); the same
    point with a changed setting is still refused, and a plain `train` on the finished run still exits 4."""
    args = ["train", "--data", str(tiny_tarball), "--output", str(tmp_path), "--run-id", "grid", *TINY_TRAIN]
    args[args.index("--epochs") + 1] = "1"
    grid = '[{"learning_rate":0.02},{"learning_rate":0.01,"batch_size":100}]'
    env = {"JOB_SWEEP": grid, "JOB_COMPLETION_INDEX": "1"}
    first = run_job(*args, env=env)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "grid-1"
    config = json.loads((run / "config.json").read_text())
    assert (config["run_id"], config["learning_rate"], config["batch_size"]) == ("grid-1", 0.01, 100)
    assert not (tmp_path / "grid").exists()
    files = {path: path.read_bytes() for path in sorted(run.rglob("*")) if path.is_file()}

    again = run_job(*args, env=env)
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout.startswith(f"run {run} already finished with these settings (test accuracy 0.")
    assert again.stdout.endswith("): nothing to train\n") and again.stdout.count("\n") == 1
    assert {path: path.read_bytes() for path in sorted(run.rglob("*")) if path.is_file()} == files  # Untouched.

    changed = run_job(
        *args, env={**env, "JOB_SWEEP": '[{"learning_rate":0.02},{"learning_rate":0.05,"batch_size":100}]'}
    )
    assert changed.returncode == 4
    assert changed.stderr == (
        f"error: run {run} already finished with other settings (--learning-rate 0.01 → 0.05): "
        "give the sweep another name (--run-id) or pass --overwrite to replace it\n"
    )
    plain_args = [*args, "--learning-rate", "0.01", "--batch-size", "100"]  # The last value wins: the point's own.
    plain_args[plain_args.index("grid")] = "grid-1"
    plain = run_job(*plain_args)
    assert plain.returncode == 4 and "already finished (it has summary.json)" in plain.stderr
    assert (run / "summary.json").read_bytes() == files[run / "summary.json"]
