"""Per-call transcript and audit log: one JSONL file per call, one line per event, written as it happens.

Each line is flushed at once, so a crash loses nothing that was logged. The file name carries the caller's
channel id. A line: {"ts": "<ISO time>", "t": <seconds since call start>, "event": "...", ...fields}.
Events: call_start, caller, bot (transcripts), tool_call, dtmf, error, call_end.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger("voiceai.transcript")


class CallLog:
    def __init__(self, folder: str, channel_id: str, keep: int = 200) -> None:
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)   # for the control API
        self.path: Path | None = None
        self._file = None
        self._t0 = time.monotonic()
        if not folder:
            return
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", channel_id)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        try:
            os.makedirs(folder, exist_ok=True)
            self.path = Path(folder) / f"{stamp}-{safe}.jsonl"
            self._file = open(self.path, "a", encoding="utf-8", buffering=1)  # line-buffered
        except OSError as exc:
            log.error("! transcript for %s cannot be written in %s: %s", channel_id, folder, exc)
            self.path = None

    def write(self, event: str, **fields: Any) -> None:
        rec = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
               "t": round(time.monotonic() - self._t0, 3), "event": event, **fields}
        self.recent.append(rec)
        if self._file is None:
            return
        try:
            self._file.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
        except OSError as exc:  # disk full: the call goes on
            log.error("! transcript write failed: %s", exc)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
