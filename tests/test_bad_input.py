"""The bad-input matrix: every row exits with its documented code and ONE line naming the problem and the fix.

Every row is checked the same way: exit code, a single `error: ...` line on stderr (nothing else: these are
all caught before TensorFlow loads), no traceback, and no complete-looking run left behind.
"""

from __future__ import annotations

import io
import json
import pickle
import socket
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from job import data
from job.data import Cifar10
from tests.conftest import RunJob


@dataclass(frozen=True)
class Row:
    args: tuple[str, ...]
    exit_code: int
    message: str  # A fragment of the one line the user must see.
    env: dict[str, str] = field(default_factory=dict)
    needs_gcs: bool = False


ROWS = {
    "unknown-api": Row(("--api", "functional"), 2, "'functional' is not one of 'symbolic', 'imperative'"),
    "unknown-loop": Row(("--loop", "scan"), 2, "'scan' is not one of 'fit', 'custom'"),
    "unknown-flag": Row(("--epoch", "3"), 2, "No such option: --epoch"),
    "epochs-zero": Row(("--epochs", "0"), 2, "--epochs must be at least 1, got 0"),
    "epochs-negative": Row(("--epochs", "-2"), 2, "--epochs must be at least 1, got -2"),
    "epochs-not-a-number": Row(("--epochs", "five"), 2, "Invalid value for '--epochs'"),
    "batch-size-zero": Row(("--batch-size", "0"), 2, "--batch-size must be at least 1, got 0"),
    "batch-size-larger-than-data": Row(("--batch-size", "501"), 2, "--batch-size 501 is larger than the 500 training"),
    "learning-rate-negative": Row(("--learning-rate", "-0.1"), 2, "--learning-rate must be a positive finite number"),
    "learning-rate-nan": Row(
        ("--learning-rate", "nan"), 2, "--learning-rate must be a positive finite number, got nan"
    ),
    "learning-rate-inf": Row(
        ("--learning-rate", "inf"), 2, "--learning-rate must be a positive finite number, got inf"
    ),
    "momentum-one": Row(("--momentum", "1"), 2, "--momentum must be in [0, 1)"),
    "validation-eats-test": Row(("--validation-size", "300"), 2, "--validation-size 300 leaves no test images"),
    "malformed-gs-url": Row(("--output", "gs:/bucket/runs"), 2, "malformed Cloud Storage URL 'gs:/bucket/runs'"),
    "unsupported-scheme": Row(("--output", "s3://bucket/runs"), 2, "unsupported output 's3://bucket/runs'"),
    "bucket-missing": Row(
        ("--output", "gs://no-such-bucket-xyz/runs"), 4, "bucket no-such-bucket-xyz does not exist", needs_gcs=True
    ),
    "gcs-data-missing": Row(
        ("--data", "gs://no-such-bucket-xyz/cifar.tar.gz"), 3, "gs://no-such-bucket-xyz", needs_gcs=True
    ),
    "output-not-writable": Row(("--output", "{tmp}/a-file/runs"), 4, "is not writable"),
    "data-path-missing": Row(("--data", "{tmp}/nowhere.tar.gz"), 3, "nowhere.tar.gz does not exist"),
    "truncated-tarball": Row(("--data", "{bad}/truncated.tar.gz"), 3, "truncated.tar.gz is not a readable tar.gz"),
    "not-a-tarball": Row(("--data", "{bad}/random.tar.gz"), 3, "random.tar.gz is not a readable tar.gz"),
    "pickle-wrong-keys": Row(("--data", "{bad}/wrong-keys.tar.gz"), 3, "lacks the b'data' and b'labels' keys"),
    "folder-without-batches": Row(("--data", "{bad}/empty-folder"), 3, "has no data_batch_1"),
    "npz-wrong-shapes": Row(("--data", "{bad}/gray.npz"), 3, "expected N×S×S×3 square RGB images"),
    "npz-labels-out-of-range": Row(("--data", "{bad}/labels.npz"), 3, "y_train has labels outside 0-9"),
    "npz-missing-arrays": Row(("--data", "{bad}/partial.npz"), 3, "lacks y_train, x_test, y_test"),
    "run-id-with-slash": Row(("--run-id", "team/run"), 2, "--run-id 'team/run' is not a valid run id"),
    "run-id-with-dotdot": Row(("--run-id", "..hidden"), 2, "is not a valid run id"),
    "run-id-with-inner-dotdot": Row(("--run-id", "x..y"), 2, "--run-id 'x..y' is not a valid run id"),
    "momentum-above-one": Row(("--momentum", "1.5"), 2, "--momentum must be in [0, 1)"),
    "finished-run-exists": Row(("--run-id", "finished"), 4, "already finished (it has summary.json)"),
    "resume-with-other-settings": Row(
        ("--run-id", "unfinished", "--api", "symbolic"), 2, "--api imperative → symbolic"
    ),
    "require-gpu-on-cpu": Row(  # Environment not ready (6): a Job retries it on a new pod instead of failing.
        ("--require-gpu",), 6, "no NVIDIA GPU device (no /dev/nvidia0): the node's NVIDIA driver or device plugin"
    ),
    "output-and-aip-model-dir": Row(
        ("--output", "{tmp}/runs"), 2, "both --output/JOB_OUTPUT", env={"AIP_MODEL_DIR": "gs://vertex-bucket/model"}
    ),
    "bad-env-value": Row((), 2, "--batch-size must be at least 1, got -5", env={"JOB_BATCH_SIZE": "-5"}),
    "retry-deadline-not-seconds": Row(
        ("--output", "gs://{bucket}/runs"),
        2,
        "JOB_GCS_RETRY_DEADLINE='-1' is not a number of seconds above 0: unset",
        env={"JOB_GCS_RETRY_DEADLINE": "-1"},
        needs_gcs=True,
    ),
    "lease-seconds-out-of-range": Row(  # Read when the lease is taken: after the data and splits were checked.
        ("--output", "gs://{bucket}/runs", "--validation-size", "100"),
        2,
        "JOB_LEASE_SECONDS='1h' is not a number of seconds above 0 up to 3600",
        env={"JOB_LEASE_SECONDS": "1h"},
        needs_gcs=True,
    ),
}


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory: pytest.TempPathFactory, tiny_tarball: Path, tiny_data: Cifar10) -> Path:
    """One of each kind of broken data source."""
    folder = tmp_path_factory.mktemp("bad-data")
    (folder / "truncated.tar.gz").write_bytes(tiny_tarball.read_bytes()[:20_000])
    (folder / "random.tar.gz").write_bytes(np.random.default_rng(0).bytes(4096))
    with tarfile.open(folder / "wrong-keys.tar.gz", "w:gz") as archive:
        payload = pickle.dumps({b"images": np.zeros((2, 3072), np.uint8), b"targets": [0, 1]}, protocol=2)
        for name in [*data.TRAIN_BATCHES, data.TEST_BATCH]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    (folder / "empty-folder").mkdir()
    gray = np.zeros((10, 28, 28), np.uint8)
    np.savez(folder / "gray.npz", x_train=gray, y_train=np.zeros(10), x_test=gray, y_test=np.zeros(10))
    np.savez(
        folder / "labels.npz",
        x_train=tiny_data.x_train,
        y_train=tiny_data.y_train + 10,
        x_test=tiny_data.x_test,
        y_test=tiny_data.y_test,
    )
    np.savez(folder / "partial.npz", x_train=tiny_data.x_train)
    return folder


def existing_runs(output: Path) -> None:
    """A finished run and an unfinished one (started with --api imperative) in the output folder."""
    (output / "finished").mkdir(parents=True)
    (output / "finished" / "summary.json").write_text('{"test_accuracy": 0.6}')
    (output / "unfinished").mkdir()
    config = {"api": "imperative", "loop": "fit", "batch_size": 200, "learning_rate": 0.1, "momentum": 0.9}
    (output / "unfinished" / "config.json").write_text(json.dumps({**config, "seed": 42, "validation_size": 500}))


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input(
    name: str,
    request: pytest.FixtureRequest,
    run_job: RunJob,
    tmp_path: Path,
    bad_data: Path,
    tiny_tarball: Path,
    without_tensorflow: dict[str, str],
) -> None:
    row = ROWS[name]
    bucket = request.getfixturevalue("gcs_bucket") if row.needs_gcs else ""  # Sets STORAGE_EMULATOR_HOST too.
    output = tmp_path / "runs"
    existing_runs(output)
    (tmp_path / "a-file").write_text("not a folder")
    before = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*"))
    args = [arg.format(tmp=tmp_path, bad=bad_data, bucket=bucket) for arg in row.args]
    defaults = {"--data": str(tiny_tarball), "--output": str(output), "--run-id": "fresh"}
    for flag, value in defaults.items():
        if flag not in args:
            args += [flag, value]

    env = {"JOB_CACHE_DIR": str(tmp_path / "cache"), **without_tensorflow, **row.env}
    result = run_job("train", "--epochs", "1", *args, env=env)

    assert result.returncode == row.exit_code, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith("error: "), result.stderr
    assert row.message in result.stderr
    assert "Traceback" not in result.stderr
    after = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*") if "cache" not in path.parts)
    assert after == before, "a rejected run must not create or change files"


def closed_port() -> int:
    """A local TCP port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("pod", "exit_code", "message"),
    [
        ("10.0.0.1", 6, "error: no Google credentials after 3 s (no answer from the metadata server): the pod's"),
        ("", 4, "error: no Google credentials (Your default credentials were not found"),
    ],
    ids=["in-a-pod-retryable", "on-a-laptop-permanent"],
)
def test_a_silent_metadata_server(
    pod: str, exit_code: int, message: str, run_job: RunJob, tmp_path: Path, without_tensorflow: dict[str, str]
) -> None:
    """No key file, no gcloud login, and a metadata server that refuses connections: in a pod (the kubelet's
    KUBERNETES_SERVICE_HOST) that is GKE's Workload Identity server not ready yet, retried for
    JOB_CREDENTIALS_WAIT and then exit 6; elsewhere missing credentials are a setting to fix, exit 4 at once."""
    home = tmp_path / "home"
    home.mkdir()
    metadata = f"127.0.0.1:{closed_port()}"
    env = {
        **without_tensorflow,
        **{"STORAGE_EMULATOR_HOST": "", "GOOGLE_APPLICATION_CREDENTIALS": "", "HOME": str(home)},
        **{"CLOUDSDK_CONFIG": str(home / "gcloud"), "GCE_METADATA_HOST": metadata, "GCE_METADATA_IP": metadata},
        **{"KUBERNETES_SERVICE_HOST": pod, "JOB_CREDENTIALS_WAIT": "3", "JOB_CACHE_DIR": str(tmp_path / "cache")},
    }
    started = time.monotonic()
    result = run_job("train", "--output", "gs://some-bucket/runs", "--run-id", "fresh", env=env, timeout=60)
    elapsed = time.monotonic() - started

    assert result.returncode == exit_code, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    if pod:
        assert "the Job retries on a new pod" in result.stderr
        assert 3 <= elapsed < 30, elapsed  # Retried for the wait, not for the GCS retry deadline (120 s).
    else:
        assert "gcloud auth application-default login" in result.stderr
