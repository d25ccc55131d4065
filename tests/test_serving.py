"""The exported model as TF Serving and `python -m job predict` use it: model/<version>/, its model card, predictions.

The shared trained runs (tests/conftest.py) are only read; every test writes into its own tmp_path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from job.data import CLASS_NAMES
from job.gcs import GcsStore
from tests.conftest import ROOT, RunJob
from tests.helpers import make_cifar_like

SIGNATURE_SCRIPT = """
import sys, json, numpy as np, tensorflow as tf
report = {}
for folder in sys.argv[2:]:
    serving = tf.saved_model.load(folder).signatures["serving_default"]
    spec = lambda s: {"dtype": s.dtype.name, "shape": [-1 if d is None else d for d in s.shape.as_list()]}
    images = np.load(sys.argv[1])["x"]
    output = serving(image=tf.constant(images))
    report[folder] = {
        "inputs": {name: spec(s) for name, s in serving.structured_input_signature[1].items()},
        "outputs": {name: spec(s) for name, s in serving.structured_outputs.items()},
        "classes": [int(c) for c in np.argmax(next(iter(output.values())).numpy(), axis=1)],
    }
print(json.dumps(report))
"""


def saved_model_report(images: Path, *folders: Path) -> dict[str, Any]:
    """Load each SavedModel in a fresh process (no job code imported): its signature and its classes for images."""
    result = subprocess.run(
        [sys.executable, "-c", SIGNATURE_SCRIPT, str(images), *map(str, folders)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], np.ndarray]:
    """12 generated test-set-like images as PNGs, and the same pixels as images.npz (array x)."""
    folder = tmp_path_factory.mktemp("pictures")
    images = make_cifar_like(train_size=10, test_size=12, seed=5).x_test
    paths = []
    for index, image in enumerate(images):
        paths.append(folder / f"image-{index:02d}.png")
        Image.fromarray(image).save(paths[-1])
    np.savez(folder / "images.npz", x=images)
    return folder / "images.npz", paths, images


@pytest.mark.slow
def test_a_fresh_process_loads_model_version_1_whose_signature_and_predictions_match_the_card_and_predict(
    trained_runs: dict[str, Path], run_job: RunJob, pictures: tuple[Path, list[Path], np.ndarray]
) -> None:
    npz, pngs, _ = pictures
    runs = [trained_runs["symbolic-fit"], trained_runs["imperative-custom"]]
    report = saved_model_report(npz, *(run / "model" / "1" for run in runs))
    for run in runs:
        card = json.loads((run / "model" / "model_card.json").read_text())
        served = report[str(run / "model" / "1")]
        assert (card["version"], card["saved_model"], card["signature"]) == (1, "1", "serving_default")
        assert {name: {"dtype": s["dtype"], "shape": s["shape"]} for name, s in card["inputs"].items()} == served[
            "inputs"
        ]
        assert {name: {"dtype": s["dtype"], "shape": s["shape"]} for name, s in card["outputs"].items()} == served[
            "outputs"
        ]
        assert card["class_names"] == list(CLASS_NAMES) and card["run"]["run_id"] == run.name
        readme = (run / "model" / "README.md").read_text()
        assert "`image` | uint8 | [-1, 32, 32, 3]" in readme and "9 truck" in readme

    run = runs[0]
    result = run_job("predict", str(run), *map(str, pngs), str(npz), "--top-k", "3", "--format", "json")
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)["predictions"]
    expected = report[str(run / "model" / "1")]["classes"]
    assert [p["input"] for p in predictions] == [*map(str, pngs), *(f"{npz}[{i}]" for i in range(12))]
    assert [p["top"][0]["index"] for p in predictions] == expected * 2  # The PNGs, then the same pixels in the .npz.
    assert all(p["top"][0]["class"] == CLASS_NAMES[p["top"][0]["index"]] for p in predictions)
    assert all(len(p["top"]) == 3 and p["top"][0]["probability"] >= p["top"][1]["probability"] for p in predictions)
    assert len(set(expected)) > 1  # The model tells the generated classes apart, so equal classes mean something.


@pytest.mark.slow
def test_predict_reads_the_model_and_images_from_cloud_storage_and_prints_one_line_per_image(
    trained_runs: dict[str, Path], run_job: RunJob, gcs_bucket: str, pictures: tuple[Path, list[Path], np.ndarray]
) -> None:
    run = trained_runs["symbolic-fit"]
    GcsStore(gcs_bucket, "runs/r1/model").upload_tree("", run / "model")
    GcsStore(gcs_bucket, "inputs").upload_file("cat.png", pictures[1][0])
    local = run_job("predict", str(run / "model" / "1"), str(pictures[1][0]))
    remote = run_job("predict", f"gs://{gcs_bucket}/runs/r1", f"gs://{gcs_bucket}/inputs/cat.png", "--top-k", "2")
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    name, top = local.stdout.strip().split("\t")
    assert name == str(pictures[1][0]) and top.split()[0] in CLASS_NAMES and len(local.stdout.splitlines()) == 1
    remote_name, remote_top = remote.stdout.strip().split("\t")
    assert remote_name == f"gs://{gcs_bucket}/inputs/cat.png" and remote_top.startswith(top.split(",")[0])
    assert len(remote_top.split(", ")) == 2


def bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files a user (or whoever wrote the bucket) might hand predict, and the line each must get."""
    (folder / "not-an-image.png").write_bytes(np.random.default_rng(0).bytes(2000))
    np.savez(folder / "objects.npz", x=np.array([{"a": 1}, None], dtype=object))
    np.savez(folder / "floats.npz", x=np.zeros((2, 32, 32, 3), dtype=np.float32))
    np.savez(folder / "two-arrays.npz", images=np.zeros((1, 32, 32, 3), np.uint8), labels=np.zeros(1))
    (folder / "truncated.npz").write_bytes((folder / "floats.npz").read_bytes()[:100])
    return {
        "not-an-image": (folder / "not-an-image.png", "is not a readable PNG or JPEG image"),
        "object-array": (folder / "objects.npz", "x holds Python objects (dtype object), which are never unpickled"),
        "float-pixels": (folder / "floats.npz", "x is float32 [2, 32, 32, 3], not uint8 N×H×W×3"),
        "unnamed-arrays": (folder / "two-arrays.npz", "holds images, labels: put the images in an array named x"),
        "truncated-npz": (folder / "truncated.npz", "is not a readable .npz"),
        "missing": (folder / "nowhere.png", "does not exist or is not a file"),
    }


def test_bad_inputs_exit_3_with_one_line_before_tensorflow_loads(
    run_job: RunJob, without_tensorflow: dict[str, str], tmp_path: Path
) -> None:
    for case, (path, message) in bad_inputs(tmp_path).items():
        result = run_job("predict", str(tmp_path), str(path), env=without_tensorflow)
        assert result.returncode == 3, (case, result.stderr)
        assert result.stderr.startswith(f"error: input {path}") and message in result.stderr, (case, result.stderr)
        assert len(result.stderr.splitlines()) == 1, (case, result.stderr)


def test_a_folder_without_a_saved_model_and_a_bad_top_k_exit_2(
    run_job: RunJob, without_tensorflow: dict[str, str], tmp_path: Path, pictures: tuple[Path, list[Path], np.ndarray]
) -> None:
    empty = run_job("predict", str(tmp_path), str(pictures[1][0]), env=without_tensorflow)
    assert empty.returncode == 2 and empty.stderr.startswith(f"error: {tmp_path} holds no SavedModel"), empty.stderr
    top_k = run_job("predict", str(tmp_path), str(pictures[1][0]), "--top-k", "11", env=without_tensorflow)
    assert top_k.returncode == 2 and "--top-k must be from 1 to 10" in top_k.stderr, top_k.stderr


@pytest.mark.slow
def test_an_image_of_another_size_exits_3_without_a_traceback(
    trained_runs: dict[str, Path], run_job: RunJob, tmp_path: Path, pictures: tuple[Path, list[Path], np.ndarray]
) -> None:
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(tmp_path / "small.jpg")
    model = tmp_path / "model"  # A copy: the shared run is never written.
    shutil.copytree(trained_runs["symbolic-fit"] / "model", model)
    result = run_job("predict", str(model), str(pictures[1][0]), str(tmp_path / "small.jpg"))
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"error: input {tmp_path / 'small.jpg'} is 24×16 pixels, the model takes 32×32: resize it first "
        "(the job does not resize: it would change what the model sees)"
    )
    assert "Traceback" not in result.stderr and result.stdout == ""
