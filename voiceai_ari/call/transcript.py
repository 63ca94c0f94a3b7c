"""Per-call transcript and audit log: one JSONL file per call, one line per event, written as it happens.

A transcript holds what the caller said and their number: personal data. The folder is created 0700 and each
file 0600, whatever the umask. The event loop never touches the disk: `write` formats the line and queues
it, and one writer thread (for all calls) opens, appends and closes the files in queue order, flushing each
batch as soon as it is written. `aclose()` returns once the call's last line is on disk; at interpreter exit
the thread drains what is still queued, so nothing logged is lost on shutdown.

The file name carries the caller's channel id. A line: {"ts": "<ISO time>", "t": <seconds since call start>,
"event": "...", ...fields}. Events: call_start, caller, bot (transcripts), tool_call, dtmf, barge_in, transfer,
error, call_end (and a few more: docs/conversation.md). `listener`, if set, gets each record as it is written
(the dashboard's live view).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import re
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .writer_thread import Shared, WriterThread

log = logging.getLogger("voiceai.transcript")

FOLDER_MODE, FILE_MODE = 0o700, 0o600


class _Sink:
    """One transcript file; touched only by the writer thread."""

    def __init__(self, path: Path, channel_id: str) -> None:
        self.path, self.channel_id = path, channel_id
        self.fd: int | None = None
        self.pending: list[bytes] = []
        self.failed = False
        self.lost = 0

    def open(self) -> None:
        try:
            folder = self.path.parent
            if not folder.is_dir():
                os.makedirs(folder, mode=FOLDER_MODE, exist_ok=True)
                os.chmod(folder, FOLDER_MODE)   # makedirs' mode is masked by the umask
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
            os.fchmod(self.fd, FILE_MODE)       # so is os.open's
        except OSError as exc:
            self.failed = True
            log.error("! transcript for %s cannot be written in %s: %s", self.channel_id, self.path.parent, exc)

    def flush(self) -> None:
        data, self.pending = b"".join(self.pending), []
        if self.fd is None or not data:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:  # disk full: the call goes on, the loss is reported at close
            self.lost += bytes(view).count(b"\n")
            if not self.failed:
                log.error("! transcript write failed for %s: %s", self.channel_id, exc)
            self.failed = True

    def close(self) -> None:
        self.flush()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.lost:
            log.error("! transcript %s: %d lines could not be written", self.path, self.lost)


def _resolve(done: asyncio.Future[None] | None) -> None:
    if done is not None and not done.done():
        done.set_result(None)


class _Writer(WriterThread):
    """The thread that does every transcript's file I/O, in the order the loop queued it."""

    def __init__(self) -> None:
        super().__init__("transcript-writer")

    def _run(self) -> None:
        while True:
            ops = [self._q.get()]
            while True:   # everything queued meanwhile goes out in one batch: one write per file
                try:
                    ops.append(self._q.get_nowait())
                except queue.Empty:
                    break
            touched: dict[int, _Sink] = {}
            for op in ops:
                if op is None:
                    continue
                kind, sink = op[0], op[1]
                try:
                    if kind == "open":
                        sink.open()
                    elif kind == "line":
                        if sink.fd is not None:
                            sink.pending.append(op[2])
                            touched[id(sink)] = sink
                    elif kind == "close":
                        touched.pop(id(sink), None)
                        sink.close()
                        if op[2] is not None:
                            loop, done = op[2]
                            try:
                                loop.call_soon_threadsafe(_resolve, done)
                            except RuntimeError:  # that loop is closed: nobody waits any more
                                pass
                except Exception:  # noqa: BLE001 - the writer must outlive any one file's failure
                    log.exception("! transcript writer: %s failed", kind)
            for sink in touched.values():
                sink.flush()
            if any(op is None for op in ops):
                return


_get_writer = Shared(_Writer).get


class CallLog:
    def __init__(self, folder: str, channel_id: str, keep: int = 200) -> None:
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)   # for the control API
        self.path: Path | None = None
        self._sink: _Sink | None = None
        self._t0 = time.monotonic()
        self.listener: Callable[[dict[str, Any]], None] | None = None   # the dashboard's event fan-out
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", channel_id)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.stem = f"{stamp}-{safe}"   # the file's name without .jsonl (a recording has the same)
        if not folder:
            return
        self.path = Path(folder) / f"{self.stem}.jsonl"
        self._sink = _Sink(self.path, channel_id)
        _get_writer().put(("open", self._sink))

    def write(self, event: str, **fields: Any) -> None:
        rec = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
               "t": round(time.monotonic() - self._t0, 3), "event": event, **fields}
        self.recent.append(rec)
        if self.listener is not None:
            self.listener(rec)
        if self._sink is not None:  # formatted here (a snapshot of the fields), written by the thread
            line = json.dumps(rec, ensure_ascii=False, default=str) + "\n"
            _get_writer().put(("line", self._sink, line.encode("utf-8")))

    def close(self) -> None:
        """Queue the close; the file is complete soon after (use `aclose` to wait for it)."""
        if self._sink is not None:
            _get_writer().put(("close", self._sink, None))
            self._sink = None

    async def aclose(self) -> None:
        """Close, and return once every line written so far is on disk."""
        if self._sink is None:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        _get_writer().put(("close", self._sink, (loop, done)))
        self._sink = None
        await done
