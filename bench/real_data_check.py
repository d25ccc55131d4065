"""Real-data check of the core trainer: 5 epochs on the real CIFAR-10 for each api × loop combination.

    .venv/bin/python bench/real_data_check.py                     # trains the four variants (~6 min on 2 cores)
    .venv/bin/python bench/real_data_check.py --from-benchmark bench/results/latest.json

Asserts that each variant reaches at least 60% test accuracy (test[500:]) after 5 epochs, the chapter's
result (60.2% for its Sequential model, /work/shared/data/cifar10/README.md), and that symbolic and
imperative end within 2 points of each other for each loop. `--from-benchmark` checks the runs a 5-epoch
real-data `bench/benchmark.py` already made instead of training again. Exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # Run as a script from anywhere.

from benchmark import SHARED_DATA, train_variant

EPOCHS = 5
MIN_TEST_ACCURACY = 0.60
MAX_API_GAP = 0.02
VARIANTS = ("symbolic-fit", "symbolic-custom", "imperative-fit", "imperative-custom")


def train_all(data: Path) -> dict[str, float]:
    """Test accuracy of each variant after EPOCHS epochs, each in its own subprocess."""
    accuracies = {}
    with tempfile.TemporaryDirectory(prefix="real-data-check-") as scratch:
        for variant in VARIANTS:
            print(f"training {variant} for {EPOCHS} epochs", file=sys.stderr, flush=True)
            accuracies[variant] = train_variant(variant, data, EPOCHS, Path(scratch), "check")["test_accuracy"]
    return accuracies


def from_benchmark(path: Path) -> dict[str, float]:
    """Test accuracies recorded by a 5-epoch real-data benchmark run (the worst repeat of each variant)."""
    result: dict[str, Any] = json.loads(path.read_text())
    if not result["real_data"] or result["epochs"] != EPOCHS:
        raise SystemExit(f"{path} is not a {EPOCHS}-epoch run on real data: run without --from-benchmark")
    rows = {row["variant"]: row for row in result["variants"]}
    return {variant: min(run["test_accuracy"] for run in rows[variant]["runs"]) for variant in VARIANTS}


def failures(accuracies: dict[str, float]) -> list[str]:
    problems = [
        f"{variant}: {accuracy:.1%} test accuracy < {MIN_TEST_ACCURACY:.0%}"
        for variant, accuracy in accuracies.items()
        if accuracy < MIN_TEST_ACCURACY
    ]
    for loop in ("fit", "custom"):
        gap = abs(accuracies[f"symbolic-{loop}"] - accuracies[f"imperative-{loop}"])
        if gap > MAX_API_GAP:
            problems.append(f"{loop}: symbolic and imperative differ by {gap:.1%} > {MAX_API_GAP:.0%}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--from-benchmark", type=Path, help="bench/results/latest.json of a 5-epoch real-data run")
    arguments = parser.parse_args()
    if arguments.from_benchmark:
        accuracies = from_benchmark(arguments.from_benchmark)
    elif arguments.data.exists():
        accuracies = train_all(arguments.data)
    else:
        raise SystemExit(f"{arguments.data} not found: this check needs the real CIFAR-10")
    for variant, accuracy in accuracies.items():
        print(f"{variant}: {accuracy:.2%} test accuracy after {EPOCHS} epochs")
    if problems := failures(accuracies):
        print("FAILED: " + "; ".join(problems), file=sys.stderr)
        raise SystemExit(1)
    print("passed: every variant ≥ 60%, symbolic vs imperative within 2 points for each loop")


if __name__ == "__main__":
    main()
