"""README.md's `train` flag table is made from the settings declared in job/config.py, and kept in step with them.

python -m tests.test_readme_flags     # (make flag-table) rewrites the table after a setting changed
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from job.config import SETTINGS, Setting

README = Path(__file__).resolve().parents[1] / "README.md"
HEADER = ["| flag (env var) | default | meaning |", "|---|---|---|"]


def default_cell(declared: Setting) -> str:
    if declared.readme_default is not None:
        return declared.readme_default
    if isinstance(declared.default, bool):
        return "on" if declared.default else "off"
    return f"`{declared.default.value}`" if isinstance(declared.default, Enum) else str(declared.default)


def flag_table() -> list[str]:
    """The table's lines: one row per setting with a README text, in declaration (and `--help`) order."""
    rows = [
        f"| `{declared.flag}` (`{declared.env}`) | {default_cell(declared)} | {declared.readme} |"
        for declared in SETTINGS.values()
        if declared.readme is not None
    ]
    return [*HEADER, *rows]


def table_span(lines: list[str]) -> tuple[int, int]:
    """[start, end) of the flag table in README.md's lines."""
    start = lines.index(HEADER[0])
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return start, end


def test_the_readme_flag_table_matches_the_declared_settings() -> None:
    lines = README.read_text().splitlines()
    start, end = table_span(lines)
    assert lines[start:end] == flag_table(), "README.md's flag table is stale: run make flag-table"


def test_every_setting_has_one_flag_and_one_env_var() -> None:
    """The flag and env var follow from the name, so `train --help` and the table cannot disagree on them."""
    assert all(declared.env == "JOB_" + declared.flag[2:].replace("-", "_").upper() for declared in SETTINGS.values())
    assert SETTINGS["strategy"].readme is None  # The scale-out section below the table explains it.


if __name__ == "__main__":
    lines = README.read_text().splitlines()
    start, end = table_span(lines)
    README.write_text("\n".join([*lines[:start], *flag_table(), *lines[end:]]) + "\n")
    print(f"rewrote the flag table of {README} ({end - start} lines before, {len(flag_table())} now)")
