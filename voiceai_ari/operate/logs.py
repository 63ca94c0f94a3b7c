"""Logging set-up: JSON lines (or text), the call id on every line of a call, secrets redacted.

The call id comes from a context variable that `Call.run` sets: every task and callback a call creates
inherits it, so even library lines logged on the call's behalf carry it. Redaction is the last line of
defence: the code never formats a secret on purpose, but a library may (websockets logs request headers,
Authorization included, at DEBUG).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from contextvars import ContextVar

call_id: ContextVar[str | None] = ContextVar("voiceai_call_id", default=None)
call_agent: ContextVar[str | None] = ContextVar("voiceai_call_agent", default=None)   # the call's agent

# libraries that log every frame or header at DEBUG: never below INFO, whatever the app's level
CHATTY = ("websockets", "aiohttp.access", "aiohttp.client", "aiohttp.websocket", "asyncio")


class RedactSecrets(logging.Filter):
    """Replace each secret with *** in the rendered message (args included), and attach the call id."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        record.call = call_id.get()
        record.agent = call_agent.get()
        if self.secrets:
            msg = record.getMessage()
            red = msg
            for s in self.secrets:
                red = red.replace(s, "***")
            if red != msg:
                record.msg, record.args = red, None
        if record.exc_info and self.secrets:   # tracebacks can quote secrets too
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            for s in self.secrets:
                record.exc_text = record.exc_text.replace(s, "***")
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
               "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        if getattr(record, "call", None):
            out["call"] = record.call
        if getattr(record, "agent", None):
            out["agent"] = record.agent
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        call = getattr(record, "call", None)
        if call and getattr(record, "agent", None):
            call = f"{call} {record.agent}"
        return line.replace(record.name, f"{record.name} [{call}]", 1) if call else line


def setup_logging(level: str, secrets: Iterable[str] = (), fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in CHATTY:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level)))
