"""One thread per kind of per-call file (transcripts, recordings) that does every call's file I/O.

The event loop never touches the disk: it `put`s an operation and returns. The thread takes operations in
the order they were queued; `stop()` (also run at interpreter exit, since a daemon thread would just be
dropped) lets it write out what is queued and end. Subclasses say what an operation does in `_run`.
"""

from __future__ import annotations

import atexit
import queue
import threading
from typing import Any, Generic, TypeVar


class WriterThread:
    def __init__(self, name: str) -> None:
        self._q: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def put(self, op: tuple[Any, ...]) -> None:
        self._q.put(op)

    def stop(self, timeout: float = 10.0) -> None:
        """Write out what is queued, then end the thread (None on the queue is the end)."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        raise NotImplementedError


W = TypeVar("W", bound=WriterThread)


class Shared(Generic[W]):
    """The process's one writer of a kind, started on first use (a process that never records starts no
    recording thread)."""

    def __init__(self, make: type[W]) -> None:
        self._make, self._lock = make, threading.Lock()
        self._writer: W | None = None

    def get(self) -> W:
        with self._lock:
            if self._writer is None:
                self._writer = self._make()
            return self._writer
