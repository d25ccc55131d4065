"""The chapter's two training loops: Keras' built-in `fit`, and a `tf.GradientTape` loop written out.

Both train on the same per-epoch batches (job.pipeline), report to the same `Monitor`, and evaluate
with the same `evaluate`, so their results are directly comparable.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from job.monitor import Monitor
from job.pipeline import Splits, train_epochs
from job.plan import Plan
from job.stepping import chunks


def make_loss(reduction: str | None = "sum_over_batch_size") -> keras.losses.Loss:
    # The model ends in a softmax, so the loss takes probabilities (the chapter's custom loop wrongly
    # passed from_logits=True for the same softmax output).
    return keras.losses.SparseCategoricalCrossentropy(from_logits=False, reduction=reduction)


class Evaluator:
    """Mean loss and accuracy over a dataset, the same way for both loops (one traced step, reused)."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.loss_fn = make_loss()
        self.loss_mean = keras.metrics.Mean()
        self.accuracy = keras.metrics.SparseCategoricalAccuracy()

    @tf.function
    def test_step(self, images: tf.Tensor, labels: tf.Tensor) -> None:
        probabilities = self.model(images, training=False)
        self.loss_mean.update_state(self.loss_fn(labels, probabilities), sample_weight=tf.shape(labels)[0])
        self.accuracy.update_state(labels, probabilities)

    def __call__(self, dataset: tf.data.Dataset) -> dict[str, float]:
        self.loss_mean.reset_state()
        self.accuracy.reset_state()
        for images, labels in dataset:
            self.test_step(images, labels)
        return {"loss": float(self.loss_mean.result()), "accuracy": float(self.accuracy.result())}


class _MonitorCallback(keras.callbacks.Callback):
    """Feeds `fit`'s batches and epochs to the Monitor, and stops at a batch boundary on request."""

    def __init__(self, monitor: Monitor) -> None:
        super().__init__()
        self.monitor = monitor
        self.current_epoch = 0  # 0-based, as Keras counts.
        self.steps_done = 0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.current_epoch, self.steps_done = epoch, 0
        self.monitor.epoch_begin(epoch)

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        # Called once per call into TensorFlow (--steps-per-execution steps), with the logs already converted
        # to Python floats by Keras 3: that is fit's one sync with the host per call.
        self.steps_done = batch + 1
        self.monitor.step_end(self.current_epoch, self.steps_done, (logs or {}).get("loss", float("nan")))
        if self.monitor.stop_requested:
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self.steps_done >= self.monitor.steps_per_epoch:  # Else stopped mid-epoch: not recorded or checkpointed.
            self.monitor.epoch_end(epoch, logs)  # loss, accuracy, val_loss, val_accuracy.


def fit_loop(
    model: keras.Model, optimizer: keras.optimizers.Optimizer, splits: Splits, monitor: Monitor, plan: Plan
) -> None:
    """`model.fit` over epochs plan.first_epoch..epochs-1, validating on test[:N] after each.

    `steps_per_execution` must divide the epoch and the log interval (job.stepping.fit_steps_per_execution).
    With the training set on the device, `fit` trains a wrapper that gathers each batch's images in the step
    (_GatherOnDevice); the model itself is compiled the same way, so what is saved does not differ.
    """
    trained = _GatherOnDevice(model, splits) if splits.on_device else model
    for each in [model] if trained is model else [model, trained]:
        each.compile(
            optimizer=optimizer,
            loss=make_loss(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=plan.jit_compile,
            steps_per_execution=plan.steps_per_execution,
        )
    trained.fit(
        train_epochs(splits, plan.config.seed, plan.first_epoch, plan.config.epochs),
        epochs=plan.config.epochs,
        initial_epoch=plan.first_epoch,
        steps_per_epoch=splits.steps_per_epoch,
        validation_data=splits.validation,
        callbacks=[_MonitorCallback(monitor)],
        shuffle=False,  # Each epoch's batches are already shuffled by job.pipeline.
        verbose=0,
    )


class _GatherOnDevice(keras.Model):
    """The model, fed a batch's indices into the training set on the device (validation batches: images)."""

    def __init__(self, model: keras.Model, splits: Splits) -> None:
        super().__init__(name=f"{model.name}_from_indices")
        self.model_trained = model
        self.splits = splits

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return self.model_trained(self.splits.batch_images(inputs), training=training)


def custom_loop(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    splits: Splits,
    monitor: Monitor,
    metrics: dict[str, keras.metrics.Metric],
    plan: Plan,
    evaluate: Evaluator | None = None,
) -> None:
    """The chapter's GradientTape loop; `metrics` (train_loss, train_accuracy) are checkpointed mid-epoch.

    Written for tf.distribute (it is the plain chapter loop under the default strategy): each replica
    averages its examples' losses over the *global* batch, and the optimizer sums the replicas' gradients.
    Each call runs a chunk of up to plan.steps_per_execution steps that ends wherever the Monitor
    has something to do (job.stepping), so the records, checkpoints and stops land on the same steps.
    """
    strategy = model.distribute_strategy  # The strategy the model was built under (or the default one).
    loss_fn, evaluate = make_loss(reduction=None), evaluate or Evaluator(model)  # The caller's: traced once.
    train_loss, train_accuracy = metrics["train_loss"], metrics["train_accuracy"]

    def replica_step(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            example_losses = loss_fn(labels, probabilities)
            loss = tf.nn.compute_average_loss(example_losses, global_batch_size=splits.batch_size)
            scaled_loss = optimizer.scale_loss(loss)  # Loss scaling under mixed_float16; a no-op otherwise.
        gradients = tape.gradient(scaled_loss, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)
        train_loss.update_state(example_losses)
        train_accuracy.update_state(labels, probabilities)
        return loss

    @tf.function(jit_compile=plan.jit_compile)
    def train_step(batch: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        images_or_indices, labels = batch  # Indices with the training set on the device (single device only).
        replica_losses = strategy.run(replica_step, args=(splits.batch_images(images_or_indices), labels))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, replica_losses, axis=None)

    @tf.function
    def train_steps(iterator: Any, steps: tf.Tensor) -> tf.Tensor:
        """`steps` training steps in one call (a tensor, so every chunk size shares one trace)."""
        batch_loss = tf.constant(0.0)
        for _ in tf.range(steps):
            batch_loss = train_step(next(iterator))
        return batch_loss  # The chunk's last batch loss.

    run_batches = train_epochs(splits, plan.config.seed, plan.first_epoch, plan.config.epochs, plan.first_step)
    iterator = iter(strategy.experimental_distribute_dataset(run_batches))
    for epoch in range(plan.first_epoch, plan.config.epochs):
        step = skip = plan.first_step if epoch == plan.first_epoch else 0
        if not skip:
            train_loss.reset_state()
            train_accuracy.reset_state()
        monitor.epoch_begin(epoch, skip)
        for size in chunks(skip, splits.steps_per_epoch, plan.steps_per_execution, plan.config.checkpoint_every_steps):
            batch_loss = train_steps(iterator, tf.constant(size))
            step += size
            monitor.step_end(epoch, step, train_loss.result(), batch_loss)
            if monitor.stop_requested:
                monitor.stopped_at(epoch, step)  # This loop can resume mid-epoch: keep every step done.
                return
        validation = {f"val_{key}": value for key, value in evaluate(splits.validation).items()}
        monitor.epoch_end(epoch, {"loss": train_loss.result(), "accuracy": train_accuracy.result(), **validation})
