"""A/B test of trainer flags: the same `python -m job train` run with two flag sets, alternating, side by side.

    .venv/bin/python bench/ab.py --a "--steps-per-execution 1" --b "" --variant symbolic-fit --repeats 3
    .venv/bin/python bench/ab.py --a "--precision float32" --b "--precision mixed_bfloat16" --epochs 2

Each repeat runs A then B (B then A on odd repeats, so neither always runs on a warmer or quieter machine),
each in a fresh process on the same data, and reads the steady train images/s (epochs after the first)
from the run's metrics.jsonl. Prints one JSON object: per-side medians, every B/A ratio of neighbouring
runs, and their median, which is the number to quote (absolute speeds on this shared machine drift).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchmark import ENV, SHARED_DATA, generated_tarball  # noqa: E402
from job import metrics  # noqa: E402
from job.artifacts import METRICS  # noqa: E402


def epoch_speeds(run: Path) -> list[float]:
    """Train images/s of each epoch, from the run's metrics.jsonl (job.metrics, its one reader)."""
    records, _ = metrics.decode((run / METRICS).read_bytes())
    return [record["images_per_second"] for record in metrics.last_records(records, "epoch")]


def train(flags: list[str], variant: str, data: Path, epochs: int, output: Path, run_id: str) -> dict[str, Any]:
    api, loop = variant.split("-")
    command = [sys.executable, "-m", "job", "train", "--api", api, "--loop", loop, "--data", str(data)]
    command += ["--epochs", str(epochs), "--output", str(output), "--run-id", run_id, "--log-format", "json"]
    result = subprocess.run(command + flags, capture_output=True, text=True, env=ENV, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"{shlex.join(flags)} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    summary = json.loads((output / run_id / "summary.json").read_text())
    speeds = epoch_speeds(output / run_id)
    steady = speeds[1:] or speeds  # The first epoch includes tracing.
    return {
        "images_per_second": statistics.median(steady),
        "epoch_images_per_second": [round(speed) for speed in speeds],
        "test_accuracy": summary["test_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", default="", help="flags of side A, one string")
    parser.add_argument("--b", default="", help="flags of side B, one string")
    parser.add_argument("--variant", default="symbolic-fit", help="api-loop, e.g. imperative-custom")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="cifar-10-python.tar.gz (else generated)")
    arguments = parser.parse_args()
    sides = {"A": shlex.split(arguments.a), "B": shlex.split(arguments.b)}
    runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="ab-") as scratch:
        data = arguments.data if arguments.data.exists() else generated_tarball(Path(scratch))
        for repeat in range(arguments.repeats):
            for side in ("A", "B") if repeat % 2 == 0 else ("B", "A"):
                print(f"repeat {repeat + 1}/{arguments.repeats}: {side} {shlex.join(sides[side])}", file=sys.stderr)
                output = Path(scratch) / "runs"
                runs[side].append(
                    train(sides[side], arguments.variant, data, arguments.epochs, output, f"{side}{repeat}")
                )
    ratios = [b["images_per_second"] / a["images_per_second"] for a, b in zip(runs["A"], runs["B"], strict=True)]
    report = {
        "variant": arguments.variant,
        "epochs": arguments.epochs,
        **{
            side: {
                "flags": shlex.join(sides[side]),
                "images_per_second": statistics.median(run["images_per_second"] for run in runs[side]),
                "test_accuracy": [run["test_accuracy"] for run in runs[side]],
                "epoch_images_per_second": [run["epoch_images_per_second"] for run in runs[side]],
            }
            for side in ("A", "B")
        },
        "b_over_a": ratios,
        "b_over_a_median": statistics.median(ratios),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
