"""The store decides where a run is staged, and metrics.jsonl has one writer and one reader (no TensorFlow here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from job import metrics
from job.metrics import EpochRecord, StepRecord
from job.storage import LocalStore, check_out, discard_copy

STEP: StepRecord = {
    "kind": "step",
    "epoch": 1,
    "step": 100,
    "samples_seen": 6400,
    "loss": 2.0,
    "images_per_second": 9.0,
}
EPOCH: EpochRecord = {"kind": "epoch", "epoch": 1, "loss": 1.5, "accuracy": 0.4, "val_loss": 1.6, "val_accuracy": 0.35,
                      "seconds": 3.0, "train_seconds": 2.5, "images_per_second": 10.0}  # fmt: skip


def test_a_local_store_is_its_own_staging_folder(tmp_path: Path) -> None:
    """Staging is the destination: checking out or discarding never touches the run folder itself."""
    store = LocalStore(tmp_path / "runs").child("r1")
    run = store.staging(tmp_path / "elsewhere")
    assert run == tmp_path / "runs" / "r1" and not store.is_copy(run)
    store.write_bytes("checkpoints/ckpt-1.index", b"state")
    check_out(store, run, trees=["checkpoints"], files=["metrics.jsonl"])
    discard_copy(store, run)
    assert (run / "checkpoints" / "ckpt-1.index").read_bytes() == b"state"


def test_a_copy_is_emptied_refilled_and_discarded(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "run")
    store.write_bytes("checkpoints/ckpt-1.index", b"state")
    store.write_bytes("metrics.jsonl", metrics.encode([EPOCH]))
    copy = tmp_path / "copy"
    (copy / "stale").mkdir(parents=True)
    assert store.is_copy(copy)
    check_out(store, copy, trees=["checkpoints"], files=["metrics.jsonl", "config.json"])
    assert sorted(str(path.relative_to(copy)) for path in copy.rglob("*") if path.is_file()) == [
        "checkpoints/ckpt-1.index",
        "metrics.jsonl",
    ]
    store.upload_tree("checkpoints", copy / "checkpoints", prune=True)
    discard_copy(store, copy)
    assert not copy.exists() and store.read_bytes("checkpoints/ckpt-1.index") == b"state"


def test_pruning_a_copy_deletes_what_it_no_longer_has(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "run")
    store.write_bytes("checkpoints/old.index", b"old")
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "new.index").write_bytes(b"new")
    store.upload_tree("checkpoints", tmp_path / "copy", prune=True)
    assert store.list_keys("checkpoints") == ["checkpoints/new.index"]


def test_listing_two_levels_deep_skips_checkpoints_and_models(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for key in ("r1/config.json", "r1/checkpoints/ckpt-1.index", "r1/model/1/saved_model.pb", "notes.txt"):
        store.write_bytes(key, b"x")
    assert store.list_keys(depth=2) == ["notes.txt", "r1/config.json"]
    assert store.list_keys("r1", depth=1) == ["r1/config.json"]
    assert store.is_listable() and not LocalStore(tmp_path / "missing").is_listable()


def test_metrics_round_trip_and_torn_lines_are_reported() -> None:
    resumed: EpochRecord = {**EPOCH, "accuracy": 0.45}
    raw = metrics.encode([STEP, EPOCH, resumed]) + b"not json\n" + b'{"kind": "epo'
    records, damaged = metrics.decode(raw)
    assert records == [STEP, EPOCH, resumed] and damaged == [4, 5]
    assert metrics.last_records(records, "epoch") == [resumed]
    assert metrics.last_records(records, "step") == [STEP]


def test_the_uri_module_imports_nothing_heavy() -> None:
    script = "import sys, job.uri; print(sorted(m for m in sys.modules if m.startswith('job')))"
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['job', 'job.errors', 'job.uri']"
