"""Where a training step's time goes: TensorFlow's profiler over the trainer's own step, one row per op.

    .venv/bin/python bench/op_profile.py                       # symbolic model, --precision auto
    .venv/bin/python bench/op_profile.py --api imperative --precision float32 --top 15

Builds the model and optimizer as `python -m job train` does, feeds one in-memory batch of 200 (the input
pipeline is measured by probe.py, not here), and traces `--steps` steps with one inter-op thread, so ops
run one at a time and each op's self time is wall time. Prints a markdown table (share of the traced time,
ms per step) and the totals per op type; docs/performance.md reads the latest one.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as profiler_plugin

from job import devices as devices_module
from job.config import Precision
from job.loops import make_loss
from job.models import build_model

BATCH = 200


def op_rows(trace_dir: str) -> list[dict[str, Any]]:
    """The profiler's framework-op table (the TensorBoard profile plugin's "framework_op_stats")."""
    (xplane,) = Path(trace_dir).rglob("*.xplane.pb")
    raw, ok = profiler_plugin.xspace_to_tools_data([str(xplane)], "framework_op_stats", {})
    if not ok:
        raise SystemExit("the profiler could not convert its trace")
    table = json.loads(raw)[0]
    names = [column["id"] for column in table["cols"]]
    return [dict(zip(names, [cell.get("v") for cell in row["c"]], strict=True)) for row in table["rows"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="symbolic", choices=["symbolic", "imperative"])
    parser.add_argument("--precision", default="auto", choices=[precision.value for precision in Precision])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--top", type=int, default=20)
    arguments = parser.parse_args()
    tf.config.threading.set_inter_op_parallelism_threads(1)  # One op at a time: self time is wall time.
    devices = devices_module.detect()
    precision = devices_module.resolve_precision(Precision(arguments.precision), devices)
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(42)
    model = build_model(arguments.api)
    optimizer = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    loss_fn = make_loss()
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, 10, (BATCH,), dtype=np.int64))

    @tf.function
    def step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    for _ in range(5):
        step().numpy()
    started = time.perf_counter()
    for _ in range(arguments.steps):
        step()
    step().numpy()
    step_ms = (time.perf_counter() - started) / (arguments.steps + 1) * 1000
    with tempfile.TemporaryDirectory(prefix="op-profile-") as trace_dir:
        tf.profiler.experimental.start(trace_dir)
        for _ in range(arguments.steps):
            step()
        step().numpy()
        tf.profiler.experimental.stop()
        rows = op_rows(trace_dir)
    print(markdown(rows, arguments, precision, step_ms))


def markdown(rows: list[dict[str, Any]], arguments: argparse.Namespace, precision: str, step_ms: float) -> str:
    busy = [row for row in rows if row["type"] != "IDLE"]
    total = sum(row["total_self_time"] for row in rows)
    per_type: dict[str, float] = collections.defaultdict(float)
    for row in busy:
        per_type[row["type"]] += row["total_self_time"]
    lines = [
        f"{arguments.api} model, {precision}, batch {BATCH}: {step_ms:.1f} ms per step untraced "
        f"({BATCH / step_ms * 1000:.0f} img/s); traced {arguments.steps + 1} steps, one inter-op thread.",
        "",
        "| op | type | share | ms/step |",
        "|---|---|---:|---:|",
    ]
    steps = arguments.steps + 1
    for row in sorted(busy, key=lambda row: -row["total_self_time"])[: arguments.top]:
        milliseconds = row["total_self_time"] / steps / 1000
        lines.append(
            f"| `{short(row['operation'])}` | {row['type']} | {row['total_self_time'] / total:.1%} "
            f"| {milliseconds:.2f} |"
        )
    idle = total - sum(row["total_self_time"] for row in busy)
    lines += ["", f"Idle (waiting between ops, Python): {idle / total:.1%}.", "", "By op type:", ""]
    lines += [f"- {kind}: {seconds / total:.1%}" for kind, seconds in sorted(per_type.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def short(operation: str) -> str:
    """Drop the model-name prefix TensorFlow adds: symbolic_1/conv2d_1/Relu → conv2d_1/Relu."""
    parts = operation.split("/")
    return "/".join(part for part in parts if not part.startswith(("symbolic", "imperative")))[:70]


if __name__ == "__main__":
    main()
