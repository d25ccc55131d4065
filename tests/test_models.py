"""Both styles build the chapter's network: same layers, 1,070,794 parameters, raw uint8 in, probabilities out."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from job import models

CHAPTER_PARAMETERS = 1_070_794


def layer_signature(model: keras.Model) -> list[tuple[str, tuple[tuple[int, ...], ...], object]]:
    """(layer type, weight shapes, activation) for each layer, in order of use."""
    signature = []
    for layer in model.layers:
        shapes = tuple(tuple(weight.shape) for weight in layer.weights)
        activation = getattr(getattr(layer, "activation", None), "__name__", None)
        signature.append((type(layer).__name__, shapes, activation))
    return signature


def test_both_styles_have_the_chapters_parameter_count() -> None:
    assert models.build_sequential().count_params() == CHAPTER_PARAMETERS
    assert models.build_imperative().count_params() == CHAPTER_PARAMETERS
    trainable = sum(int(np.prod(weight.shape)) for weight in models.build_imperative().trainable_weights)
    assert trainable == CHAPTER_PARAMETERS


def test_both_styles_have_the_same_layer_structure() -> None:
    sequential = layer_signature(models.build_sequential())
    imperative = layer_signature(models.build_imperative())
    # The subclass holds one MaxPooling2D and calls it twice; drop the Sequential's second one to compare.
    pools = [index for index, layer in enumerate(sequential) if layer[0] == "MaxPooling2D"]
    assert len(pools) == 2
    assert sequential[: pools[1]] + sequential[pools[1] + 1 :] == imperative
    assert sequential[-1] == ("Dense", ((256, 10), (10,)), "softmax")


def test_imperative_model_reuses_one_pooling_layer() -> None:
    model = models.build_imperative()
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(pools) == 1
    assert model.input_dim == 32


def test_output_layer_is_named_custom_class() -> None:
    assert models.build_sequential().layers[-1].name == "custom_class"
    assert models.build_imperative().classifier.name == "custom_class"


def test_imperative_model_builds_for_64_pixel_images() -> None:
    model = models.build_imperative(64)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    probabilities = np.asarray(model(images))
    assert probabilities.shape == (2, 10)
    # 64×64 input: the first dense layer sees 16·16·64 features instead of 8·8·64.
    assert model.count_params() == CHAPTER_PARAMETERS + (16 * 16 - 8 * 8) * 64 * 256


@pytest.mark.parametrize("api", ["symbolic", "imperative"])
def test_models_take_raw_pixels_and_return_probabilities(api: str) -> None:
    model = models.build_model(api)
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    probabilities = np.asarray(model(images))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # Scaling happens inside: the same images as floats 0-255 give the same output.
    np.testing.assert_allclose(np.asarray(model(images.astype("float32"))), probabilities, rtol=1e-5)


def test_softmax_stays_float32_under_mixed_precision() -> None:
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        for api in ("symbolic", "imperative"):
            model = models.build_model(api)
            output = model(np.zeros((1, 32, 32, 3), np.uint8))
            assert output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
