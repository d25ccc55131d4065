"""Pictures of the data and of a run: PNG files in a local folder, drawn with matplotlib's Agg backend.

The chapter looks at its data before training (label counts, 25 sample images), at its model
(`plot_model(..., show_shapes=True)`, `model.summary()`) and at its curves after. Each `plot_*` function
takes arrays, records or a model and writes one file. `write_data_plots` and `write_run_plots` are what
the trainer calls: they never raise, because a missing Graphviz or a drawing bug must not cost a run.
matplotlib and Keras are imported inside the functions, so `python -m job --help` stays fast.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from job import metrics, stopping
from job.artifacts import CONFIG, METRICS, parse_json
from job.data import CLASS_NAMES, Cifar10, label_counts
from job.metrics import last_records
from job.progress import Reporter
from job.storage import LocalStore

if TYPE_CHECKING:
    import keras
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FOLDER = "plots"  # The run's sub-folder for everything below.
LABEL_DISTRIBUTION = "label_distribution.png"
SAMPLE_GRID = "sample_grid.png"
MODEL_DIAGRAM = "model.png"
MODEL_SUMMARY = "model_summary.txt"
LEARNING_CURVES = "learning_curves.png"
SAMPLE_SEED = 2  # The chapter seeds `random` with 2 before sampling its 25 training images.
GRID_SIDE = 5
DPI = 100


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend (no display needed), imported only when drawing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    pyplot().close(figure)
    return path


def describe_balance(counts: dict[str, int]) -> str:
    """Either 'balanced (50 per class)' or 'unbalanced: cat 10 … dog 90' (the smallest and largest class)."""
    if len(set(counts.values())) <= 1:
        return f"balanced ({next(iter(counts.values()), 0)} per class)"
    smallest, largest = min(counts, key=counts.__getitem__), max(counts, key=counts.__getitem__)
    return f"unbalanced: {smallest} {counts[smallest]} … {largest} {counts[largest]}"


def plot_label_distribution(train_counts: dict[str, int], test_counts: dict[str, int], path: Path) -> Path:
    """Side-by-side bars per class: the chapter's `np.unique(y, return_counts=True)` for train and test."""
    figure, axes = pyplot().subplots(figsize=(10, 4.5))
    positions = np.arange(len(train_counts))
    for offset, split, counts in ((-0.2, "train", train_counts), (0.2, "test", test_counts)):
        bars = axes.bar(positions + offset, [counts[name] for name in train_counts], width=0.4, label=split)
        axes.bar_label(bars, fontsize=7)
    axes.set_xticks(positions, list(train_counts), rotation=30)
    axes.set_ylim(0, 1.2 * max([*train_counts.values(), *test_counts.values(), 1]))  # Room for the legend.
    axes.set_ylabel("images")
    axes.set_title(
        f"Label distribution: train {sum(train_counts.values())} images, {describe_balance(train_counts)}; "
        f"test {sum(test_counts.values())}, {describe_balance(test_counts)}",
        fontsize=10,
    )
    axes.legend(ncols=2, loc="upper right")
    return save(figure, path)


def sample_indices(count: int, seed: int = SAMPLE_SEED, size: int = GRID_SIDE * GRID_SIDE) -> list[int]:
    """The chapter's `random.seed(2); random.sample(range(len(x_train)), 25)`, without touching global state."""
    return random.Random(seed).sample(range(count), min(size, count))


def plot_sample_grid(images: np.ndarray, labels: np.ndarray, path: Path, seed: int = SAMPLE_SEED) -> Path:
    """A 5×5 grid of seeded random training images, the class name under each: one mosaic in one Axes (25
    Axes in a constrained layout took 0.55 s of publishing, this 0.17 s)."""
    indices = sample_indices(len(images), seed)
    size = images.shape[1]
    width, height = size + size // 8, size + size * 2 // 5  # Each cell: the image, a gap, room for its name.
    mosaic = np.full((GRID_SIDE * height, GRID_SIDE * width, 3), 255, np.uint8)
    figure, axes = pyplot().subplots(
        figsize=(8, 8 * height / width + 0.4), gridspec_kw={"top": 0.95, "bottom": 0, "left": 0, "right": 1}
    )
    for position, index in enumerate(indices):
        top, left = position // GRID_SIDE * height, position % GRID_SIDE * width
        mosaic[top : top + size, left : left + size] = images[index]
        name = CLASS_NAMES[int(labels.reshape(-1)[index])]
        axes.text(left + size / 2, top + size + 1, name, ha="center", va="top", fontsize=10)
    axes.imshow(mosaic)
    axes.set_axis_off()
    figure.suptitle(f"{len(indices)} of {len(images)} training images (random.sample, seed {seed})")
    return save(figure, path)


def diagram_model(model: keras.Model, image_size: int) -> keras.Model:
    """The model as a layer graph: Keras draws a subclassed model as one box, so trace its `call` first."""
    import keras

    if isinstance(model, keras.Sequential) or type(model).__name__ == "Functional":
        return model
    inputs = keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="image")
    return keras.Model(inputs, model.call(inputs), name=f"{model.name}_call_traced")


def plot_model_diagram(model: keras.Model, path: Path, image_size: int) -> Path:
    """`keras.utils.plot_model(show_shapes=True)`; needs pydot and Graphviz's `dot` on PATH."""
    import keras

    if shutil.which("dot") is None:
        raise RuntimeError("Graphviz's `dot` is not on PATH (apt-get install graphviz)")
    path.parent.mkdir(parents=True, exist_ok=True)
    keras.utils.plot_model(
        diagram_model(model, image_size),
        to_file=str(path),
        show_shapes=True,
        show_layer_names=True,
        show_layer_activations=True,
        dpi=DPI,
    )
    return path


def write_model_summary(model: keras.Model, path: Path) -> Path:
    """`model.summary()` as text (Keras' table, without terminal colour codes)."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line))  # A line_length below ~100 drops columns.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


Records = Sequence[Mapping[str, Any]]  # metrics.jsonl records (job.metrics), or any with the keys drawn.


def plot_learning_curves(records: Records, path: Path, title: str = "", steps_per_epoch: int | None = None) -> Path:
    """Train and validation loss and accuracy per epoch, plus the per-100-step loss when steps were logged."""
    epochs, steps = last_records(records, "epoch"), last_records(records, "step")
    panels = 3 if steps and steps_per_epoch else 2
    figure, axes = pyplot().subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False, layout="constrained")
    numbers = [record["epoch"] for record in epochs]
    for panel, metric in zip(axes[0], ("loss", "accuracy"), strict=False):
        panel.plot(numbers, [record[metric] for record in epochs], marker="o", label="train")
        panel.plot(numbers, [record[f"val_{metric}"] for record in epochs], marker="o", label="validation")
        panel.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch")
        panel.xaxis.get_major_locator().set_params(integer=True)
        panel.legend()
        panel.grid(alpha=0.3)
    if panels == 3 and steps_per_epoch:
        plot_step_loss(axes[0][2], steps, steps_per_epoch)
    figure.suptitle(title)
    return save(figure, path)


def plot_step_loss(panel: Axes, steps: Records, steps_per_epoch: int) -> None:
    """The custom loop's loss every 100 steps: the running epoch mean, and the batch's own loss."""
    global_steps = [(record["epoch"] - 1) * steps_per_epoch + record["step"] for record in steps]
    panel.plot(global_steps, [record["loss"] for record in steps], marker=".", label="running mean of the epoch")
    if any("batch_loss" in record for record in steps):
        batch = [record.get("batch_loss", np.nan) for record in steps]
        panel.plot(global_steps, batch, marker=".", linestyle=":", label="batch")
    panel.set(xlabel="step", ylabel="loss", title="training loss every 100 steps")
    panel.legend()
    panel.grid(alpha=0.3)


def plot_compare(curves: Mapping[str, Records], path: Path) -> Path:
    """Validation accuracy per epoch of several runs on one axis: do the two styles train alike?"""
    figure, axes = pyplot().subplots(figsize=(7, 4.5))
    for index, (label, epochs) in enumerate(curves.items()):
        # Runs with the same seed can coincide exactly: shrinking markers and varied dashes keep each visible.
        style = {"linestyle": ("-", "--", ":", "-.")[index % 4], "marker": "osD^v"[index % 5]}
        numbers, accuracy = [record["epoch"] for record in epochs], [record["val_accuracy"] for record in epochs]
        axes.plot(numbers, accuracy, label=label, markersize=max(9 - 2 * index, 3), **style)
    axes.set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy per epoch")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return save(figure, path)


def attempt(reporter: Reporter, what: str, draw: Callable[[], Path]) -> Path | None:
    """Draw one picture; on any failure warn and carry on (a picture is never worth a failed run).

    A stop requested while drawing (job.stopping) ends the run after the picture, with the retryable exit.
    """
    try:
        picture: Path | None = draw()
    except Exception as error:  # Graphviz, fonts, odd data: none of it may stop training.
        reporter.warning(f"skipped {what}: {type(error).__name__}: {error}")
        picture = None
    stopping.raise_if_requested("while drawing pictures")
    return picture


def write_data_plots(dataset: Cifar10, folder: Path, reporter: Reporter) -> list[Path]:
    """The label distribution and the sample grid (drawn when the run publishes, job.train)."""
    folder.mkdir(parents=True, exist_ok=True)
    train, test = label_counts(dataset.y_train), label_counts(dataset.y_test)
    drawn = [
        attempt(reporter, "label distribution", lambda: plot_label_distribution(train, test, folder / LABEL_DISTRIBUTION)),
        attempt(reporter, "sample grid", lambda: plot_sample_grid(dataset.x_train, dataset.y_train, folder / SAMPLE_GRID)),
    ]  # fmt: skip
    return [path for path in drawn if path is not None]


def write_run_plots(run_folder: Path, model: keras.Model, reporter: Reporter) -> list[Path]:
    """Model diagram and summary, and learning curves from the run folder's own config.json and metrics.jsonl."""
    folder = run_folder / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    files = LocalStore(run_folder)
    config = parse_json(files.read_bytes(CONFIG)) or {}  # Empty when unreadable.
    records, _ = metrics.decode(files.read_bytes(METRICS) or b"")  # Epochs and steps.
    title = f"{config.get('api')} model, {config.get('loop')} loop ({config.get('run_id', run_folder.name)})"
    image_size = int(config.get("data", {}).get("image_size", 32))
    drawn = [
        attempt(reporter, "model summary", lambda: write_model_summary(model, folder / MODEL_SUMMARY)),
        attempt(reporter, "model diagram", lambda: plot_model_diagram(model, folder / MODEL_DIAGRAM, image_size)),
        attempt(reporter, "learning curves", lambda: plot_learning_curves(
            records, folder / LEARNING_CURVES, title, config.get("steps_per_epoch"))),
    ]  # fmt: skip
    return [path for path in drawn if path is not None]
