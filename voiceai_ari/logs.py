"""Logging set-up: one format, library chatter kept down, and secrets redacted from every line.

Redaction is the last line of defence: the code never formats a secret on purpose, but a library may
(websockets logs request headers, Authorization included, at DEBUG).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

# libraries that log every frame or header at DEBUG: never below INFO, whatever the app's level
CHATTY = ("websockets", "aiohttp.access", "aiohttp.client", "aiohttp.websocket", "asyncio")


class RedactSecrets(logging.Filter):
    """Replace each secret with *** in the rendered message (args included)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        msg = record.getMessage()
        red = msg
        for s in self.secrets:
            red = red.replace(s, "***")
        if red is not msg and red != msg:
            record.msg, record.args = red, None
        return True


def setup_logging(level: str, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in CHATTY:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level)))
