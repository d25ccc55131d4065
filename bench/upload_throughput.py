"""Upload throughput of a 100 MB run folder to a local fake-gcs-server: parallel vs one file at a time.

    .venv/bin/python bench/upload_throughput.py            # prints one markdown table row
    .venv/bin/python bench/upload_throughput.py --repeats 5

The folder mimics a run: one 60 MB file (a big checkpoint or model.keras), four 5 MB files and
200 files of 100 kB (TensorBoard events, SavedModel pieces), 100 MB in all. "Parallel" is
`GcsStore.upload_tree` (google-cloud-storage transfer_manager, 8 threads); "one by one" calls
`GcsStore.upload_file` per file. The server runs in memory on this machine, so the numbers measure
client overhead and concurrency, not a real network.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Run as a script from anywhere.

from job.gcs import MAX_WORKERS, GcsStore
from tests.gcs_fixtures import start_fake_gcs_server, stop_fake_gcs_server

MB = 1_000_000
LAYOUT = [("checkpoint.data", 60 * MB, 1), ("shard", 5 * MB, 4), ("events", 100_000, 200)]


def make_run_folder(root: Path) -> int:
    """Write the benchmark folder; return its size in bytes."""
    total = 0
    for stem, size, count in LAYOUT:
        for index in range(count):
            path = root / stem / f"{stem}-{index:03d}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(size))  # Incompressible, like weights.
            total += size
    return total


def upload_one_by_one(store: GcsStore, folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            store.upload_file(path.relative_to(folder).as_posix(), path)


def measure(store: GcsStore, folder: Path, mode: str, repeats: int) -> list[float]:
    """Seconds per upload of the whole folder, each into a fresh prefix (deleted afterwards)."""
    seconds = []
    for attempt in range(repeats):
        target = store.child(f"{mode}-{attempt}")
        started = time.perf_counter()
        if mode == "parallel":
            target.upload_tree("", folder)
        else:
            upload_one_by_one(target, folder)
        seconds.append(time.perf_counter() - started)
        target.delete_prefix("")  # The in-memory server would otherwise hold every copy.
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="Uploads per mode; the median is reported.")
    arguments = parser.parse_args()

    server = start_fake_gcs_server()
    os.environ["STORAGE_EMULATOR_HOST"] = server.url
    try:
        bucket = server.create_bucket("bench")
        store = GcsStore(bucket, "runs")
        with tempfile.TemporaryDirectory() as temporary:
            folder = Path(temporary)
            total = make_run_folder(folder)
            files = sum(count for _, _, count in LAYOUT)
            measure(store, folder, "parallel", 1)  # Warm-up: connections, page cache.
            serial = statistics.median(measure(store, folder, "serial", arguments.repeats))
            parallel = statistics.median(measure(store, folder, "parallel", arguments.repeats))
    finally:
        stop_fake_gcs_server(server)

    print(f"| run folder | one by one | parallel ({MAX_WORKERS} threads) | speed-up |")
    print("|---|---|---|---|")
    print(
        f"| {total / MB:.0f} MB, {files} files (1×60 MB, 4×5 MB, 200×100 kB) "
        f"| {total / MB / serial:.0f} MB/s ({serial:.2f} s) "
        f"| {total / MB / parallel:.0f} MB/s ({parallel:.2f} s) "
        f"| {serial / parallel:.1f}× |"
    )


if __name__ == "__main__":
    main()
