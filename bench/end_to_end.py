"""End to end: wall time of `make run API=symbolic` (5 epochs) against the chapter's code run the same way.

    .venv/bin/python bench/end_to_end.py                   # 1 pair on the real CIFAR-10
    .venv/bin/python bench/end_to_end.py --repeats 2 --epochs 5

Each repeat runs, in one invocation and alternating which goes first, `make run API=symbolic EPOCHS=N
DATA=... OUTPUT=<temporary folder>` (the project's entry point: make, the CLI, training, publishing) and
`python bench/reference.py --data ... --epochs N` (the chapter's code: its pipeline, `fit`, the test
evaluation; it writes no model, plots or run folder). Reported: each wall time, its split into training
(epochs, validation included) and everything else (start-up, test evaluation, publishing), the ratio, and
the test accuracy. Writes bench/results/end-to-end.{json,md}; never a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # Run as a script from anywhere.

from bench.startup import machine, save_results  # noqa: E402

REAL_DATA = ROOT.parent / "shared" / "data" / "cifar10" / "cifar-10-python.tar.gz"
RESULTS = ROOT / "bench" / "results"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def children_cpu_seconds() -> float:
    """User + system CPU seconds of every finished child so far (make, python and what they ran)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str]) -> tuple[subprocess.CompletedProcess[str], float, float, float]:
    """Run to the end; (result, wall seconds, CPU seconds, the 1-minute load average at the end)."""
    cpu, started = children_cpu_seconds(), time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, check=False)
    return result, time.perf_counter() - started, children_cpu_seconds() - cpu, os.getloadavg()[0]


def ours(data: Path, epochs: int, output: Path) -> dict[str, Any]:
    command = ["make", "--no-print-directory", "run", "API=symbolic", f"EPOCHS={epochs}", f"DATA={data}"]
    command += [f"OUTPUT={output}", "ARGS=--run-id end-to-end"]
    result, wall, cpu, load = timed(command)
    if result.returncode != 0:
        raise RuntimeError(f"make run failed ({result.returncode}):\n{result.stderr[-3000:]}")
    summary = json.loads((output / "end-to-end" / "summary.json").read_text())
    training, accuracy = summary["training_seconds"], summary["test_accuracy"]
    return {"wall": wall, "cpu": cpu, "load": load, "training": training, "test_accuracy": accuracy}


def reference(data: Path, epochs: int) -> dict[str, Any]:
    command = [sys.executable, "bench/reference.py", "--data", str(data), "--epochs", str(epochs)]
    result, wall, cpu, load = timed(command)
    if result.returncode != 0:
        raise RuntimeError(f"reference failed ({result.returncode}):\n{result.stderr[-3000:]}")
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    training = sum(line["seconds"] for line in lines if "epoch" in line)
    return {"wall": wall, "cpu": cpu, "load": load, "training": training, "test_accuracy": lines[-1]["test_accuracy"]}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| | wall time | training (epochs + validation) | everything else | CPU time | load average at the end "
        "| test accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in result["runs"].items():
        wall = statistics.median(run["wall"] for run in runs)
        training = statistics.median(run["training"] for run in runs)
        accuracy = statistics.median(run["test_accuracy"] for run in runs)
        cpu = statistics.median(run.get("cpu", float("nan")) for run in runs)
        load = statistics.median(run.get("load", float("nan")) for run in runs)
        lines.append(
            f"| {name} | {wall:.1f} s | {training:.1f} s | {wall - training:.1f} s | {cpu:.0f} s | {load:.1f} "
            f"| {100 * accuracy:.1f}% |"
        )
    lines += [
        "",
        f"Chapter's code / ours, wall time: {result['ratio']:.2f}× (median of neighbouring pairs). CPU time counts "
        "both cores; other processes share them, so compare wall times of neighbouring runs at similar loads.",
        f"Machine: {result['machine']}; {result['date']}; {result['epochs']} epochs, {result['repeats']} pair(s), "
        f"medians; data {result['data']}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REAL_DATA)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--reference-first", action="store_true", help="start with the chapter's code")
    arguments = parser.parse_args()
    names = ("make run API=symbolic", "chapter's code (bench/reference.py)")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for repeat in range(arguments.repeats):
        for name in names if (repeat % 2 == 0) != arguments.reference_first else names[::-1]:
            print(f"repeat {repeat + 1}/{arguments.repeats}: {name}", file=sys.stderr, flush=True)
            if name == names[0]:
                with tempfile.TemporaryDirectory(prefix="end-to-end-") as folder:
                    runs[name].append(ours(arguments.data, arguments.epochs, Path(folder)))
            else:
                runs[name].append(reference(arguments.data, arguments.epochs))
    pairs = zip(runs[names[0]], runs[names[1]], strict=True)
    result = {
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "epochs": arguments.epochs,
        "repeats": arguments.repeats,
        "data": str(arguments.data),
        "runs": runs,
        "ratio": statistics.median(theirs["wall"] / our["wall"] for our, theirs in pairs),
    }
    save_results("end-to-end", result, markdown)


if __name__ == "__main__":
    main()
