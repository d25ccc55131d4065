"""The one-way flow of docs/architecture.md, held by reading every `job.*` import (lazy ones too)."""

from __future__ import annotations

import ast

import pytest

from tests.helpers import ROOT

# In order of the data's way through a run; each may import only those before it and the storage row. (`cli`,
# before them all, dispatches to every command.)
STAGES = ["config", "fetch", "data", "preflight", "pipeline", "models", "distribute", "plan", "checkpoints", "monitor",
          "loops", "train"]  # fmt: skip
# The storage row, top to bottom; each may import only those below it (and helpers such as faults, untrusted).
STORAGE_ROW = ["artifacts", "metrics", "storage", "gcs", "uri", "errors"]


def imported_modules(name: str) -> set[str]:
    """The job modules `job/<name>.py` imports, as their first name below `job` ('kube' for job.kube.*)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse((ROOT / "job" / f"{name}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "job":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("job."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("job.")}
    return found


@pytest.mark.parametrize("name", STAGES)
def test_no_stage_imports_a_later_stage(name: str) -> None:
    later = set(STAGES[STAGES.index(name) + 1 :])
    assert imported_modules(name) & later == set()


@pytest.mark.parametrize("name", STORAGE_ROW)
def test_the_storage_row_imports_no_stage_and_nothing_above_it(name: str) -> None:
    above = set(STORAGE_ROW[: STORAGE_ROW.index(name) + 1])
    assert imported_modules(name) & (set(STAGES) | above) == set()


def test_uri_and_errors_import_nothing_of_ours_but_errors() -> None:
    assert imported_modules("uri") <= {"errors"}
    assert imported_modules("errors") == set()


def test_kube_reads_only_config_sweep_uri_and_errors_of_the_trainer() -> None:
    for path in (ROOT / "job" / "kube").glob("*.py"):
        assert imported_modules(f"kube/{path.stem}") <= {"config", "sweep", "uri", "errors", "kube"}, path.name
