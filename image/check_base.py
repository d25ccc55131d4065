"""Fail the image build unless the base image's TensorFlow is the one `python -m job` will import.

Run inside the build after the lock is installed into /opt/venv (a venv that sees the base image's
packages): `python check_base.py runtime.lock`. The official GPU image has TensorFlow, built against its
CUDA libraries, in the system Python. If the base had another TensorFlow, none, or another Python, pip
would quietly put the lock's wheel into the venv, and the image would train without its CUDA stack.
Standard library only: it runs before the job's own code is copied in.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

LOCK_PYTHON = (3, 11)  # requirements/*.lock are compiled with `--python-version 3.11`.


def problems(lock_text: str, python: tuple[int, int], venv_prefix: str) -> list[str]:
    """What makes this interpreter's TensorFlow unfit: empty when it is the base image's, at the pinned version."""
    pinned = re.search(r"^tensorflow==(\S+)", lock_text, re.MULTILINE)
    if pinned is None:
        return ["the lock pins no tensorflow version"]
    found: list[str] = []
    if python != LOCK_PYTHON:
        found.append(
            f"its Python is {python[0]}.{python[1]}, the lock is compiled for {LOCK_PYTHON[0]}.{LOCK_PYTHON[1]}"
        )
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or spec.origin is None:
        return [*found, "it has no tensorflow"]
    installed = importlib.metadata.version("tensorflow")
    if installed != pinned.group(1):
        found.append(f"its tensorflow is {installed}, the lock pins {pinned.group(1)}")
    if Path(spec.origin).is_relative_to(venv_prefix):
        found.append(
            f"tensorflow would be imported from {Path(spec.origin).parent}, the lock's wheel, not the base image's"
        )
    return found


def main() -> int:
    lock_text = Path(sys.argv[1]).read_text()
    found = problems(lock_text, (sys.version_info.major, sys.version_info.minor), sys.prefix)
    if found:
        print(
            "error: the base image does not fit: " + "; ".join(found) + ": build on tensorflow/tensorflow:"
            "<the pinned version>-gpu (BASE_IMAGE), or a base with that TensorFlow in its system Python 3.11",
            file=sys.stderr,
        )
        return 1
    print(f"base image ok: tensorflow {importlib.metadata.version('tensorflow')} from the base's system Python")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
