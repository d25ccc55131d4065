"""`train.run(config)`: data → model → loop → run folder. The only module that drives TensorFlow end to end.

A run can be interrupted (SIGTERM from a node drain, kill -9, a failed upload) and re-run with the same
--run-id: it restores the newest checkpoint, trims metrics.jsonl to it and carries on, and publishes the
model and `summary.json` once, at the very end.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import keras
import tensorflow as tf

from job import devices as devices_module
from job import hypertune, model_card, plots, stepping, stopping
from job.artifacts import CHECKPOINTS, CONFIG, KERAS_MODEL, SAVED_MODEL, TENSORBOARD, RunWriter
from job.checkpoints import Checkpointer, Restored
from job.config import Loop, TrainConfig
from job.data import Cifar10
from job.distribute import Distribution, make_distribution, prepare_fit
from job.errors import Interrupted, UsageError
from job.faults import write_atomically
from job.loops import Evaluator, custom_loop, fit_loop
from job.models import build_model
from job.monitor import Monitor, write_hparams
from job.pipeline import Splits, make_splits
from job.plan import Plan
from job.preflight import Prepared
from job.progress import Reporter
from job.run_record import describe_run, resumed_record
from job.storage import open_store

# How TensorFlow reports a peer that went away or restarted: gRPC unreachable, a collective cancelled or aborted
# by the coordination service (a task stopped sending heartbeats), a deadline passed while waiting for it, and
# FailedPrecondition when a restarted peer rejoins an older incarnation of the cluster.
PEER_LOST_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
    tf.errors.DeadlineExceededError,
    tf.errors.FailedPreconditionError,
)


def run(config: TrainConfig, prepared: Prepared) -> dict[str, Any]:
    """Train, evaluate and publish one run; `prepared` holds what job.preflight checked without TensorFlow.

    In a multi-worker run everything from creating the strategy (joining the cluster) to the last collective
    is covered: wherever a peer is lost, this worker exits 75 and the Job restarts them all to resume.
    """
    with peers_lost_is_retryable(prepared.workers):
        return train_and_publish(config, prepared)


def train_and_publish(config: TrainConfig, prepared: Prepared) -> dict[str, Any]:
    started = time.monotonic()
    reporter = Reporter(config.log_format.value)
    writer, dataset = prepared.writer, prepared.dataset
    stopping.raise_if_requested("while TensorFlow was loading")
    devices, distribution, precision, jit_compile = set_up_devices(config, reporter)
    data_device = resolve_data_on_device(config.data_on_device.value, devices, distribution)
    splits = make_splits(dataset, config.batch_size, config.validation_size, device=data_device)
    trainee = Trainee.build(config, distribution, dataset.image_size, precision)
    checkpointer = Checkpointer(writer.path(CHECKPOINTS), trainee.model, trainee.optimizer, trainee.metrics)
    restored = checkpointer.restore() if prepared.resuming else Restored(0, 0, None)
    if checkpointer.repaired:  # Damaged checkpoints were dropped: the stored copy must not keep them.
        writer.sync_tree(CHECKPOINTS, prune=True)
    plan = Plan(
        config,
        precision=precision,
        jit_compile=jit_compile,
        steps_per_epoch=splits.steps_per_epoch,
        steps_per_execution=effective_steps_per_execution(config, splits.steps_per_epoch, distribution),
        first_epoch=restored.completed_epochs,
        # fit resumes at epoch boundaries: a mid-epoch checkpoint repeats that epoch.
        first_step=0 if config.loop == Loop.fit else restored.steps_into_epoch,
        is_chief=prepared.is_chief,
        workers=distribution.workers,
    )
    settings: dict[str, Any] = {
        **config.to_json(),
        "precision": plan.precision,
        "precision_requested": config.precision.value,
        "steps_per_execution": plan.steps_per_execution,
        "steps_per_execution_requested": config.steps_per_execution,
        "data_on_device": data_device is not None,
        "data_on_device_requested": config.data_on_device.value,
    }
    record = describe_run(settings, plan, devices, distribution, dataset, trainee.model)
    if prepared.resuming:
        record = resumed_record(writer, record, plan, restored.checkpoint)
    if plan.is_chief:
        mirror_to_vertex_dirs(writer)
    writer.keep_metrics_through(plan.first_epoch, plan.first_step)
    writer.write_json(CONFIG, record)
    stopping.raise_if_requested("before training started")
    if plan.is_chief:
        write_hparams(writer.path(TENSORBOARD), {key: settings[key] for key in HPARAMS}, trial_id=config.run_id)
    reporter.event(
        "resuming" if prepared.resuming else "training",
        run=writer.url,
        api=config.api.value,
        loop=config.loop.value,
        from_epoch=plan.first_epoch + 1,
        **({"from_step": plan.first_step, "checkpoint": restored.checkpoint or "none"} if prepared.resuming else {}),
        precision=plan.precision,
        xla=plan.jit_compile,
    )

    monitor = Monitor(writer, reporter, checkpointer, plan)
    evaluator = Evaluator(trainee.model)  # Validates in the custom loop and tests both: the test reuses its trace.
    if plan.first_epoch < config.epochs:
        trainee.train(splits, monitor, plan, evaluator)
    if stopping.requested():
        writer.sync_tree(CHECKPOINTS)
        raise Interrupted(
            f"stopped by a signal; training state saved in {writer.url}/{CHECKPOINTS}: "
            f"rerun the same command with --run-id {config.run_id} to resume"
        )
    if not plan.is_chief:
        writer.discard()
        reporter.event("worker finished", worker=distribution.worker_index, published="nothing (the chief publishes)")
        return {}

    stopping.raise_if_requested("after training, before publishing")
    test = evaluator(splits.test)
    return publish(writer, reporter, config, trainee.model, dataset, monitor, test, started)


def set_up_devices(config: TrainConfig, reporter: Reporter) -> tuple[devices_module.Devices, Distribution, str, bool]:
    """The devices, the tf.distribute strategy (joining the cluster: before any other TensorFlow op), the
    precision and whether to compile with XLA; sets Keras' dtype policy and seeds."""
    devices = devices_module.detect()
    distribution = make_distribution(config.strategy, len(devices.gpus))
    reporter.event("devices", seen="; ".join(devices.describe()), **distribution.describe())
    if config.require_gpu:
        devices_module.require_gpu(devices)
    check_global_batch(config.batch_size, distribution.replicas)
    precision = devices_module.resolve_precision(config.precision, devices)
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(config.seed)
    return devices, distribution, precision, devices_module.resolve_xla(config.xla, devices)


@dataclass(frozen=True)
class Trainee:
    """What training changes and a checkpoint saves: the model, its optimizer and the running train metrics."""

    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    metrics: dict[str, keras.metrics.Metric]

    @classmethod
    def build(cls, config: TrainConfig, distribution: Distribution, image_size: int, precision: str) -> Trainee:
        with distribution.strategy.scope():
            model = build_model(config.api.value, image_size)
            optimizer = make_optimizer(config, precision)
            optimizer.build(model.trainable_variables)
            metrics = {"train_loss": keras.metrics.Mean(), "train_accuracy": keras.metrics.SparseCategoricalAccuracy()}
        if distribution.kind != "none" and config.loop == Loop.fit:
            prepare_fit(model, image_size)
        return cls(model, optimizer, metrics)

    def train(self, splits: Splits, monitor: Monitor, plan: Plan, evaluator: Evaluator) -> None:
        """The rest of the run's epochs, with the loop it asked for."""
        if plan.fit:
            fit_loop(self.model, self.optimizer, splits, monitor, plan)
        else:
            custom_loop(self.model, self.optimizer, splits, monitor, self.metrics, plan, evaluator)


def resolve_data_on_device(requested: str, devices: devices_module.Devices, distribution: Distribution) -> str | None:
    """The device that keeps the training set and gathers the batches, or None for tf.data on the host.

    auto: the first GPU when there is one and no tf.distribute strategy; off on CPU, where the host is the
    device: tf.data's prefetch gathers the next batch beside the step, the step would gather in series with
    its own work (no faster here: bench/input_capacity.py, docs/performance.md).
    on: also on the CPU (same numbers; how the tests check it); refused under a strategy, whose replicas
    each need their own batch slice (exit 2).
    """
    if requested == "off" or (requested == "auto" and not devices.gpus):
        return None
    if distribution.kind != "none":
        if requested == "auto":
            return None
        raise UsageError(
            f"--data-on-device on keeps the training set on one device, but this run uses the {distribution.kind} "
            "strategy: drop it (auto or off) or train on one device (--strategy none)"
        )
    return "/GPU:0" if devices.gpus else "/CPU:0"


# What TensorBoard's HParams dashboard shows of a run: the settings a sweep varies or a comparison needs.
HPARAMS = ("api", "loop", "epochs", "batch_size", "learning_rate", "momentum", "seed", "validation_size", "precision")


def mirror_to_vertex_dirs(writer: RunWriter) -> None:
    """On Vertex AI, also sync the TensorBoard logs to AIP_TENSORBOARD_LOG_DIR (<base>/logs/), where it reads them.

    Checkpoints need no copy: the run folder is the base output directory, so its checkpoints/ is
    AIP_CHECKPOINT_DIR itself, and a restarted replica resumes from it (job.vertex).
    """
    if os.environ.get("AIP_TENSORBOARD_LOG_DIR"):
        writer.mirrors[TENSORBOARD] = open_store(os.environ["AIP_TENSORBOARD_LOG_DIR"])


def check_global_batch(batch_size: int, replicas: int) -> None:
    if batch_size % replicas:
        raise UsageError(
            f"--batch-size {batch_size} does not split evenly over {replicas} replicas: "
            f"use a multiple of {replicas} (it is the global batch)"
        )


@contextmanager
def peers_lost_is_retryable(workers: int) -> Iterator[None]:
    """In a multi-worker run, a peer that went away (preempted, evicted) fails the collectives of the others.

    That is an interruption, not a bug: exit 75 so the Job restarts every worker without counting it, and
    they all resume from the last checkpoint.
    """
    try:
        yield
    except PEER_LOST_ERRORS as error:
        if workers == 1:
            raise
        raise Interrupted(
            f"lost contact with another worker ({type(error).__name__}: {peer_loss_reason(error.message)}): "
            "every worker resumes from the last checkpoint when they are started again (the Job restarts them)"
        ) from None


def peer_loss_reason(message: str) -> str:
    """What TensorFlow says happened to the peer, without its op names, graph traces and advice: one line."""
    text = re.sub(r"\{\{[^}]*\}\}", "", message)  # {{function_node ...}} op decorations.
    text = text.rsplit("aborted by:", 1)[-1]  # A collective aborted by the coordination service: its reason.
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith((" ", "Graph execution error", "Detected at node"))
    ]
    reason = " ".join(lines[:2]) if lines and lines[0].endswith(":") else (lines[0] if lines else "no detail")
    return reason if len(reason) <= 200 else reason[:199] + "…"


def make_optimizer(config: TrainConfig, precision: str) -> keras.optimizers.Optimizer:
    optimizer = keras.optimizers.SGD(learning_rate=config.learning_rate, momentum=config.momentum)
    if precision == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)  # float16 gradients underflow without it.
    return optimizer


def effective_steps_per_execution(config: TrainConfig, steps_per_epoch: int, distribution: Distribution) -> int:
    """What the loop will run per call: fit's aligned divisor, or the custom loop's largest chunk."""
    if config.loop == Loop.fit:
        distributed = distribution.kind != "none"
        return stepping.fit_steps_per_execution(config.steps_per_execution, steps_per_epoch, distributed)
    return min(stepping.requested_steps(config.steps_per_execution), steps_per_epoch)


def publish(
    writer: RunWriter,
    reporter: Reporter,
    config: TrainConfig,
    model: keras.Model,
    dataset: Cifar10,
    monitor: Monitor,
    test: dict[str, float],
    started: float,
) -> dict[str, Any]:
    """Export the model, draw the pictures, upload them, then write summary.json last; on failure the local copy
    stays. The data plots are drawn here, not before training: they cost about a second of the time to the
    first step, and a gs:// run uploads its plots only now anyway."""
    image_size = dataset.image_size
    signature = [tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name=model_card.INPUT_NAME)]
    exported = writer.path(SAVED_MODEL) / model_card.saved_model_path(config.model_version)
    model.export(str(exported), format="tf_saved_model", input_signature=signature, verbose=False)
    stopping.raise_if_requested("while publishing")
    model.save(writer.path(KERAS_MODEL))
    plots.write_data_plots(dataset, writer.path(plots.FOLDER), reporter)  # Warns on failure; stops on request.
    plots.write_run_plots(writer.staging, model, reporter)
    epochs = monitor.epoch_records
    steady = epochs[1:] or epochs  # The first epoch includes tracing and warm-up.
    summary = {
        "run_id": config.run_id,
        "api": config.api.value,
        "loop": config.loop.value,
        "epochs": len(epochs),
        "parameters": int(model.count_params()),
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "val_accuracy": epochs[-1]["val_accuracy"] if epochs else None,
        "train_images_per_second": sum(r["images_per_second"] for r in steady) / max(len(steady), 1),
        "training_seconds": sum(r["seconds"] for r in epochs),
        "wall_seconds": time.monotonic() - started,
        "completed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_model_card(writer, config, image_size, summary)
    for name in (TENSORBOARD, SAVED_MODEL, KERAS_MODEL, plots.FOLDER):
        stopping.raise_if_requested("while publishing")
        writer.publish_file(name)
    if summary["val_accuracy"] is not None:
        # Before summary.json: a failed report leaves the run unfinished, so its retry reports again (the
        # trial's last line wins) instead of finding a finished run it never reported.
        hypertune.report("val_accuracy", summary["val_accuracy"], summary["epochs"], os.environ)
    writer.publish_summary(summary)
    writer.cleanup_staging()
    reporter.event("finished", run=writer.url, test_accuracy=f"{test['accuracy']:.4f}", test_loss=f"{test['loss']:.4f}")
    return summary


def write_model_card(writer: RunWriter, config: TrainConfig, image_size: int, summary: dict[str, Any]) -> None:
    """model_card.json and README.md beside the SavedModel: its signature, classes and the run it came from."""
    run = {key: summary[key] for key in ("run_id", "api", "loop", "epochs", "test_accuracy", "completed_at")}
    card = model_card.build_card(config.model_version, image_size, run)
    writer.path(SAVED_MODEL).mkdir(parents=True, exist_ok=True)
    write_atomically(writer.path(SAVED_MODEL) / model_card.CARD, (json.dumps(card, indent=2) + "\n").encode())
    write_atomically(writer.path(SAVED_MODEL) / model_card.README, model_card.render_readme(card).encode())
