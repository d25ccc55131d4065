"""--checkpoint-every-steps (JOB_CHECKPOINT_EVERY_STEPS) is for the custom loop, which resumes at the exact step.

`fit` resumes at epoch boundaries, so it refuses the setting with one line (exit 2) instead of ignoring it, and
only the custom-loop overlay's ConfigMap sets it. (The custom loop's mid-epoch checkpoints and resumes:
tests/test_reliability.py.)
"""

from __future__ import annotations

import pytest

from job.kube import render
from tests.conftest import RunJob


@pytest.mark.parametrize("how", ["flag", "env"])
def test_fit_refuses_a_checkpoint_interval_with_one_line(
    run_job: RunJob, without_tensorflow: dict[str, str], how: str
) -> None:
    if how == "flag":
        result = run_job("train", "--loop", "fit", "--checkpoint-every-steps", "100", env=without_tensorflow)
    else:
        result = run_job("train", "--loop", "fit", env={**without_tensorflow, "JOB_CHECKPOINT_EVERY_STEPS": "100"})
    assert (result.returncode, result.stderr) == (
        2,
        "error: --checkpoint-every-steps/JOB_CHECKPOINT_EVERY_STEPS 100 needs --loop custom: fit checkpoints at "
        "the end of every epoch only; drop it (0) or train with --loop custom\n",
    )


@pytest.mark.parametrize("overlay", ["symbolic", "imperative", "custom-loop", "multiworker", "sweep"])
def test_only_custom_loop_runs_get_a_checkpoint_interval_from_the_config_map(overlay: str) -> None:
    documents = render.render(render.overlay_dir(overlay))
    (config_map,) = render.find(documents, "ConfigMap")
    (job,) = render.find(documents, "Job")
    loop = job["spec"]["template"]["metadata"]["labels"][render.LABEL_LOOP]
    assert config_map["data"].get("JOB_CHECKPOINT_EVERY_STEPS") == ("100" if loop == "custom" else None)
