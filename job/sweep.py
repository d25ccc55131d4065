"""Hyper-parameter sweeps as one Indexed Job: the grid, and the one point each pod trains. No TensorFlow here.

    python -m job sweep --api symbolic --learning-rate 0.1,0.05,0.01 --batch-size 200,100 --dry-run

`python -m job sweep` (job/kube/commands.py) puts the grid into the Job as JOB_SWEEP, compact JSON:
a list of {config field: value}, one entry per completion index. In the pod, `sweep_point` picks
entry JOB_COMPLETION_INDEX and names the run <sweep name>-<index>, so every point has its own run
folder and a retried pod resumes its own point.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from job.config import SETTINGS, TrainConfig, validate
from job.errors import UsageError

# The swept TrainConfig fields, typed as their defaults; each is also a `train` flag (SETTINGS[name].flag).
SWEEP_FIELDS = {name: type(SETTINGS[name].default) for name in ("learning_rate", "batch_size", "momentum")}
MAX_POINTS = 256  # Far beyond a useful grid here; keeps JOB_SWEEP well inside an object's size limit.

Point = dict[str, Any]


def parse_values(field: str, text: str) -> list[Any]:
    """'0.1,0.05' -> [0.1, 0.05] for one swept flag, each value checked as `train` would check it."""
    kind, flag = SWEEP_FIELDS[field], SETTINGS[field].flag
    values: list[Any] = []
    for item in (part.strip() for part in text.split(",")):
        try:
            value = kind(item)
        except ValueError:
            raise UsageError(f"{flag} takes comma-separated {kind.__name__}s, got {item!r} in {text!r}") from None
        if value in values:
            raise UsageError(f"{flag} lists {item} twice: each grid value once")
        values.append(value)
    return values


def expand_grid(axes: Mapping[str, Sequence[Any]]) -> list[Point]:
    """The cartesian product of the axes, in the given order (the last axis varies fastest), each point valid."""
    if not axes or not all(axes.values()):
        raise UsageError("a sweep needs at least one value list, e.g. --learning-rate 0.1,0.05,0.01")
    if unknown := sorted(set(axes) - set(SWEEP_FIELDS)):
        raise UsageError(
            f"cannot sweep {', '.join(unknown)}: only {', '.join(SETTINGS[name].flag for name in SWEEP_FIELDS)}"
        )
    size = math.prod(map(len, axes.values()))
    if size > MAX_POINTS:
        raise UsageError(f"the grid has {size} points, more than {MAX_POINTS}: sweep fewer values")
    grid = [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
    for point in grid:
        validate(dataclasses.replace(TrainConfig(), **point))  # Same checks and messages as `train`.
    return grid


def encode(grid: Sequence[Point]) -> str:
    """The grid as JOB_SWEEP: compact JSON."""
    return json.dumps(list(grid), separators=(",", ":"))


def sweep_point(env: Mapping[str, str], sweep_name: str | None = None) -> Point | None:
    """This pod's overrides (swept fields plus "run_id"), or None outside a sweep (JOB_SWEEP unset).

    sweep_name is the sweep's run id (the Job's name; in the pod, JOB_RUN_ID, which is the default).
    """
    if not (raw := env.get("JOB_SWEEP", "").strip()):
        return None
    grid = decode(raw)
    index_text = env.get("JOB_COMPLETION_INDEX", "").strip()
    if not index_text.isdigit() or int(index_text) >= len(grid):
        raise UsageError(
            f"JOB_COMPLETION_INDEX={index_text!r} does not pick one of the {len(grid)} JOB_SWEEP points: "
            "run the sweep as an Indexed Job with completions equal to the grid size"
        )
    name = sweep_name or env.get("JOB_RUN_ID", "").strip()
    if not name:
        raise UsageError("a sweep point needs the sweep's name: set JOB_RUN_ID (the Job's name) or --run-id")
    return {**grid[int(index_text)], "run_id": f"{name}-{int(index_text)}"}


def decode(raw: str) -> list[Point]:
    """JOB_SWEEP back into the grid, checked: a list of objects of known fields with values of their types."""
    try:
        grid = json.loads(raw)
    except ValueError as error:
        raise UsageError(f"JOB_SWEEP is not valid JSON ({error}): `python -m job sweep` writes it") from None
    if not isinstance(grid, list) or not grid or not all(isinstance(point, dict) for point in grid):
        raise UsageError('JOB_SWEEP must be a non-empty JSON list of objects such as {"learning_rate":0.1}')
    for point in grid:
        for field, value in point.items():
            kind = SWEEP_FIELDS.get(field)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if kind is None or not number or (kind is int and not isinstance(value, int)):
                raise UsageError(f"JOB_SWEEP has {field}={value!r}: only {', '.join(SWEEP_FIELDS)} with numbers")
            point[field] = kind(value)
    return grid
