"""Faults of the storage under a run, injected on the real CLI: a full disk, torn records, damaged checkpoints,
two writers, an unusable output path, a failing tuning report.

For each: no traceback, the documented exit code, and once the fault is removed one rerun of the same command
finishes with exactly the run's epochs and the accuracy of an uninterrupted run (`reference`: float32, one
seed, so a resumed run computes the same numbers; one test image of tolerance for multi-threaded reductions).
Random choices (byte offsets) come from a seeded RNG; the seed is printed and FAULTS_SEED=N replays them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from job import lease
from job.errors import OutputError
from job.gcs import GcsStore
from tests.conftest import RunJob
from tests.helpers import TINY_TRAIN, JobProcess, epoch_records, job_env, read_jsonl, start_job

pytestmark = pytest.mark.slow

EPOCHS = 2
ONE_IMAGE = 1 / 200 + 1e-9  # test_accuracy over test[100:] of 300 images.
SEED = int(os.environ.get("FAULTS_SEED", random.SystemRandom().randrange(10**6)))
NO_TRACEBACK = "Traceback"


def train_args(tarball: Path, output: str, run_id: str = "run") -> list[str]:
    return [
        "train", "--data", str(tarball), "--output", output, "--run-id", run_id, "--seed", "7",
        "--precision", "float32", *TINY_TRAIN,
    ]  # fmt: skip


@pytest.fixture
def reference(trained_runs: dict[str, Path]) -> Path:
    """An uninterrupted run of train_args' settings (the session's shared symbolic-fit run): its numbers, and a
    folder to damage copies of."""
    run = trained_runs["symbolic-fit"]
    config = json.loads((run / "config.json").read_text())
    assert (config["api"], config["loop"], config["seed"], config["precision"]) == ("symbolic", "fit", 7, "float32")
    assert sorted(path.name for path in (run / "checkpoints").glob("*.index")) == ["ckpt-1.index", "ckpt-2.index"]
    return run


def unfinished_copy(reference: Path, target: Path) -> Path:
    """The reference as it was just before publishing: trained, checkpointed, nothing published."""
    shutil.copytree(reference, target, ignore=shutil.ignore_patterns("summary.json", "model", "model.keras"))
    return target


def only_checkpoint_1(run: Path) -> None:
    """As a run killed while saving its second checkpoint leaves it: ckpt-2 never became the newest."""
    for path in (run / "checkpoints").glob("ckpt-2.*"):
        path.unlink()
    (run / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n'
    )


def assert_finished_like(run: Path, reference: Path) -> None:
    """Exactly the reference's epochs, once each, and its accuracy."""
    records = epoch_records(run)
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    assert [r["val_accuracy"] for r in records] == pytest.approx([r["val_accuracy"] for r in epoch_records(reference)])
    steps = [(r["epoch"], r["step"]) for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "step"]
    assert steps == [(r["epoch"], r["step"]) for r in read_jsonl(reference / "metrics.jsonl") if r["kind"] == "step"]
    summary, expected = (json.loads((folder / "summary.json").read_text()) for folder in (run, reference))
    assert summary["test_accuracy"] == pytest.approx(expected["test_accuracy"], abs=ONE_IMAGE)


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stderr
    assert NO_TRACEBACK not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


# --- A full disk ------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs: room for config, metrics and one checkpoint (8.6 MB), not for the second."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_exit_4_naming_the_path_and_the_same_command_resumes_once_space_is_freed(
    small_disk: Path, run_job: RunJob, tiny_tarball: Path, reference: Path
) -> None:
    args = train_args(tiny_tarball, str(small_disk))
    full = run_job(*args)
    assert_one_error_line(full, 4, f"cannot write {small_disk}/run/checkpoints/", "no space left on the device")
    assert not (small_disk / "run" / "summary.json").exists()
    assert [r["epoch"] for r in epoch_records(small_disk / "run")] == [1, 2]  # Epoch 2's record, not its checkpoint.

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # Space is freed.
    resumed = run_job(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run=" in resumed.stdout and "from_epoch=2 from_step=0 checkpoint=ckpt-1" in resumed.stdout
    assert_finished_like(small_disk / "run", reference)


@pytest.mark.parametrize(
    ("output", "why"),
    [("/proc/cifar10-job", "does not exist or cannot be created"), ("/sys/cifar10-job", "not permitted")],
)
def test_an_output_that_cannot_be_created_is_exit_4(
    output: str, why: str, run_job: RunJob, tiny_tarball: Path, without_tensorflow: dict[str, str]
) -> None:
    result = run_job(*train_args(tiny_tarball, output), env=without_tensorflow)
    assert_one_error_line(result, 4, output, why)


# --- Torn records ------------------------------------------------------------------------------------------------


def test_a_record_torn_at_a_random_byte_is_dropped_and_the_run_finishes(
    tmp_path: Path, run_job: RunJob, tiny_tarball: Path, reference: Path
) -> None:
    """A kill inside a write cuts a record anywhere after the last checkpoint's records: never fatal."""
    run = unfinished_copy(reference, tmp_path / "out" / "run")
    only_checkpoint_1(run)
    raw = (run / "metrics.jsonl").read_bytes()
    lines = raw.splitlines(keepends=True)
    first_after_checkpoint = sum(len(line) for line in lines if json.loads(line)["epoch"] == 1)
    offset = random.Random(SEED).randrange(first_after_checkpoint + 1, len(raw) - 1)
    print(f"FAULTS_SEED={SEED}: metrics.jsonl cut at byte {offset} of {len(raw)}")
    (run / "metrics.jsonl").write_bytes(raw[:offset])

    result = run_job(*train_args(tiny_tarball, str(tmp_path / "out")))
    assert result.returncode == 0, result.stderr
    assert NO_TRACEBACK not in result.stderr
    if raw[:offset].endswith(b"\n"):
        assert "dropped damaged line" not in result.stderr
    else:
        assert "dropped damaged line" in result.stderr, result.stderr
    assert_finished_like(run, reference)


# --- A damaged checkpoint ----------------------------------------------------------------------------------------

DAMAGE = {
    "index": ("ckpt-2.index", "ckpt-1"),
    "data": ("ckpt-2.data-00000-of-00001", "ckpt-1"),
    "state": ("checkpoint", "ckpt-2"),  # The state file is rebuilt from the files; the newest is fine.
}


def damage(path: Path, seed: int) -> None:
    """Cut the file short and flip bytes in what is left, as a node dying mid-write might leave it."""
    content = bytearray(path.read_bytes()[: max(len(path.read_bytes()) // 2, 1)])
    rng = random.Random(seed)
    for _ in range(8):
        content[rng.randrange(len(content))] ^= 0xFF
    path.write_bytes(bytes(content))


# Each file locally; on gs:// the case that also needs the bucket repaired (ckpt-2 deleted there, then rewritten).
@pytest.mark.parametrize(
    ("part", "where"), [("index", "local"), ("data", "local"), ("state", "local"), ("index", "gcs")]
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(
    part: str, where: str, request: pytest.FixtureRequest, tmp_path: Path, run_job: RunJob, tiny_tarball: Path,
    reference: Path,
) -> None:  # fmt: skip
    name, restored = DAMAGE[part]
    run = unfinished_copy(reference, tmp_path / "out" / "run")
    damage(run / "checkpoints" / name, SEED)
    print(f"FAULTS_SEED={SEED}: damaged {name}")
    output, env = str(tmp_path / "out"), {}
    if where == "gcs":
        bucket = request.getfixturevalue("gcs_bucket")
        GcsStore(bucket, "runs/run").upload_tree("", run)
        output = f"gs://{bucket}/runs"
        env = {
            "JOB_STAGING_DIR": str(tmp_path / "staging"),
            "STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"],
        }

    result = run_job(*train_args(tiny_tarball, output), env=env)
    assert result.returncode == 0, result.stderr
    completed = int(restored.split("-")[1])
    assert f"from_epoch={completed + 1} from_step=0 checkpoint={restored}" in result.stdout, result.stdout
    if part != "state":
        assert "checkpoint" in result.stderr and "is unreadable" in result.stderr, result.stderr
    if where == "gcs":  # The bucket holds the repaired checkpoints too: a later resume needs no fallback.
        shutil.rmtree(run)
        GcsStore(bucket, "runs/run").download_tree("", run)
    checkpoints = run / "checkpoints"
    assert sorted(path.name for path in checkpoints.iterdir()) == sorted(
        path.name for path in (reference / "checkpoints").iterdir()
    )
    assert (checkpoints / "checkpoint").read_text().startswith('model_checkpoint_path: "ckpt-2"')
    assert_finished_like(run, reference)


def test_no_readable_checkpoint_is_exit_4_naming_the_folder(
    tmp_path: Path, run_job: RunJob, tiny_tarball: Path, reference: Path
) -> None:
    run = unfinished_copy(reference, tmp_path / "out" / "run")
    for path in (run / "checkpoints").glob("*.index"):
        damage(path, SEED)
    result = run_job(*train_args(tiny_tarball, str(tmp_path / "out")))
    assert_one_error_line(result, 4, f"no readable checkpoint in {run / 'checkpoints'}", "ckpt-2:", "ckpt-1:")
    assert not (run / "summary.json").exists()


# --- Two writers ---------------------------------------------------------------------------------------------------


def wait_for_line(process: JobProcess, text: str) -> None:
    """Read the process's stdout until a line contains text (it must not end first)."""
    assert process.stdout is not None
    for line in process.stdout:
        if text in line:
            return
    raise AssertionError(f"ended ({process.wait()}) before printing {text!r}: {process.stderr.read()}")  # type: ignore[union-attr]


def test_a_second_local_writer_exits_4_naming_the_holder(
    tmp_path: Path, run_job: RunJob, tiny_tarball: Path, without_tensorflow: dict[str, str]
) -> None:
    """This test process holds the run's lock (job.lease, as a running trainer does); the CLI is the second."""
    holder = lease.acquire(str(tmp_path / "out"), "run")
    try:
        second = run_job(*train_args(tiny_tarball, str(tmp_path / "out")), env=without_tensorflow)
    finally:
        holder.release()
    assert_one_error_line(second, 4, "is being written by another process", f"pid {os.getpid()}")
    assert not (tmp_path / "out" / "run").exists()  # Refused before staging anything.
    assert list((tmp_path / "out").iterdir()) == []  # The holder removed its lock file.


def test_on_gcs_a_second_writer_is_refused_naming_the_holder_and_when_its_lease_expires(
    gcs_bucket: str, tmp_path: Path, run_job: RunJob, tiny_tarball: Path, without_tensorflow: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("POD_NAME", "run-abcde")
    holder = lease.acquire(f"gs://{gcs_bucket}/runs", "run")
    env = {**without_tensorflow, "STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"]}
    try:
        second = run_job(*train_args(tiny_tarball, f"gs://{gcs_bucket}/runs"), env=env)
    finally:
        holder.release()
    assert_one_error_line(second, 4, "is being written by another process", "pod run-abcde", "its lease expires at")
    assert GcsStore(gcs_bucket, "runs").list_keys() == []  # Released: the lease object is gone.


def plant_lease(bucket: str, **holder: Any) -> GcsStore:
    """A lease object as a holder killed with -9 leaves it: written once, never renewed."""
    store = GcsStore(bucket, "runs")
    crashed = {"host": "laptop", "pid": 4242, "pod": "", "job_uid": "", "since": "then", "lease_seconds": 600.0}
    store.write_bytes(".run.lease", json.dumps({**crashed, **holder}).encode())
    return store


def test_on_gcs_an_expired_lease_is_taken_over(gcs_bucket: str, caplog: pytest.LogCaptureFixture) -> None:
    store = plant_lease(gcs_bucket, lease_seconds=1.0)
    time.sleep(1.5)
    taken = lease.acquire(f"gs://{gcs_bucket}/runs", "run")
    assert json.loads(store.read_bytes(".run.lease") or b"")["pid"] == os.getpid()
    taken.release()
    assert "taking over" in caplog.text and "host laptop, pid 4242" in caplog.text and "expired" in caplog.text
    assert store.read_bytes(".run.lease") is None


def test_on_gcs_a_retried_pod_of_the_same_job_takes_over_at_once(
    gcs_bucket: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Job controller starts a replacement only after a pod failed: the lease of the same Job is stale."""
    plant_lease(gcs_bucket, pod="run-abcde", job_uid="uid-1")
    monkeypatch.setenv("JOB_CONTROLLER_UID", "uid-2")
    with pytest.raises(OutputError, match="pod run-abcde"):  # Another Job (re-created by hand) must wait.
        lease.acquire(f"gs://{gcs_bucket}/runs", "run")
    monkeypatch.setenv("JOB_CONTROLLER_UID", "uid-1")
    lease.acquire(f"gs://{gcs_bucket}/runs", "run").release()
    assert "an earlier pod of this Job" in caplog.text


# --- The tuning report and the publish ----------------------------------------------------------------------------


def test_a_failing_tuning_report_leaves_the_run_unfinished_and_its_retry_reports_and_finishes(
    tmp_path: Path, run_job: RunJob, tiny_tarball: Path, reference: Path
) -> None:
    run = unfinished_copy(reference, tmp_path / "out" / "run")
    args = train_args(tiny_tarball, str(tmp_path / "out"))
    unwritable = {"CLOUD_ML_TRIAL_ID": "3", "CLOUD_ML_HP_METRIC_FILE": "/proc/no-such/output.metrics"}
    failed = run_job(*args, env=unwritable)
    assert_one_error_line(failed, 4, "cannot write the hyper-parameter tuning metric to /proc/no-such/output.metrics")
    assert not (run / "summary.json").exists()  # Not finished: the retry must report.

    metric_file = tmp_path / "hypertune" / "output.metrics"
    retried = run_job(*args, env={"CLOUD_ML_TRIAL_ID": "3", "CLOUD_ML_HP_METRIC_FILE": str(metric_file)})
    assert retried.returncode == 0, retried.stderr
    reported = json.loads(metric_file.read_text().splitlines()[-1])
    assert reported["trial"] == "3" and float(reported["val_accuracy"]) == epoch_records(reference)[-1]["val_accuracy"]
    assert_finished_like(run, reference)


def test_a_kill_9_at_a_random_moment_of_a_gcs_publish_never_leaves_a_run_that_looks_finished(
    gcs_bucket: str, tmp_path: Path, run_job: RunJob, tiny_tarball: Path, reference: Path
) -> None:
    """Killed somewhere between its last epoch and its exit: either the bucket holds the whole run (summary.json
    is the last write), or the same command (a retried pod of the same Job) finishes it."""
    delay = random.Random(SEED).uniform(0.0, 6.0)
    print(f"FAULTS_SEED={SEED}: kill -9 {delay:.2f} s after the last epoch's line")
    args = train_args(tiny_tarball, f"gs://{gcs_bucket}/runs")
    pod = {"STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"], "JOB_CONTROLLER_UID": "uid-1"}
    process = start_job(args, job_env({**pod, "JOB_STAGING_DIR": str(tmp_path / "1")}))
    wait_for_line(process, f"epoch {EPOCHS}/{EPOCHS} ")
    time.sleep(delay)
    process.kill()
    process.communicate()

    store = GcsStore(gcs_bucket, "runs/run")
    if store.read_bytes("summary.json") is None:
        retried = run_job(*args, env={**pod, "JOB_STAGING_DIR": str(tmp_path / "2")})
        assert retried.returncode == 0, retried.stderr
    store.download_tree("", tmp_path / "run")
    for published in ("model/1/saved_model.pb", "model.keras", "plots/learning_curves.png", "tensorboard"):
        assert (tmp_path / "run" / published).exists(), published
    assert_finished_like(tmp_path / "run", reference)
