"""Static checks of the image: hadolint on the Dockerfile, the Makefile's docker-run command line, and the
base-image check (checkov on the Dockerfile and every rendering: tests/test_manifests_scaleout.py).

These run in `make test` without Docker. `make image-test` (image/tests/) builds the image on a CPU
stand-in base and runs it for real; here we show the Dockerfile is lint-clean and says what we mean.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from image import check_base

ROOT = Path(__file__).resolve().parents[1]


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout) == (0, "")


def test_hadolint_would_catch_a_root_unpinned_image(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install tensorflow\n")
    result = subprocess.run(
        [str(Path(sys.executable).with_name("hadolint")), str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3013" in result.stdout


def test_dockerfile_follows_the_contract() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert "ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu" in lines
    assert 'ENTRYPOINT ["python", "-m", "job"]' in lines and 'CMD ["train", "--help"]' in lines
    assert "USER 10001:10001" in lines
    # Dependencies from the same lock file `make install` uses, installed before the code is copied.
    assert text.index("requirements/runtime.lock") < text.index("COPY job ./job")
    assert "tensorflow==2.21.0" in (ROOT / "requirements" / "runtime.lock").read_text()
    instructions = "\n".join(lines).lower()
    assert not any(word in instructions for word in ("secret", "password", "token", "credentials", "key"))


def test_dockerignore_keeps_only_code_and_lock() -> None:
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*"
    assert {rule for rule in rules if rule.startswith("!")} == {
        "!requirements/runtime.lock",
        "!image/check_base.py",
        "!job/",
    }


def test_docker_run_mounts_output_and_data_and_credentials_read_only(tmp_path: Path) -> None:
    adc = tmp_path / "adc.json"
    adc.write_text("{}")
    command = ["make", "--dry-run", "--no-print-directory", "docker-run", "API=imperative", "LOOP=custom"]
    command += [f"OUTPUT={tmp_path / 'out'}", "DATA=data/cifar-10-python.tar.gz", f"ADC={adc}", "IMAGE=x/cifar10-job:1"]
    command += ["DOCKER=docker"]  # Else make asks image/docker-client for a client and an engine.
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    run = result.stdout.splitlines()[-1].split()
    assert run[:4] == ["docker", "run", "--rm", "--gpus"] and "--read-only" in run
    assert (
        f"{tmp_path / 'out'}:/output" in run
        and f"{ROOT}/data/cifar-10-python.tar.gz:/data/cifar-10-python.tar.gz:ro" in run
    )
    assert f"{adc}:/secrets/adc.json:ro" in run and "GOOGLE_APPLICATION_CREDENTIALS=/secrets/adc.json" in run
    tail = run[run.index("x/cifar10-job:1") + 1 :]
    train = ["train", "--api", "imperative", "--loop", "custom", "--epochs", "5", "--require-gpu"]
    assert tail == [*train, "--output", "/output", "--data", "/data/cifar-10-python.tar.gz"]


def test_make_docker_run_gpu_0_trains_on_the_cpu_as_the_caller() -> None:
    command = [
        "make",
        "--dry-run",
        "--no-print-directory",
        "docker-run",
        "GPU=0",
        "OUTPUT=gs://b/runs",
        "DOCKER=docker",
    ]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
    assert "--gpus" not in run and "--require-gpu" not in run
    assert "--user $(id -u):$(id -g)" in run and "--output gs://b/runs" in run and ":/output" not in run


def test_make_names_the_missing_graphviz_when_it_cannot_install_it(tmp_path: Path) -> None:
    """Not root (or no apt-get): one line naming the package and the command, and a non-zero exit."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("bash", "env", "make"):  # Everything make needs here, but no `dot`.
        (tools / tool).symlink_to(shutil.which(tool) or tool)
    fake_id = tools / "id"
    fake_id.write_text("#!/bin/sh\necho 1000\n")  # A non-root user.
    fake_id.chmod(0o755)
    result = subprocess.run(
        ["make", "--no-print-directory", "system-packages"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": str(tools)},
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == (
        "error: Graphviz's dot is missing (architecture diagrams, tests): "
        "sudo apt-get install graphviz (or brew install graphviz)"
    )


def test_the_base_image_check_refuses_another_tensorflow_python_or_the_locks_wheel() -> None:
    """image/check_base.py, which fails the image build, judged against this environment's TensorFlow 2.21.0."""
    lock = (ROOT / "requirements" / "runtime.lock").read_text()
    elsewhere = "/opt/venv"  # This environment's tensorflow is not under it: as the base image's is not.
    assert check_base.problems(lock, (3, 11), elsewhere) == []
    assert check_base.problems(lock.replace("tensorflow==2.21.0", "tensorflow==2.20.0"), (3, 11), elsewhere) == [
        "its tensorflow is 2.21.0, the lock pins 2.20.0"
    ]
    assert check_base.problems(lock, (3, 12), elsewhere) == ["its Python is 3.12, the lock is compiled for 3.11"]
    [found] = check_base.problems(lock, (3, 11), sys.prefix)  # The venv the lock installed into.
    assert found.startswith("tensorflow would be imported from ") and "not the base image's" in found
    assert check_base.problems("numpy==2.0\n", (3, 11), elsewhere) == ["the lock pins no tensorflow version"]
