"""The bot's log, read as it grows: call set-up times, ended calls and their media counters, stats lines,
refusals, warnings, errors and tracebacks, in JSON (the default) or text format."""

from __future__ import annotations

import ast
import collections
import contextlib
import json
import re
from pathlib import Path
from typing import Any

_UP = re.compile(r"^= call up in (\d+) ms")
_ENDED = re.compile(r"^x call ended after ([\d.]+) s: (.*?); media (\{.*\})\s*$")
_TEXT = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+)(?: \[([^\]]+)\])? (.*)$")
_CALL_PREFIX = re.compile(r"^\[([^\]]+)\] (.*)$")


def parse_log_line(line: str) -> tuple[str, str | None, str, bool] | None:
    """(level, call id or None, message, has a traceback) of one bot log line, JSON (the default) or text
    ("<date> <time> LEVEL logger [call] msg", or the older "... logger [call] msg" with the id in the message).
    None for a line that is neither (a traceback's continuation lines in text mode)."""
    if line.startswith("{"):
        try:
            d = json.loads(line)
        except ValueError:
            return None
        if not isinstance(d, dict) or "msg" not in d:
            return None
        return str(d.get("level", "")), d.get("call"), str(d["msg"]), bool(d.get("exc"))
    m = _TEXT.match(line)
    if m is None:
        return ("ERROR", None, line, True) if line.startswith("Traceback") else None
    level, _, call, msg = m.groups()
    if call is None and (c := _CALL_PREFIX.match(msg)) is not None:
        call, msg = c.groups()
    return level, call, msg, False


class LogWatcher:
    """Reads the bot's log incrementally and keeps the counts the soak needs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.connected = 0
        self.stats: list[dict[str, Any]] = []
        self.setup_ms: list[int] = []
        self.ended = 0
        self.end_reasons: collections.Counter[str] = collections.Counter()
        self.media: list[dict[str, Any]] = []
        self.durations: list[float] = []
        self.ended_ids: list[str] = []
        self.answered: set[str] = set()
        self.up_ids: set[str] = set()
        self.ended_after: dict[str, float] = {}   # call id -> seconds it lasted
        self.refused = 0
        self.warnings: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.tracebacks = 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            self._line(raw.decode("utf-8", "replace"))

    def _line(self, line: str) -> None:
        parsed = parse_log_line(line)
        if parsed is None:
            return
        level, call, msg, exc = parsed
        if exc:
            self.tracebacks += 1
        if "ARI events connected" in msg:
            self.connected += 1
        if msg.startswith("stats {"):
            with contextlib.suppress(ValueError):
                self.stats.append(json.loads(msg[6:]))
            return
        if (m := _UP.match(msg)) is not None:
            self.setup_ms.append(int(m.group(1)))
            if call:
                self.up_ids.add(call)
        elif (m := _ENDED.match(msg)) is not None:
            self.ended += 1
            self.ended_ids.append(call or "?")
            self.durations.append(float(m.group(1)))
            if call:
                self.ended_after[call] = float(m.group(1))
            self.end_reasons[m.group(2)] += 1
            with contextlib.suppress(ValueError, SyntaxError):
                self.media.append(ast.literal_eval(m.group(3)))
        elif msg.startswith("bot: ") and call:  # the model's transcript of a response it spoke
            self.answered.add(call)
        if level in ("WARNING", "ERROR", "CRITICAL"):
            # ids out, so equal warnings of different calls count together
            norm = re.sub(r"\b\d{10}\.\d+\b|\b[0-9a-f]{16,}\b", "<id>", msg)
            if "refused" in norm:
                self.refused += 1
            if level != "WARNING":
                self.errors.append(line[:400])
            elif not norm.startswith("OPENAI_API_KEY is not set"):  # the offline-demo banner is expected
                self.warnings[norm[:160]] += 1
