"""What the fake model servers share: serving one WebSocket path on loopback, the list of accepted sessions
tests wait on, stopping, and running from the command line until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web


class FakeServerBase:
    """`start()` serves `path` with `self._handle`; sessions are added with `_accepted()`; each session has
    the accepted `_ws`. Subclasses set host, port and path before `start()`."""

    host: str
    port: int
    path: str
    keep_history: bool

    def __init__(self) -> None:
        self.sessions: list[Any] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def start(self) -> str:
        """Bind and serve; returns the WebSocket URL."""
        app = web.Application()
        app.router.add_get(self.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]
        self.url = f"ws://{self.host}:{self.port}{self.path}"
        return self.url

    async def stop(self) -> None:
        """Close every session (1001) and stop listening. Safe to call twice."""
        for s in self.sessions:
            if not s._ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(s._ws.close(code=1001), 2.0)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _accepted(self, session: Any) -> None:
        self.sessions.append(session)
        self._changed.set()
        self._changed = asyncio.Event()

    async def _serve_session(self, session: Any, run: Awaitable[None]) -> None:
        """Accept `session` and run it; a crash is logged, never raised into aiohttp. Without
        `keep_history` (the embedded demo model) the finished session is forgotten, so memory stays flat."""
        self._accepted(session)
        try:
            await run
        except Exception:
            logging.getLogger(type(self).__module__).exception("%s: session crashed", type(self).__name__)
        finally:
            if not self.keep_history:
                self.sessions.remove(session)

    async def wait_for_session(self, n: int = 1, timeout: float = 5.0) -> Any:
        """Wait until `n` sessions have been accepted; return the n-th (1-based)."""
        async with asyncio.timeout(timeout):
            while len(self.sessions) < n:
                await self._changed.wait()
        return self.sessions[n - 1]


def fake_cli(prog: str, description: str, port: int, make: Callable[..., Any],
             extra: Callable[[argparse.ArgumentParser], None] | None = None,
             argv: list[str] | None = None) -> int:
    """``voiceai-ari fake-<provider>``: the common options, then serve ``make(**options)`` until a signal."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=port, help=f"0 picks a free port (default {port})")
    ap.add_argument("--mode", choices=("tone", "echo"), default="echo")
    ap.add_argument("--tone-hz", type=float, default=440.0)
    ap.add_argument("--tone-seconds", type=float, default=2.0)
    ap.add_argument("--api-key", help="require this key (default: any non-empty key)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--log-level", default="INFO")
    if extra is not None:
        extra(ap)
    args = vars(ap.parse_args(argv))
    logging.basicConfig(level=args.pop("log_level").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    name = prog.rsplit(" ", 1)[-1]
    try:
        return asyncio.run(serve_until_signal(make(**args)))
    except (ValueError, OSError) as exc:   # port in use, bad option value
        print(f"{name}: {exc}", file=sys.stderr)
        return 2


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
