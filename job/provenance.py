"""Which code is running: its version and source commit.

In the image both come from the build (`make docker-build` passes `git describe` and the commit as build
arguments, the Dockerfile sets JOB_VERSION and JOB_GIT_COMMIT); in a checkout, from git and the
installed package's metadata. Standard library only, so `--version` stays fast.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
from pathlib import Path

PACKAGE = "cifar10-job"
UNKNOWN = "unknown"


def version() -> str:
    """$JOB_VERSION (the image), else `git describe` of the checkout, else the package's version."""
    return _from_environment("JOB_VERSION") or _git("describe", "--tags", "--always", "--dirty") or _package_version()


def git_commit() -> str | None:
    """$JOB_GIT_COMMIT (the image), else the checkout's HEAD; None when neither is known."""
    return _from_environment("JOB_GIT_COMMIT") or _git("rev-parse", "HEAD")


def _from_environment(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value if value and value != UNKNOWN else None


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=5, check=True, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _package_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN
