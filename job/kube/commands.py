"""`python -m job submit|status|logs|delete`: placeholder until the Kubernetes commands land."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the Kubernetes commands to the CLI."""
