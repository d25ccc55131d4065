"""The chapter's network, written twice: as a `keras.Sequential` and as a subclassed `keras.Model`.

Both take raw uint8 pixels and scale them to [0, 1] inside the model, so the exported SavedModel
serves raw images and training is stable (the chapter fed 0-255 pixels to SGD 0.1, which diverges).
The final softmax always computes in float32, even under a mixed-precision policy.
"""

from __future__ import annotations

import keras
from keras import layers

from job.data import NUM_CLASSES

IMAGE_SIZE = 32
OUTPUT_LAYER = "custom_class"  # The chapter's name for the classifier layer.


def build_sequential(image_size: int = IMAGE_SIZE, num_classes: int = NUM_CLASSES) -> keras.Sequential:
    """The symbolic style: conv32 → pool → conv64 → pool → flatten → dense256 → softmax."""
    return keras.Sequential(
        [
            keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="image"),
            layers.Rescaling(1.0 / 255, name="rescale"),
            layers.Conv2D(32, (3, 3), activation="relu", kernel_initializer="glorot_uniform", padding="same"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu", kernel_initializer="glorot_uniform", padding="same"),
            layers.MaxPooling2D((2, 2)),
            layers.Flatten(),
            layers.Dense(256, activation="relu", kernel_initializer="glorot_uniform"),
            layers.Dense(num_classes, activation="softmax", name=OUTPUT_LAYER, dtype="float32"),
        ],
        name="symbolic",
    )


@keras.saving.register_keras_serializable(package="job")
class ConvNet(keras.Model):
    """The imperative style: the same layers as attributes, one pooling layer reused twice in `call`."""

    def __init__(self, input_dim: int = IMAGE_SIZE, num_classes: int = NUM_CLASSES, **kwargs: object) -> None:
        kwargs.setdefault("name", "imperative")
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.num_classes = num_classes
        # Sub-layers follow the model's own dtype policy (saved in its config), so a reloaded model.keras
        # computes in the precision it was trained in, whatever the global policy is at load time.
        policy = self.dtype_policy
        self.rescale = layers.Rescaling(1.0 / 255, name="rescale", dtype=policy)
        self.conv1 = layers.Conv2D(
            32, (3, 3), activation="relu", kernel_initializer="glorot_uniform", padding="same", dtype=policy
        )
        self.pool = layers.MaxPooling2D((2, 2), dtype=policy)
        self.conv2 = layers.Conv2D(
            64, (3, 3), activation="relu", kernel_initializer="glorot_uniform", padding="same", dtype=policy
        )
        self.flatten = layers.Flatten(dtype=policy)
        self.dense = layers.Dense(256, activation="relu", kernel_initializer="glorot_uniform", dtype=policy)
        self.classifier = layers.Dense(num_classes, activation="softmax", name=OUTPUT_LAYER, dtype="float32")

    def call(self, inputs, training=None):  # type: ignore[no-untyped-def]  # Keras' own signature.
        x = self.rescale(inputs)
        x = self.pool(self.conv1(x))
        x = self.pool(self.conv2(x))
        return self.classifier(self.dense(self.flatten(x)))

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "input_dim": self.input_dim, "num_classes": self.num_classes}


def build_imperative(image_size: int = IMAGE_SIZE, num_classes: int = NUM_CLASSES) -> ConvNet:
    """A built `ConvNet` (weights created), ready for `count_params` and `summary`."""
    model = ConvNet(input_dim=image_size, num_classes=num_classes)
    model(keras.ops.zeros((1, image_size, image_size, 3), dtype="uint8"))  # A subclass builds on first call.
    return model


def build_model(api: str, image_size: int = IMAGE_SIZE) -> keras.Model:
    """The chapter's network in the requested style ("symbolic" or "imperative")."""
    return {"symbolic": build_sequential, "imperative": build_imperative}[api](image_size)
