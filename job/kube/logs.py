"""Copy pods' train-container logs to stdout: whole lines, optionally each prefixed with its pod's name.

A multi-worker run or a sweep has several pods writing at once, so `logs --follow` streams each in its own
thread and writes whole lines under one lock: lines of two pods never mix. One pod's stream failing is one
line on stderr naming the pod and the server's reason, and the others go on: a pod whose container never
started answers 400, a pod already deleted 404, a pod on a node that went away 5xx or a broken connection.
"""

from __future__ import annotations

import codecs
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from job.kube import cluster

CHUNK_BYTES = 4096


@dataclass
class LogPrinter:
    """Where and how log lines go: stdout, whole lines, `[pod] ` first when `prefixed`."""

    api: Any
    namespace: str
    prefixed: bool
    lock: threading.Lock = field(default_factory=threading.Lock)
    shown: dict[str, str] = field(default_factory=dict)  # By note_change: what each key printed last.

    def copy(self, pod: str, follow: bool, tail: int | None = None, previous: bool = False) -> None:
        """Copy one pod's log; one line on stderr instead when the server refused it or the stream broke."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        prefix = f"[{pod}] " if self.prefixed else ""
        decoder, pending = codecs.getincrementaldecoder("utf-8")(errors="replace"), ""
        try:
            response = cluster.open_log(self.api, self.namespace, pod, follow, tail, previous)
            try:
                for chunk in response.stream(CHUNK_BYTES):
                    *lines, pending = (pending + decoder.decode(chunk)).split("\n")
                    self.write(prefix, lines)
            finally:
                response.release_conn()
        except ApiException as error:
            self.note(f"pod {pod}: no log ({error.status}): {cluster.status_message(error)[0]}")
        except HTTPError as error:
            self.note(f"pod {pod}: log stream broken: {error}")
        finally:
            self.write(prefix, [pending + decoder.decode(b"", final=True)] if pending else [])

    def write(self, prefix: str, lines: list[str]) -> None:
        if lines:
            with self.lock:
                sys.stdout.write("".join(f"{prefix}{line}\n" for line in lines))
                sys.stdout.flush()

    def note(self, line: str) -> None:
        """One line on stderr, between whole log lines."""
        with self.lock:
            print(line, file=sys.stderr, flush=True)

    def note_change(self, key: str, line: str) -> None:
        """note(line) unless it is what `key` printed last."""
        if self.shown.get(key) != line:
            self.shown[key] = line
            self.note(line)
