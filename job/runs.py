"""`python -m job runs list|show`: placeholder until the run browser lands."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the `runs` commands to the CLI."""
