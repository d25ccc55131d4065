"""`python -m job` processes forked from a parent that has already imported TensorFlow: test scaffolding.

Each trainer a test starts used to spend about half of its CPU importing TensorFlow, Keras and the rest
(about 6 s of a 13 s tiny run on the 2-core development machine); the suite starts about a hundred of them.
A fork server imports all of that once per pytest worker and forks a child per command. The child is still
a process of its own, which is what the tests are about: its own pid for signals (kill -9, SIGTERM), its
own exit code, stdout and stderr on pipes, the environment and working folder the test gave it, and a
TensorFlow runtime that starts fresh (the server imports modules and never runs an op, creates a device or
a thread pool). What a child shares with its siblings is imported code and its hash seed.

Commands whose environment changes what the imports themselves read (PYTHONPATH, HOME, TF_CPP_*, KERAS_*,
MPL*: see IMPORT_TIME_ENV) run in a fresh interpreter instead, and so does every command when
JOB_TESTS_FORK=0 (for a run that trusts nothing of this). Tests whose subject is the interpreter's start
(what `--help` imports, input rejected before TensorFlow loads) use such an environment and never fork.

Protocol, over a Unix socket, one connection per command: the client sends an 8-byte length with the
child's stdin, stdout and stderr attached (SCM_RIGHTS), then that many bytes of JSON {args, env, cwd}. The
server answers "PID\\n" once forked and "EXITCODE\\n" when the child ends (negative: killed by that signal,
as subprocess reports it).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
LENGTH = struct.Struct("!Q")
# Environment variables read while modules are imported (so a forked child would see the server's value).
IMPORT_TIME_ENV = ("PYTHON", "HOME", "TF_CPP_", "TF_ENABLE_ONEDNN", "KERAS_", "MPL", "XDG_", "LD_", "CUDA_")


# The server: `python -m tests.forkserver SOCKET`, started by `ForkServer.start`.


def preload() -> None:
    """Import what `python -m job` imports over a run, without running any of it."""
    import pkgutil
    from importlib import import_module

    import keras  # noqa: F401
    import matplotlib  # noqa: F401
    import tensorflow  # noqa: F401

    import job

    for module in pkgutil.walk_packages(job.__path__, "job."):
        if module.name != "job.__main__":
            import_module(module.name)


def serve(socket_path: str) -> None:
    preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    print("ready", flush=True)
    running: dict[int, socket.socket] = {}  # Child pid → the connection waiting for its exit code.
    while True:
        readable, _, _ = select.select([listener, sys.stdin], [], [], 0.02)
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1):
            return  # The pytest worker that started us is gone (our stdin is its pipe).
        if listener in readable:
            connection, _ = listener.accept()
            pid = fork_command(connection, listener, running)
            if pid:
                running[pid] = connection
        reap(running)


def reap(running: dict[int, socket.socket]) -> None:
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        connection = running.pop(pid)
        with contextlib.suppress(OSError):  # The test stopped listening (it failed and moved on).
            connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
        connection.close()


def receive_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the client hung up mid-request")
        data += chunk
    return data


def fork_command(connection: socket.socket, listener: socket.socket, running: dict[int, socket.socket]) -> int:
    header, fds, _, _ = socket.recv_fds(connection, LENGTH.size, 3)
    request = json.loads(receive_exactly(connection, LENGTH.unpack(header)[0]))
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        listener.close()
        for other in running.values():
            other.close()
        connection.close()
        run_child(request, fds)  # Never returns.
    for fd in fds:
        os.close(fd)
    connection.sendall(f"{pid}\n".encode())
    return pid


def run_child(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: become `python -m job ARGS` with the test's stdio, environment and folder."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        # As a fresh interpreter has them (the server's loop changed none, but say so here).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["-m", *request["args"]]
        import runpy

        code = 0
        runpy.run_module("job", run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:
            print(exit_.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


# The client, in the pytest worker.


class ForkedJob:
    """A forked `python -m job` child, with the part of `subprocess.Popen`'s interface the tests use."""

    def __init__(self, args: list[str], server: str, env: dict[str, str], cwd: Path) -> None:
        self.args = [sys.executable, "-m", "job", *args]
        self.returncode: int | None = None
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        request = json.dumps({"args": args, "env": env, "cwd": str(cwd)}).encode()
        self._connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._connection.connect(server)
        with Path(os.devnull).open("rb") as stdin:
            socket.send_fds(self._connection, [LENGTH.pack(len(request))], [stdin.fileno(), out_write, err_write])
        os.close(out_write)
        os.close(err_write)
        self._connection.sendall(request)
        self._replies = self._connection.makefile("r")
        self.pid = int(self._replies.readline())
        self.stdout: IO[str] = open(out_read, encoding="utf-8", errors="replace")  # noqa: SIM115, PTH123
        self.stderr: IO[str] = open(err_read, encoding="utf-8", errors="replace")  # noqa: SIM115, PTH123
        self._readers: list[threading.Thread] = []
        self._output: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._replies], [], [], 0)[0]:
            self._read_exit_code()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._replies], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._read_exit_code()
        assert self.returncode is not None
        return self.returncode

    def _read_exit_code(self) -> None:
        line = self._replies.readline()
        if not line:
            raise RuntimeError(f"the fork server lost track of pid {self.pid}")
        self.returncode = int(line)
        self._replies.close()
        self._connection.close()

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Read stdout and stderr to their end and wait for the exit, as Popen.communicate does."""
        if not self._readers:
            for name, stream in (("stdout", self.stdout), ("stderr", self.stderr)):
                reader = threading.Thread(target=self._drain, args=(stream, self._output[name]), daemon=True)
                reader.start()
                self._readers.append(reader)
        for reader in self._readers:
            reader.join(timeout)
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        self.wait(timeout)
        return "".join(self._output["stdout"]), "".join(self._output["stderr"])

    @staticmethod
    def _drain(stream: IO[str], into: list[str]) -> None:
        into.append(stream.read())
        stream.close()

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """This pytest worker's fork server, started on first use."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._env: dict[str, str] = {}
        self._socket = ""
        self._lock = threading.Lock()

    def start(self, env: dict[str, str]) -> None:
        self._socket = str(Path(tempfile.mkdtemp(prefix="job-forkserver-")) / "socket")
        self._env = env
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.forkserver", self._socket],
            stdin=subprocess.PIPE,  # Closed when this worker ends: the server then exits.
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline() != "ready\n":
            raise RuntimeError("the fork server did not start (see its stderr above)")

    def launch(self, args: list[str], env: dict[str, str], server_env: dict[str, str]) -> ForkedJob | None:
        """A forked child running `python -m job ARGS` with `env`, or None when that needs a fresh interpreter
        (`env` differs from the server's in what imports read). The server starts on first use, with `server_env`."""
        if os.environ.get("JOB_TESTS_FORK") == "0":
            return None
        with self._lock:
            base = self._env if self._process is not None else server_env
            if any(
                key.startswith(IMPORT_TIME_ENV) for key in env.keys() | base.keys() if env.get(key) != base.get(key)
            ):
                return None
            if self._process is None:
                self.start(server_env)
        return ForkedJob(args, self._socket, env, ROOT)


if __name__ == "__main__":
    serve(sys.argv[1])
