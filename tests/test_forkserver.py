"""The fork server the other tests start their trainers from (tests/forkserver.py) behaves as a fresh
`python -m job` would, in what the tests read: exit codes, stdout and stderr, the environment and folder
given, a signal's exit status. And a command whose environment changes what imports read is not forked."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.forkserver import ForkedJob
from tests.helpers import ROOT, job_env, start_job


def fresh(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "job", *args], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )


@pytest.mark.parametrize(
    ("args", "extra_env"),
    [
        (["--version"], {}),
        (["train", "--epochs", "0"], {}),  # A bad flag: exit 2 and one line on stderr.
        (["train"], {"JOB_EPOCHS": "-3"}),  # The environment given is the one read.
        (["train", "--data", "no-such-file.tar.gz", "--output", "{tmp}"], {}),  # The folder given: a relative path.
        (["runs", "list", "--output", "{tmp}"], {}),  # No runs: a command that succeeds.
    ],
    ids=["version", "bad-flag", "bad-env", "missing-data", "runs-list"],
)
def test_a_forked_command_exits_and_prints_as_a_fresh_interpreter_does(
    args: list[str], extra_env: dict[str, str], tmp_path: Path
) -> None:
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    env = job_env(extra_env)
    forked = start_job(args, env)
    assert isinstance(forked, ForkedJob)
    stdout, stderr = forked.communicate(timeout=120)
    expected = fresh(args, env)
    assert (forked.returncode, stdout, stderr) == (expected.returncode, expected.stdout, expected.stderr)


@pytest.mark.slow
def test_a_forked_trainer_killed_by_a_signal_reports_it_as_subprocess_does(tiny_tarball: Path, tmp_path: Path) -> None:
    args = ["train", "--validation-size", "100", "--epochs", "50", "--data", str(tiny_tarball)]
    trainer = start_job([*args, "--output", str(tmp_path)])
    assert isinstance(trainer, ForkedJob)
    assert trainer.stdout.readline().startswith("devices ")  # Running, past its imports.
    assert trainer.poll() is None
    trainer.send_signal(signal.SIGKILL)
    assert trainer.wait(timeout=60) == -signal.SIGKILL


def test_an_environment_read_by_imports_gets_a_fresh_interpreter() -> None:
    process = start_job(["--version"], job_env({"PYTHONPATH": f"{ROOT}:{ROOT}"}))
    assert isinstance(process, subprocess.Popen)
    assert process.communicate(timeout=60)[0].startswith("cifar10-job ")
