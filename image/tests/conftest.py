"""Fixtures for `make image-test`: a Docker engine, the CPU stand-in base, our image built on it, and the facts
measured on the way (printed at the end of the run)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_cifar_like, write_tarball

pytest_plugins = ["tests.gcs_fixtures"]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "cifar10-job:image-test"
FACTS: dict[str, Any] = {}


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False, **kwargs)


def checked(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = run(command, **kwargs)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="session")
def docker() -> str:
    """A docker client that builds with BuildKit, with an engine answering (image/docker-client starts one)."""
    return checked([str(ROOT / "image" / "docker-client")]).stdout.strip()


@pytest.fixture(scope="session")
def standin_base(docker: str) -> str:
    started = time.monotonic()
    tag = (
        checked([str(ROOT / "image" / "build-standin")], env={**os.environ, "DOCKER": docker})
        .stdout.strip()
        .splitlines()[-1]
    )
    FACTS["stand-in base"] = f"{tag} ({time.monotonic() - started:.0f} s to build or find)"
    return tag


def make_build(
    docker: str, base: str, context: Path = ROOT, no_cache: bool = False, tag: str = IMAGE
) -> tuple[float, str]:
    """`make docker-build` on `base` (from `context`, a checkout), timed; returns (seconds, BuildKit's log)."""
    started = time.monotonic()
    build_args = "--network host --progress plain" + (" --no-cache" if no_cache else "")
    command = ["make", "--no-print-directory", "-C", str(context), "docker-build", f"IMAGE={tag}"]
    command += [f"BASE_IMAGE={base}", f"DOCKER={docker}", f"DOCKER_BUILD_ARGS={build_args}"]
    result = checked(command)
    return time.monotonic() - started, result.stdout + result.stderr


@pytest.fixture(scope="session")
def image(docker: str, standin_base: str) -> str:
    """Our Dockerfile built on the stand-in: first without cache (cold), the way a fresh CI machine builds it."""
    seconds, _ = make_build(docker, standin_base, no_cache=True)
    FACTS["cold build (no layer cache; pip's download cache may be warm)"] = f"{seconds:.1f} s"
    sizes = {
        name: int(checked([docker, "image", "inspect", "--format", "{{.Size}}", name]).stdout)
        for name in (IMAGE, standin_base)
    }
    FACTS["image size"] = (
        f"{sizes[IMAGE] / 1e9:.2f} GB, of which {(sizes[IMAGE] - sizes[standin_base]) / 1e6:.0f} MB on top of the base"
    )
    return IMAGE


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated CIFAR-10-format data: 10,000 training images, so an epoch takes a few seconds (stops land mid-epoch)."""
    folder = tmp_path_factory.mktemp("data")
    folder.chmod(0o755)
    write_tarball(make_cifar_like(train_size=10_000, test_size=1_000), folder / "cifar-10-python.tar.gz")
    return folder


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FACTS:
        terminalreporter.section("image facts (measured in this run)")
        for key, value in FACTS.items():
            terminalreporter.write_line(f"{key}: {value}")
        results = ROOT / "image" / "results"
        results.mkdir(exist_ok=True)
        (results / "latest.json").write_text(json.dumps(FACTS, indent=2) + "\n")


@pytest.fixture
def facts() -> dict[str, Any]:
    """The facts printed at the end of the run; tests add what they measured."""
    return FACTS
