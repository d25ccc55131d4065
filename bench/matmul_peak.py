"""This machine's matmul peak: GFLOP/s of a 4096×4096 matmul in float32 and bfloat16, through TensorFlow.

    .venv/bin/python bench/matmul_peak.py            # prints {"float32": ..., "bfloat16": ...} as JSON
    .venv/bin/python bench/matmul_peak.py --size 2048 --repeats 10

The training step's achieved GFLOP/s is reported as a fraction of these numbers, measured in the same
benchmark run (bench/benchmark.py runs this in a subprocess), because the peak of a shared 2-core VM
drifts from hour to hour. Best of `--repeats` timed matmuls after one warm-up, since other processes on
the machine can only make a matmul slower, never faster.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf


def matmul_gflops(dtype: tf.DType, size: int = 4096, repeats: int = 5) -> float:
    """Best-of-`repeats` GFLOP/s of one size×size matmul (2·n³ FLOPs)."""
    a = tf.random.stateless_uniform((size, size), seed=(1, 2), dtype=tf.float32)
    b = tf.random.stateless_uniform((size, size), seed=(3, 4), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)

    @tf.function
    def product() -> tf.Tensor:
        return tf.reduce_sum(tf.cast(tf.matmul(a, b)[0, :1], tf.float32))  # A tiny result: no copy-out cost.

    product().numpy()  # Warm-up: tracing and oneDNN kernel selection.
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        product().numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def measure(size: int = 4096, repeats: int = 5) -> dict[str, float]:
    return {
        "float32": matmul_gflops(tf.float32, size, repeats),
        "bfloat16": matmul_gflops(tf.bfloat16, size, repeats),
        "size": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    print(json.dumps(measure(arguments.size, arguments.repeats)))


if __name__ == "__main__":
    main()
