"""Run a fake model server from the command line until SIGINT/SIGTERM (any of the fakes)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any


async def serve_until_signal(server: Any) -> int:
    """Start ``server`` (its ``start()`` returns its URL), print the URL, stop it on SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(await server.start(), flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0
