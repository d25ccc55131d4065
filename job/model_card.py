"""The model card: what the exported SavedModel takes and returns, written beside it as JSON and a README.

    <run>/model/model_card.json, <run>/model/README.md   next to model/<version>/ (or, on Vertex AI, next to
                                                         saved_model.pb in AIP_MODEL_DIR itself)

`python -m job predict` reads the card for the class names and the image size; the tests load the SavedModel
in a fresh process and check that its serving signature is exactly what the card says. No TensorFlow here.
"""

from __future__ import annotations

from typing import Any

from job.data import CLASS_NAMES

CARD = "model_card.json"
README = "README.md"
SIGNATURE = "serving_default"
INPUT_NAME = "image"  # The TensorSpec name given to model.export (job.train.publish).
OUTPUT_NAME = "output_0"  # What Keras 3's export names a single output.
CARD_FORMAT = 1  # Bumped when a field changes meaning.


def saved_model_path(version: int | None) -> str:
    """Where the SavedModel is, relative to model/: the version folder, or model/ itself (Vertex AI)."""
    return "." if version is None else str(version)


def build_card(version: int | None, image_size: int, run: dict[str, Any]) -> dict[str, Any]:
    """The card's JSON: the serving signature, the classes in output order, and the run it came from."""
    return {
        "card_format": CARD_FORMAT,
        "format": "tf_saved_model",
        "saved_model": saved_model_path(version),
        "version": version,
        "signature": SIGNATURE,
        "inputs": {
            INPUT_NAME: {
                "dtype": "uint8",
                "shape": [-1, image_size, image_size, 3],
                "description": "RGB pixels 0-255 as stored in a PNG or JPEG, not scaled (the model rescales)",
            }
        },
        "outputs": {
            OUTPUT_NAME: {
                "dtype": "float32",
                "shape": [-1, len(CLASS_NAMES)],
                "description": "class probabilities (softmax, sum 1), in the order of class_names",
            }
        },
        "class_names": list(CLASS_NAMES),
        "run": run,
    }


def render_readme(card: dict[str, Any]) -> str:
    """The card for people: the signature as a table, the classes, and how to serve and query the model."""
    (input_name, spec), (output_name, output) = next(iter(card["inputs"].items())), next(iter(card["outputs"].items()))
    run, version = card["run"], card["version"]
    where = "this folder" if version is None else f"`{version}/` (TF Serving's version folder)"
    # TF Serving loads <model_base_path>/<version>/: this folder is the base, or (Vertex AI's layout) version 1.
    mount = "/models/cifar10" if version is not None else "/models/cifar10/1"
    classes = ", ".join(f"{index} {name}" for index, name in enumerate(card["class_names"]))
    height, width = spec["shape"][1:3]
    lines = [
        f"# CIFAR-10 classifier, run {run.get('run_id')}",
        "",
        f"A TensorFlow SavedModel in {where}, exported by `python -m job train` ({run.get('api')} model, "
        f"{run.get('loop')} loop, {run.get('epochs')} epochs, test accuracy {run.get('test_accuracy', 0):.4f}).",
        "",
        f"Signature `{card['signature']}`:",
        "",
        "| | name | dtype | shape | meaning |",
        "|---|---|---|---|---|",
        f"| input | `{input_name}` | {spec['dtype']} | {spec['shape']} | {spec['description']} |",
        f"| output | `{output_name}` | {output['dtype']} | {output['shape']} | {output['description']} |",
        "",
        f"Classes, in output order: {classes}.",
        "",
        "Serve it with TF Serving (its REST API listens on 8501):",
        "",
        "```",
        f"docker run -p 8501:8501 -v $PWD:{mount} -e MODEL_NAME=cifar10 tensorflow/serving",
        'curl -d \'{"instances": [<' + f"{height}×{width}×3 nested lists of 0-255>]" + "}' \\",
        "  localhost:8501/v1/models/cifar10:predict",
        "```",
        "",
        "or classify images with the job itself: `python -m job predict <this folder> cat.png ship.jpg --top-k 3`.",
        "",
    ]
    return "\n".join(lines)
