"""The image, built and run for real with Docker, on the CPU (`make image-test`; not part of `make test`).

The base is the CPU stand-in for tensorflow/tensorflow:2.21.0-gpu (image/standin/Dockerfile says what it
leaves out); our Dockerfile is built on it unchanged but for BASE_IMAGE. The runs use the command line
`make docker-run GPU=0` produces: read-only root, a tmpfs /scratch, a uid:gid of the caller's choosing, the
output folder mounted from the host and the data mounted read-only.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from image.tests.conftest import IMAGE, ROOT, checked, make_build, run
from job.gcs import GcsStore
from tests.gcs_fixtures import FakeGcsServer

# A non-root caller, as on a workstation: as root (CI) a made-up one, since root would hide ownership bugs.
CALLER = "4321:4321" if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"
SEED = int(os.environ.get("IMAGE_TEST_SEED", random.SystemRandom().randrange(10_000)))
TINY = "--batch-size 50 --validation-size 100"


def docker_run_command(docker: str, output: str, data: Path, run_id: str, **make: str) -> str:
    """The `docker run` line `make docker-run GPU=0 ...` executes (its last line), for a shell to run."""
    variables = {
        "EPOCHS": "2",
        "ARGS": f"{TINY} --run-id {run_id}",
        "DOCKER_USER": CALLER,
        "DOCKER_ARGS": "--network none",
    }
    variables |= make
    command = ["make", "--dry-run", "--no-print-directory", "docker-run", "GPU=0", f"IMAGE={IMAGE}", f"DOCKER={docker}"]
    command += [f"OUTPUT={output}", f"DATA={data / 'cifar-10-python.tar.gz'}", "ADC=/nonexistent"]
    command += [f"{key}={value}" for key, value in variables.items()]
    line = checked(command).stdout.strip().splitlines()[-1]
    assert line.startswith(f"{docker} run --rm ") and "--gpus" not in line, line
    assert "--read-only --tmpfs /scratch" in line and ":/data/cifar-10-python.tar.gz:ro" in line, line
    return line


def output_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    if os.geteuid() == 0:
        uid, gid = (int(part) for part in CALLER.split(":"))
        os.chown(folder, uid, gid)
    return folder


class Running:
    """A `docker run` in the background whose output lines are timestamped as they arrive."""

    def __init__(self, shell_line: str) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            ["bash", "-c", f"exec {shell_line}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
        )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic() - self.started, line.rstrip()))

    def wait(self, timeout: float = 600) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def first(self, prefix: str) -> float | None:
        return next((at for at, line in self.lines if line.startswith(prefix)), None)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def is_ours(line: str) -> bool:
    """A line the job printed (not TensorFlow's C++ start-up logging)."""
    return not line.startswith(("I0000", "W0000", "E0000", "WARNING: All log messages", "received"))


def epochs_recorded(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [record["epoch"] for record in records if record["kind"] == "epoch"]


def git(*args: str) -> str:
    return checked(["git", *args]).stdout.strip()


def test_a_cpu_run_like_make_docker_run_writes_a_complete_run_owned_by_the_caller(
    docker: str, image: str, data_dir: Path, tmp_path: Path, facts: dict[str, Any]
) -> None:
    out = output_folder(tmp_path)
    running = Running(docker_run_command(docker, str(out), data_dir, "cpu"))
    assert running.wait() == 0, running.text()
    run_dir = out / "cpu"
    for name in ("config.json", "metrics.jsonl", "summary.json", "model.keras", "model/1/saved_model.pb",
                 "checkpoints/checkpoint", "plots/model.png", "plots/learning_curves.png"):  # fmt: skip
        assert (run_dir / name).is_file(), (name, running.text())
    assert epochs_recorded(run_dir) == [1, 2]
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    owners = {f"{path.stat().st_uid}:{path.stat().st_gid}" for path in [run_dir, *run_dir.rglob("*")]}
    assert owners == {CALLER}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["git_commit"] == git("rev-parse", "HEAD")
    assert config["version"] == git("describe", "--tags", "--always", "--dirty")
    assert config["versions"]["tensorflow"] == "2.21.0"
    training, first_step = running.first("training run="), running.first("epoch 1/2 step 100/")
    assert training is not None and first_step is not None, running.text()
    first_run = "first run after the cold build"
    facts[f"docker run → 'training' line (TensorFlow loaded, data read, model built), {first_run}"] = (
        f"{training:.1f} s"
    )
    facts[f"docker run → first 100 training steps logged (batch 50), {first_run}"] = f"{first_step:.1f} s"


def test_a_cpu_run_writes_to_cloud_storage_on_the_host(
    docker: str, image: str, data_dir: Path, gcs_server: FakeGcsServer, gcs_bucket: str
) -> None:
    network = f"--network host -e STORAGE_EMULATOR_HOST={gcs_server.url}"
    line = docker_run_command(docker, f"gs://{gcs_bucket}/runs", data_dir, "gcs", DOCKER_ARGS=network)
    assert ":/output" not in line  # No output folder is mounted for gs://.
    running = Running(line)
    assert running.wait() == 0, running.text()
    store = GcsStore(gcs_bucket, "runs/gcs")
    keys = store.list_keys()
    assert {"config.json", "metrics.jsonl", "summary.json", "model.keras", "model/1/saved_model.pb"} <= set(keys), keys
    summary = json.loads(store.read_bytes("summary.json") or b"{}")
    assert summary["epochs"] == 2 and summary["run_id"] == "gcs"


@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_docker_stop_at_random_points_exits_75_and_the_same_command_finishes(
    docker: str, image: str, data_dir: Path, tmp_path: Path, facts: dict[str, Any], loop: str
) -> None:
    """Three `docker stop`s at random moments of a 3-epoch run (start-up, training, epoch ends, publishing),
    each followed by the same command: every stop exits 75 and the last run finishes with epochs 1, 2, 3."""
    rng = random.Random(f"{SEED}-{loop}")
    print(f"IMAGE_TEST_SEED={SEED} replays these stop points")
    out = output_folder(tmp_path)
    run_dir = out / "stops"
    name = f"cifar10-image-test-{loop}-{os.getpid()}"
    line = docker_run_command(
        docker, str(out), data_dir, "stops", EPOCHS="3", ARGS=f"{TINY} --loop {loop} --run-id stops",
        DOCKER_ARGS=f"--network none --name {name}",
    )  # fmt: skip
    latencies: list[str] = []
    finished = False
    for _ in range(3):
        running = Running(line)
        time.sleep(rng.uniform(0.5, 12.0))
        stopped_at = time.monotonic()
        run([docker, "stop", "--time", "30", name])
        code = running.wait()
        latency = time.monotonic() - stopped_at
        if code == 0 and running.first("finished run=") is not None:  # The run finished before the stop came.
            finished = True
            break
        last = running.text().splitlines()[-1] if running.lines else ""
        assert code == 75, running.text()
        assert last.startswith("error: ") and "rerun the same command" in last, last
        assert not (run_dir / "summary.json").exists()
        phase = next((line for _, line in reversed(running.lines) if is_ours(line) and "error" not in line), "start-up")
        latencies.append(f"{latency:.1f} s ({phase[:40]})")
    if not finished:
        # Stops that all landed in start-up leave no run folder: then the same command starts the run afresh.
        saved = (run_dir / "config.json").exists()
        running = Running(line)
        assert running.wait() == 0, running.text()
        started = running.first("resuming run=" if saved else "training run=")
        assert started is not None, running.text()
        if saved:
            facts[f"docker run → 'resuming' line, {loop} loop, warm page cache"] = f"{started:.1f} s"
    assert epochs_recorded(run_dir) == [1, 2, 3]
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 3
    facts[f"docker stop → exit 75, {loop} loop"] = "; ".join(latencies)


def test_a_bad_flag_exits_2_with_one_line(docker: str, image: str) -> None:
    for args, named in ((["train", "--epochs", "0"], "--epochs"), (["train", "--bogus"], "--bogus")):
        result = run([docker, "run", "--rm", "--network", "none", image, *args])
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], result.stderr


def test_require_gpu_on_a_cpu_exits_6_before_tensorflow_loads(
    docker: str, image: str, data_dir: Path, tmp_path: Path
) -> None:
    """No GPU where one is required: "environment not ready" (exit 6), which a Job retries on a new pod."""
    line = docker_run_command(docker, str(output_folder(tmp_path)), data_dir, "gpu", ARGS="--require-gpu")
    running = Running(line)
    assert running.wait() == 6
    lines = running.text().splitlines()
    assert len(lines) == 1 and "--require-gpu is set" in lines[0] and "--gpus all" in lines[0], lines


# In the container, after what `train` imports: the modules whose bytecode is missing or stale (the root is
# read-only and PYTHONDONTWRITEBYTECODE is set, so each of them would be compiled again at every start).
UNCOMPILED = """
import importlib.util, os, sys
from job import cli
cli.import_trainer()
import matplotlib.pyplot
sources = [m.__file__ for m in list(sys.modules.values()) if (getattr(m, "__file__", None) or "").endswith(".py")]
def compiled(source):
    cached = importlib.util.cache_from_source(source)
    return os.path.exists(cached) and os.path.getmtime(cached) >= os.path.getmtime(source)
print(len(sources), *[source for source in sources if not compiled(source)][:20])
"""


def test_every_module_a_run_imports_is_compiled_in_the_image(docker: str, image: str) -> None:
    """TensorFlow, Keras, matplotlib and job/ start from .pyc files: compiling them costs seconds per start."""
    read_only = ["--read-only", "--tmpfs", "/scratch"]  # As make docker-run runs it.
    result = checked(
        [docker, "run", "--rm", "--network", "none", *read_only, "--entrypoint", "python", image, "-c", UNCOMPILED]
    )
    imported, *uncompiled = result.stdout.split()
    assert int(imported) > 1000 and not uncompiled, result.stdout


def test_version_and_labels_name_the_commit(docker: str, image: str) -> None:
    commit, version = git("rev-parse", "HEAD"), git("describe", "--tags", "--always", "--dirty")
    result = checked([docker, "run", "--rm", "--network", "none", image, "--version"])
    assert result.stdout.strip() == f"cifar10-job {version} (commit {commit})"
    labels = json.loads(checked([docker, "image", "inspect", "--format", "{{json .Config.Labels}}", image]).stdout)
    assert labels["org.opencontainers.image.revision"] == commit
    assert labels["org.opencontainers.image.version"] == version


def test_an_edit_in_job_rebuilds_only_the_code_layers(
    docker: str, standin_base: str, image: str, tmp_path: Path, facts: dict[str, Any]
) -> None:
    context = tmp_path / "checkout"
    for name in ("Dockerfile", ".dockerignore", "Makefile", "requirements/runtime.lock", "image/check_base.py",
                 "image/docker-client"):  # fmt: skip
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, context / name)
    shutil.copytree(ROOT / "job", context / "job", ignore=shutil.ignore_patterns("__pycache__"))
    with (context / "job" / "__init__.py").open("a") as init:
        # Unique per run: BuildKit's cache outlives the test, so a fixed edit is a cache hit from the second run on.
        init.write(f"# an edit {uuid.uuid4().hex}\n")
    seconds, log = make_build(docker, standin_base, context=context, tag="cifar10-job:image-test-edited")
    steps = {line.split()[0]: line for line in log.splitlines() if line.startswith("#") and "] RUN " in line}
    install = next(step for step, line in steps.items() if "pip install --requirement" in line)
    copy_step = next(line.split()[0] for line in log.splitlines() if "] COPY job ./job" in line)
    assert f"{install} CACHED" in log, log[-4000:]
    assert f"{copy_step} CACHED" not in log
    facts["warm build after an edit in job/ (dependencies cached)"] = f"{seconds:.1f} s"
    run([docker, "rmi", "cifar10-job:image-test-edited"])


def test_a_base_without_the_pinned_tensorflow_fails_the_build(docker: str, standin_base: str) -> None:
    """The stand-in's own root file system (Debian's Python, no TensorFlow) as BASE_IMAGE: pip would put the lock's
    tensorflow wheel into /opt/venv, which on a GPU base means no CUDA; the guard in the Dockerfile stops the build."""
    rootfs = "cifar10-job-standin-rootfs:" + standin_base.rsplit("-", 1)[1]
    command = ["make", "--no-print-directory", "docker-build", "IMAGE=cifar10-job:image-test-wrong-base"]
    command += [f"BASE_IMAGE={rootfs}", f"DOCKER={docker}", "DOCKER_BUILD_ARGS=--network host --progress plain"]
    result = run(command)
    assert result.returncode != 0
    assert "error: the base image does not fit: tensorflow would be imported from /opt/venv/" in result.stderr
    assert run([docker, "image", "inspect", "cifar10-job:image-test-wrong-base"]).returncode != 0
