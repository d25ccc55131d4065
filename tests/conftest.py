"""Shared fixtures: small generated CIFAR-10-format data, a CLI runner, and real servers (fake-gcs-server, kmock).

Tests drive `python -m job` in a process of its own, as a user or a pod would: real exit codes, signals,
stdout and stderr, a fresh TensorFlow runtime each time. The process is forked from one that has imported
TensorFlow already (tests/forkserver.py: half of each trainer's CPU was imports), unless its environment
changes what imports read; JOB_TESTS_FORK=0 starts a fresh interpreter every time.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from job.data import Cifar10
from tests.helpers import ROOT, TINY_TRAIN, JobProcess, job_env, make_cifar_like, start_job, write_tarball

pytest_plugins = ["tests.gcs_fixtures"]

__all__ = ["ROOT", "RunJob"]
RunJob = Callable[..., subprocess.CompletedProcess[str]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first. `make test` spreads tests over the cores (pytest-xdist --dist load, two at a time per
    worker, in this order): long ones first and short ones filling the gaps, so no worker starts a long test
    while the other has nothing left. The first two go to one worker, the next two to the other: two reliability
    tests (which build the reliability references) and two others (the first of which builds the trained runs),
    so the two workers start with different builds and neither waits for the other's."""
    slow = [item for item in items if item.get_closest_marker("slow")]
    fast = [item for item in items if not item.get_closest_marker("slow")]
    reliability = [item for item in slow if item.path.name == "test_reliability.py"]
    others = [item for item in slow if item.path.name != "test_reliability.py"]
    items[:] = reliability[:2] + others[:2] + reliability[2:] + others[2:] + fast


def built_once_per_session(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder that `build` fills once per test session, whichever xdist worker asks first; the others wait.

    Session fixtures are per worker under xdist; this shares one across them (a file lock in the session's
    temporary folder, which all workers have in common). A build that failed is tried again by the next caller.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-N/popen-gwK → pytest-N, shared by the session's workers.
    folder = root / name
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes.
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session")
def tiny_data() -> Cifar10:
    return make_cifar_like(train_size=500, test_size=300)


@pytest.fixture(scope="session")
def tiny_tarball(tmp_path_factory: pytest.TempPathFactory, tiny_data: Cifar10) -> Path:
    """500 training and 300 test images in the official cifar-10-python.tar.gz layout, at one path for all
    xdist workers (a run trained on one worker resumes on another with the same --data)."""
    folder = built_once_per_session(
        tmp_path_factory, "tiny-data", lambda folder: write_tarball(tiny_data, folder / "cifar-10-python.tar.gz")
    )
    return folder / "cifar-10-python.tar.gz"


# The four api × loop variants, trained once per session and only read by the tests that use them.
VARIANTS = [("symbolic", "fit"), ("symbolic", "custom"), ("imperative", "fit"), ("imperative", "custom")]


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory: pytest.TempPathFactory, run_job: RunJob, tiny_tarball: Path) -> dict[str, Path]:
    """Each variant trained once (2 epochs, 500 images, seed 7, float32 so every CPU computes the same thing),
    in one folder; {"symbolic-fit": run folder, ...}. Read-only: a test that changes a run copies it first.
    The imperative runs log with --log-format json; each run's stdout is kept beside it as RUN_ID.stdout.
    Built once per session for all xdist workers (test_train, test_compare, test_distribute, test_faults)."""

    def train_every_variant(output: Path) -> None:
        for api, loop in VARIANTS:
            run_id = f"{api}-{loop}"
            result = run_job(
                "train", "--api", api, "--loop", loop, "--data", str(tiny_tarball), "--output", str(output),
                "--run-id", run_id, "--seed", "7", "--precision", "float32",
                "--log-format", "json" if api == "imperative" else "text", *TINY_TRAIN,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert "warning" not in result.stdout, result.stdout  # Every picture was drawn.
            (output / f"{run_id}.stdout").write_text(result.stdout)

    output = built_once_per_session(tmp_path_factory, "trained-runs", train_every_variant)
    return {f"{api}-{loop}": output / f"{api}-{loop}" for api, loop in VARIANTS}


@pytest.fixture
def processes() -> Iterator[Callable[..., JobProcess]]:
    """Start trainers in the background; any still running when the test ends (it failed) is killed."""
    started: list[JobProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> JobProcess:
        process = start_job(args, job_env(env))
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture(scope="session")
def without_tensorflow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment in which importing TensorFlow or Keras ends the process with exit 99 and says so.

    For the promise "rejected before TensorFlow loads": with it, a check that imported TensorFlow first
    could not still pass on its error line (TensorFlow's own start-up output is hidden by TF_CPP_MIN_LOG_LEVEL).
    """
    poison = tmp_path_factory.mktemp("poisoned-imports")
    for package in ("tensorflow", "keras"):
        (poison / package).mkdir()
        (poison / package / "__init__.py").write_text(
            f"raise SystemExit('{package} was imported, though this input must be rejected before it loads')\n"
        )
    return {"PYTHONPATH": os.pathsep.join([str(poison), str(ROOT)])}


@pytest.fixture(scope="session")
def run_job() -> RunJob:
    """Run `python -m job ARGS...` to its end (see `start_job`); returns the completed process (never raises on
    exit codes)."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        process = start_job(list(args), job_env(env))
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        return subprocess.CompletedProcess(process.args, process.wait(), stdout, stderr)

    return run
