"""`python -m job predict RUN_OR_MODEL IMAGE...`: classify PNG or JPEG images, or an .npz of them, with a SavedModel.

    python -m job predict runs/symbolic-fit-20261126T153000Z-3f9a cat.png ship.jpg --top-k 3
    python -m job predict gs://my-bucket/runs/r1/model/1 gs://my-bucket/batch.npz --format json

RUN_OR_MODEL is a run folder, its model/ folder (the highest version in it is used), a version folder, or any
SavedModel folder, local or gs://. Images are untrusted input (docs/security.md): every one is read from its
header and bounded before it is decoded, and an .npz is read with allow_pickle=False. Exit codes: 0; 2 bad
flags or no SavedModel at RUN_OR_MODEL; 3 an image or .npz that is missing, unreadable, not PNG/JPEG/.npz, of
another size than the model takes, or not uint8 pixels; 4 a bucket that cannot be read. TensorFlow is imported
only once every input has passed its header checks.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from job.errors import DataError, UsageError
from job.storage import LocalStore, check_out, open_store
from job.untrusted import MAX_DATA_BYTES, check_size, npy_header
from job.uri import is_gcs, parse_gcs_url

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

MAX_IMAGE_BYTES = 16 << 20  # A 32×32 PNG is about 3 KB; anything near this is not a CIFAR-sized image.
IMAGE_FORMATS = ("PNG", "JPEG")
NPZ_KEY = "x"  # The images of an .npz: the array named x, or its only array.
SAVED_MODEL_FILE = "saved_model.pb"
BATCH = 256


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


@dataclass
class Source:
    """One input file, header-checked: an image (not yet decoded) or an .npz array (not yet inflated)."""

    name: str
    labels: list[str]  # One per image: the name, or name[i] for each image of an N×H×W×3 array.
    image: Image.Image | None = None
    npz: tuple[zipfile.ZipFile, str, tuple[int, ...]] | None = None  # archive, member, shape


def predict(
    run_or_model: Annotated[
        str, typer.Argument(help="A run folder, its model/ folder or a SavedModel; local or gs://.")
    ],
    images: Annotated[
        list[str], typer.Argument(metavar="IMAGE...", help="PNG or JPEG files, or .npz files of uint8 N×H×W×3 images.")
    ],
    top_k: Annotated[int, typer.Option(help="Print the K most probable classes per image.")] = 1,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="text lines or one JSON document.")] = (
        OutputFormat.text
    ),
) -> None:
    """Classify images with a trained model: class name and probability per image."""
    if not 1 <= top_k <= 10:
        raise UsageError(f"--top-k must be from 1 to 10 (CIFAR-10 has 10 classes), got {top_k}")
    sources = [read_source(location) for location in images]  # Exit 3 on the first bad one, before TensorFlow.
    with tempfile.TemporaryDirectory(prefix="cifar10-predict-") as scratch:
        folder, card = locate_saved_model(run_or_model, Path(scratch))
        classify, size, class_names = load_model(folder, card, run_or_model)
        probabilities = classify(decode(sources, size))
    labels = [label for source in sources for label in source.labels]
    results = [top_classes(row, class_names, top_k) for row in probabilities]
    if output_format == OutputFormat.json:
        predictions = [{"input": label, "top": top} for label, top in zip(labels, results, strict=True)]
        typer.echo(json.dumps({"model": run_or_model, "predictions": predictions}, indent=2))
        return
    for label, top in zip(labels, results, strict=True):
        typer.echo(f"{label}\t" + ", ".join(f"{entry['class']} {entry['probability']:.4f}" for entry in top))


def top_classes(row: np.ndarray, class_names: list[str], k: int) -> list[dict[str, Any]]:
    order = sorted(range(len(row)), key=lambda index: -float(row[index]))[:k]
    return [{"class": class_names[index], "index": index, "probability": float(row[index])} for index in order]


def read_bytes(location: str, limit: int) -> bytes:
    """The file's bytes, local or gs://, refused (exit 3) when missing or larger than limit, before reading it."""
    if is_gcs(location):
        from job.gcs import gcs_errors, make_client, request_options

        bucket_name, name = parse_gcs_url(location)
        with gcs_errors("reading", location, bucket_name, DataError):
            request = request_options()  # One retry budget for both requests.
            blob = make_client(DataError).bucket(bucket_name).get_blob(name, **request)
            if blob is None:
                raise DataError(f"input {location} does not exist: pass PNG or JPEG files or an .npz")
            check_size(blob.size or 0, limit, location, DataError)
            return bytes(blob.download_as_bytes(**request))
    path = Path(location).expanduser()
    if not path.is_file():
        raise DataError(f"input {location} does not exist or is not a file: pass PNG or JPEG files or an .npz")
    check_size(path.stat().st_size, limit, location, DataError)
    return path.read_bytes()


def read_source(location: str) -> Source:
    if location.endswith(".npz"):
        return read_npz_header(location, read_bytes(location, MAX_DATA_BYTES))
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = 1 << 24  # Pillow refuses images declaring 2× this (a decompression bomb) at open.

    data = read_bytes(location, MAX_IMAGE_BYTES)
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # Reads the header only.
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as error:
        raise DataError(
            f"input {location} is not a readable PNG or JPEG image ({error}): pass PNG, JPEG or .npz files"
        ) from None
    return Source(location, [location], image=image)


def read_npz_header(location: str, data: bytes) -> Source:
    """The images array's shape and dtype, from its .npy header: nothing is inflated, and no pickle is ever read."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [name.removesuffix(".npy") for name in archive.namelist()]
        key = NPZ_KEY if NPZ_KEY in members else (members[0] if len(members) == 1 else None)
        if key is None:
            raise DataError(
                f"input {location} holds {', '.join(members) or 'no arrays'}: put the images in an array named x"
            )
        member = f"{key}.npy" if f"{key}.npy" in archive.namelist() else key
        with archive.open(member) as stream:
            shape, _, dtype = npy_header(stream)  # Raises on a malformed header.
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise DataError(f"input {location} is not a readable .npz ({error}): save it with numpy.savez") from None
    if dtype.hasobject:
        raise DataError(
            f"input {location}: {key} holds Python objects (dtype {dtype}), which are never unpickled: "
            "save the pixels as a uint8 array"
        )
    if dtype != "uint8" or len(shape) not in (3, 4) or shape[-1] != 3:
        raise DataError(
            f"input {location}: {key} is {dtype} {list(shape)}, not uint8 N×H×W×3 (or H×W×3) RGB pixels 0-255: "
            "convert it with .astype(numpy.uint8)"
        )
    if math.prod(shape) > MAX_DATA_BYTES:  # All of CIFAR-10 decoded is 184 MB.
        raise DataError(f"input {location}: {key} declares {math.prod(shape):,} bytes, more than any batch of images")
    labels = [f"{location}[{index}]" for index in range(shape[0])] if len(shape) == 4 else [location]
    return Source(location, labels, npz=(archive, member, tuple(shape)))


def decode(sources: list[Source], size: tuple[int, int]) -> np.ndarray:
    """All inputs as one uint8 N×H×W×3 batch; a source of another size is refused before it is decoded."""
    import numpy as np

    height, width = size
    arrays = []
    for source in sources:
        if source.image is not None:
            if source.image.size != (width, height):
                raise DataError(
                    f"input {source.name} is {source.image.size[0]}×{source.image.size[1]} pixels, the model takes "
                    f"{width}×{height}: resize it first (the job does not resize: it would change what the model sees)"
                )
            try:
                arrays.append(np.asarray(source.image.convert("RGB"), dtype=np.uint8)[None])
            except (OSError, ValueError) as error:
                raise DataError(f"input {source.name} is a damaged image ({error}): re-export it") from None
            continue
        assert source.npz is not None
        archive, member, shape = source.npz
        if tuple(shape[-3:-1]) != (height, width):
            raise DataError(
                f"input {source.name} holds {shape[-3]}×{shape[-2]} images, the model takes {height}×{width}: "
                "resize them first"
            )
        try:
            with archive.open(member) as stream:  # The header's shape was checked: the reshape cannot fail.
                arrays.append(np.lib.format.read_array(stream, allow_pickle=False).reshape(-1, height, width, 3))
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise DataError(f"input {source.name} is a damaged .npz ({error}): save it again") from None
    return np.concatenate(arrays)


def find_saved_model(keys: set[str]) -> str | None:
    """The SavedModel folder among these file names: "" (the top itself), model, or their highest version folder."""
    for folder, prefix in (("", ""), ("model", "model/")):
        if f"{prefix}{SAVED_MODEL_FILE}" in keys:
            return folder
        version = re.compile(re.escape(prefix) + r"([0-9]+)/" + re.escape(SAVED_MODEL_FILE))
        versions = [int(match[1]) for key in keys if (match := version.fullmatch(key))]
        if versions:
            return f"{prefix}{max(versions)}"
    return None


def locate_saved_model(location: str, scratch: Path) -> tuple[Path, dict[str, Any] | None]:
    """A local SavedModel folder (a gs:// one is checked out into scratch) and its model card, if it has one.

    The card is the SavedModel's own or its parent's (model/model_card.json, beside the version folders); it only
    names classes (the signature is checked), so one that is not a JSON object is ignored.
    """
    from job.artifacts import parse_json
    from job.model_card import CARD

    # Any other scheme is a local path here (that holds no SavedModel), not open_store's unsupported *output*.
    store = open_store(location) if is_gcs(location) else LocalStore(Path(location))
    keys = set(store.list_keys())
    folder = find_saved_model(keys)
    if folder is None:
        raise UsageError(
            f"{location} holds no SavedModel (no saved_model.pb in it, in model/ or in a version folder model/N/): "
            "pass a finished run folder, its model/ folder or a SavedModel folder"
        )
    staging = store.staging(scratch / "saved_model")  # A local store's own folder: nothing is copied.
    card_keys = {f"{folder}/{CARD}".lstrip("/"), f"{folder.rpartition('/')[0]}/{CARD}".lstrip("/")}
    check_out(store, staging, trees=[folder], files=sorted(card_keys & keys))
    saved = staging / folder
    cards = [saved / CARD, saved.parent / CARD]
    return saved, parse_json(next((card.read_bytes() for card in cards if card.is_file()), None))


def load_model(folder: Path, card: dict[str, Any] | None, location: str) -> tuple[Any, tuple[int, int], list[str]]:
    """The serving function, the image size it takes and the class names for its outputs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from job.data import CLASS_NAMES

    try:
        serving = tf.saved_model.load(str(folder)).signatures["serving_default"]
    except (OSError, ValueError, KeyError, tf.errors.OpError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"{location}: the SavedModel cannot be loaded or has no serving_default ({reason})") from None
    ((input_name, spec),) = serving.structured_input_signature[1].items()
    if spec.dtype != tf.uint8 or spec.shape.rank != 4 or None in spec.shape[1:3]:
        raise UsageError(f"{location}: serving_default takes {spec.dtype.name} {spec.shape}, not uint8 N×H×W×3 images")
    names = card.get("class_names") if card else None
    class_names = names if isinstance(names, list) and all(isinstance(n, str) for n in names) else list(CLASS_NAMES)

    def classify(images: np.ndarray) -> np.ndarray:
        import numpy as np

        rows = []
        for start in range(0, len(images), BATCH):
            outputs = serving(**{input_name: tf.constant(images[start : start + BATCH])})
            rows.append(next(iter(outputs.values())).numpy())
        probabilities = np.concatenate(rows)
        if probabilities.shape[1] != len(class_names):
            raise UsageError(
                f"{location}: the model returns {probabilities.shape[1]} scores for {len(class_names)} classes"
            )
        return probabilities

    return classify, (int(spec.shape[1]), int(spec.shape[2])), class_names


def register(app: typer.Typer) -> None:
    """Add `predict` to the CLI."""
    app.command("predict")(predict)
