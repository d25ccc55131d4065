"""The pictures: each PNG decodes at a sane size, draws the numbers it was given, and never fails a run."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from job import plots, stopping, visualize
from job.data import Cifar10, label_counts
from job.errors import Interrupted
from job.progress import Reporter
from tests.conftest import RunJob
from tests.helpers import ROOT, job_env, make_cifar_like, write_tarball

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


def image_size(path: Path) -> tuple[int, int]:
    """Decode the whole PNG (not just its header), check it shows something, and return (width, height).

    A blank or nearly blank picture fails: at least 2% of its pixels differ from the background (the most
    common colour) and it has at least 16 colours (lines, labels and antialiasing, not one flat fill).
    """
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        pixels = image.convert("RGB")
        colours = pixels.getcolors(maxcolors=1 << 20) or []
        background = max(count for count, _ in colours)
        total = pixels.width * pixels.height
        assert len(colours) >= 16 and (total - background) / total >= 0.02, (path.name, len(colours), background)
        return image.size


def assert_sane_png(path: Path, min_width: int = 300, min_height: int = 200) -> tuple[int, int]:
    width, height = image_size(path)
    assert min_width <= width <= 5000 and min_height <= height <= 5000, (path.name, width, height)
    return width, height


def epoch_record(epoch: int, accuracy: float) -> dict[str, Any]:
    return {"kind": "epoch", "epoch": epoch, "loss": 2.0 / epoch, "accuracy": accuracy,
            "val_loss": 2.1 / epoch, "val_accuracy": accuracy - 0.05}  # fmt: skip


def test_label_distribution_is_a_bar_chart_png(tmp_path: Path) -> None:
    train = {name: 5000 for name in ("airplane", "automobile", "bird", "cat", "deer")}
    assert_sane_png(plots.plot_label_distribution(train, train, tmp_path / "labels.png"), min_width=600)


def test_balance_is_described_and_an_unbalanced_set_is_named() -> None:
    assert plots.describe_balance({"cat": 50, "dog": 50}) == "balanced (50 per class)"
    assert plots.describe_balance({"cat": 10, "dog": 90, "frog": 50}) == "unbalanced: cat 10 … dog 90"


def test_sample_grid_samples_like_the_chapter(tmp_path: Path) -> None:
    """`random.seed(2); random.sample(range(n), 25)`, without touching the global random state."""
    random.seed(2)
    assert plots.sample_indices(500) == random.sample(range(500), 25)
    data = make_cifar_like(train_size=60, test_size=10)
    assert_sane_png(plots.plot_sample_grid(data.x_train, data.y_train, tmp_path / "grid.png"), 500, 500)
    assert visualize.SAMPLE_SEED == plots.SAMPLE_SEED


def test_sample_grid_with_fewer_than_25_images(tmp_path: Path) -> None:
    data = make_cifar_like(train_size=7, test_size=3)
    assert plots.sample_indices(7) == random.Random(2).sample(range(7), 7)
    assert_sane_png(plots.plot_sample_grid(data.x_train, data.y_train, tmp_path / "grid.png"))


def test_learning_curves_add_the_step_loss_panel_when_steps_were_logged(tmp_path: Path) -> None:
    epochs = [epoch_record(1, 0.4), epoch_record(2, 0.5), epoch_record(2, 0.55)]  # A resumed epoch 2 wins.
    steps = [
        {"kind": "step", "epoch": epoch, "step": step, "loss": 2.0 - epoch / 10, "batch_loss": 1.9}
        for epoch in (1, 2)
        for step in (100, 200)
    ]
    two = plots.plot_learning_curves(epochs, tmp_path / "epochs.png", "no steps", steps_per_epoch=250)
    three = plots.plot_learning_curves(epochs + steps, tmp_path / "steps.png", "with steps", steps_per_epoch=250)
    assert assert_sane_png(three)[0] > 1.3 * assert_sane_png(two)[0]
    assert [record["accuracy"] for record in plots.last_records(epochs, "epoch")] == [0.4, 0.55]


def test_compare_plot_overlays_runs(tmp_path: Path) -> None:
    curves = {"a": [epoch_record(1, 0.3), epoch_record(2, 0.4)], "b": [epoch_record(1, 0.3), epoch_record(2, 0.4)]}
    assert_sane_png(plots.plot_compare(curves, tmp_path / "compare.png"))


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    from job.models import build_model

    return {api: build_model(api) for api in ("symbolic", "imperative")}


@needs_dot
@pytest.mark.parametrize("api", ["symbolic", "imperative"])
def test_model_diagram_shows_every_layer(tmp_path: Path, models: dict[str, Any], api: str) -> None:
    model = models[api]
    _, height = assert_sane_png(plots.plot_model_diagram(model, tmp_path / "model.png", 32))
    assert height > 1000  # Eight layers with shapes, not the one box Keras draws for an untraced subclass.
    summary = plots.write_model_summary(model, tmp_path / "summary.txt").read_text()
    assert "1,070,794" in summary and "custom_class" in summary and "Param #" in summary


def write_run_folder(folder: Path) -> None:
    config = {"api": "symbolic", "loop": "custom", "run_id": "r", "steps_per_epoch": 200, "data": {"image_size": 32}}
    (folder / "config.json").write_text(json.dumps(config))
    records = [epoch_record(1, 0.3), {"kind": "step", "epoch": 2, "step": 100, "loss": 1.5}, epoch_record(2, 0.4)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records) + '{"kind": "ep')


def test_run_plots_without_graphviz_warn_and_still_draw_the_rest(
    tmp_path: Path, models: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_run_folder(tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    stream = io.StringIO()
    drawn = plots.write_run_plots(tmp_path, models["symbolic"], Reporter(stream=stream))
    assert {path.name for path in drawn} == {plots.MODEL_SUMMARY, plots.LEARNING_CURVES}
    assert "warning: skipped model diagram: RuntimeError: Graphviz's `dot` is not on PATH" in stream.getvalue()
    assert_sane_png(tmp_path / plots.FOLDER / plots.LEARNING_CURVES)


def test_data_plots_never_raise(tmp_path: Path) -> None:
    broken = Cifar10(np.zeros((3, 2), np.uint8), np.zeros((3, 1), np.int64), np.zeros((1, 2), np.uint8),
                     np.zeros((1, 1), np.int64), "broken")  # fmt: skip
    stream = io.StringIO()
    drawn = plots.write_data_plots(broken, tmp_path / plots.FOLDER, Reporter(log_format="json", stream=stream))
    assert [path.name for path in drawn] == [plots.LABEL_DISTRIBUTION]
    warning = json.loads(stream.getvalue().splitlines()[-1])
    assert warning["event"] == "warning" and warning["message"].startswith("skipped sample grid")


def test_inspect_reports_an_unbalanced_dataset(run_job: RunJob, tmp_path: Path) -> None:
    """No training: the label counts, both data pictures and data.json, for a dataset short of cats."""
    data = make_cifar_like(train_size=200, test_size=50)
    keep = data.y_train[:, 0] != 3
    keep[np.flatnonzero(~keep)[:5]] = True  # Five cats left of twenty.
    unbalanced = Cifar10(data.x_train[keep], data.y_train[keep], data.x_test, data.y_test, "generated")
    write_tarball(unbalanced, tmp_path / "data.tar.gz")

    result = run_job("inspect", "--data", str(tmp_path / "data.tar.gz"), "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "train: unbalanced: cat 5 … airplane 20" in result.stdout and "test: balanced (5 per class)" in result.stdout
    described = json.loads((tmp_path / "out" / "data.json").read_text())
    assert described["train_balanced"] is False and described["test_balanced"] is True
    assert described["train_label_counts"] == label_counts(unbalanced.y_train) and described["train_size"] == 185
    assert_sane_png(tmp_path / "out" / plots.LABEL_DISTRIBUTION, min_width=600)
    assert_sane_png(tmp_path / "out" / plots.SAMPLE_GRID, 500, 500)


def test_inspect_with_missing_data_exits_3(run_job: RunJob, tmp_path: Path) -> None:
    result = run_job("inspect", "--data", str(tmp_path / "missing.tar.gz"), "--output", str(tmp_path / "out"))
    assert result.returncode == 3 and "does not exist" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_failing_picture_is_skipped_but_an_interruption_still_stops_the_run(tmp_path: Path) -> None:
    stream = io.StringIO()
    reporter = Reporter(stream=stream)

    def broken() -> Path:
        raise ValueError("no fonts")

    def interrupted_and_swallowed(path: Path) -> Path:
        # A SIGTERM lands inside a library that catches every exception (matplotlib's layout code does).
        with contextlib.suppress(Exception):
            os.kill(os.getpid(), signal.SIGTERM)
        path.write_bytes(b"picture")
        return path

    assert plots.attempt(reporter, "the broken picture", broken) is None
    assert "skipped the broken picture: ValueError: no fonts" in stream.getvalue()
    previous = {signum: signal.getsignal(signum) for signum in stopping.STOP_SIGNALS}
    stopping.install()
    try:
        with pytest.raises(Interrupted, match="received SIGTERM while drawing pictures"):
            plots.attempt(reporter, "the interrupted picture", lambda: interrupted_and_swallowed(tmp_path / "p.png"))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stopping.reset()
    assert (tmp_path / "p.png").exists()  # The picture in hand is finished; the next one is not started.


def test_a_blank_picture_fails_the_picture_check(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("RGB", (800, 600), "white").save(blank)
    with pytest.raises(AssertionError):
        assert_sane_png(blank)


def test_the_trainer_loads_without_matplotlib_and_the_pictures_draw_after(tmp_path: Path) -> None:
    """Keras imports matplotlib for a gallery the job never calls: it is kept out while the trainer loads (a fresh
    interpreter, as a pod starts), and the run's pictures, drawn after training, import it normally."""
    script = (
        "import sys\n"
        "from job import cli, plots\n"
        "from job.data import label_counts\n"
        "import numpy as np\n"
        "cli.import_trainer()\n"
        "import keras, tensorflow\n"
        "print('matplotlib' in sys.modules)\n"
        "counts = label_counts(np.arange(10))\n"
        f"plots.plot_label_distribution(counts, counts, __import__('pathlib').Path({str(tmp_path)!r}) / 'counts.png')\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=job_env(), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]
    image_size(tmp_path / "counts.png")
