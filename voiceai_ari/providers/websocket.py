"""What every provider's WebSocket session shares: the sender (`Outbox`) and the connection's life
(`ProviderSocket`: reconnect with bounded attempts, close without waiting on a dead peer).

The outgoing side is written at once while it can be, queued while it cannot.

Every provider session sends one small text message per 20 ms of caller audio plus an occasional control
message. `Outbox.put` frames a message and hands it straight to the transport (websockets' sans-I/O
protocol does the framing) while the connection is open and not backed up; otherwise it queues, and a send
task drains the queue in order once a connection is attached. Order is kept because nothing is written
directly while anything is queued. When the queue is full, caller audio is shed (counted) rather than grow
without bound; a control message pushes out the oldest entry instead. Control messages that were in
flight when a connection broke go again on the next one; audio does not (it would be stale).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from ..proxy import use_env_proxy

WRITE_NOW_LIMIT = 64 * 1024      # bytes already buffered in the transport beyond which messages queue


def write_now(ws: ClientConnection, msg: str) -> bool:
    """Frame ``msg`` and hand it to the transport at once; False if it must wait in the queue instead.

    This is what ``ws.send`` does, without a coroutine and a task hop per 20 ms of audio (about 25 µs
    here). It applies only while the connection is open and the transport is not backed up.
    """
    transport = ws.transport
    if (ws.protocol.state is not State.OPEN or transport is None or transport.is_closing()
            or transport.get_write_buffer_size() > WRITE_NOW_LIMIT):
        return False
    ws.protocol.send_text(msg.encode())
    for data in ws.protocol.data_to_send():
        if data:
            transport.write(data)
    return True


class Outbox:
    def __init__(self, max_queue: int = 500) -> None:
        self._out: asyncio.Queue[tuple[str, bool]] = asyncio.Queue(max_queue)
        self._ws: ClientConnection | None = None
        self._sender: asyncio.Task[None] | None = None
        self.dropped_audio = 0

    def attach(self, ws: ClientConnection) -> None:
        """Send on ``ws`` from now on (queued messages first)."""
        self._ws = ws
        self._sender = asyncio.create_task(self._send_loop(ws), name="model-send")

    async def detach(self) -> None:
        """Stop sending (the connection broke or is closing); what is queued waits for the next one."""
        self._ws = None
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
            self._sender = None

    @property
    def queued(self) -> int:
        """Messages waiting for the send task (0 while everything is written at once)."""
        return self._out.qsize()

    def put(self, msg: str, audio: bool = False) -> None:
        ws = self._ws
        if ws is not None and self._out.empty() and write_now(ws, msg):
            return
        try:
            self._out.put_nowait((msg, audio))
        except asyncio.QueueFull:
            # the model is not reading (or is reconnecting): shed audio rather than grow without bound
            self.dropped_audio += 1
            if audio:
                return
            self._out.get_nowait()
            self._out.put_nowait((msg, audio))

    async def _send_loop(self, ws: ClientConnection) -> None:
        item = None
        try:
            while True:
                item = await self._out.get()
                await ws.send(item[0])
                item = None
        except websockets.ConnectionClosed:
            if item is not None and not item[1]:
                self.put(*item)   # not audio: it goes again on the next connection


class ProviderSocket:
    """Base of a provider's `ModelSession` adapter: one connection at a time, its `Outbox`, and the
    reconnect loop. A subclass implements `_connect` (usually `self._open(url, headers, handshake)`) and
    `_new_connection` (forget per-connection state before an attempt), and names itself in `WHAT`."""

    WHAT = "model"                               # in log lines: "! model reconnect 1/2 after ..."
    RECONNECT_DELAYS: tuple[float, ...] = (0.2, 1.0)   # s before each attempt; all failed = give up
    log = logging.getLogger("voiceai.model")

    def __init__(self, max_queue: int, connect_timeout: float) -> None:
        self._connect_timeout = connect_timeout
        self._ws: ClientConnection | None = None
        self._outbox = Outbox(max_queue)
        self._closing = False
        self.reconnects = 0

    @property
    def dropped_audio(self) -> int:
        return self._outbox.dropped_audio

    async def start(self) -> None:
        await self._connect()

    async def _connect(self) -> None:
        raise NotImplementedError

    def _new_connection(self) -> None:
        """Forget what belonged to the previous connection (called before each attempt)."""

    def _resumed(self) -> str:
        """What the log line says was carried over to the new connection."""
        return ""

    async def _open(self, url: str, headers: dict[str, str],
                    handshake: Callable[[ClientConnection], Awaitable[None]]) -> None:
        """Dial `url` (no compression, 16 MiB messages, pings, HTTPS_PROXY/NO_PROXY except for loopback),
        run the provider's `handshake` on the new socket, then send on it. A socket whose handshake is
        refused, breaks, is cancelled, or outlives a close() meanwhile is aborted, never left open."""
        ws = await asyncio.wait_for(connect(
            url, additional_headers=headers, compression=None, max_size=16 * 2**20, ping_interval=20,
            ping_timeout=20, proxy=True if use_env_proxy(url) else None, open_timeout=self._connect_timeout),
            self._connect_timeout)
        try:
            await handshake(ws)
            if self._closing:
                raise ConnectionAbortedError("session closed while connecting")
        except BaseException:
            if ws.transport is not None:
                ws.transport.abort()
            raise
        self._ws = ws
        self._outbox.attach(ws)

    async def _reconnect(self, reason: str) -> bool:
        await self._outbox.detach()
        for attempt, delay in enumerate(self.RECONNECT_DELAYS, 1):
            await asyncio.sleep(delay)
            if self._closing:
                return False
            self._new_connection()
            try:
                await self._connect()
            except (OSError, ValueError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
                self.log.warning("! %s reconnect %d/%d after %s failed: %s", self.WHAT, attempt,
                                 len(self.RECONNECT_DELAYS), reason, exc)
                continue
            self.reconnects += 1
            self.log.info("= %s session resumed after %s (%s)", self.WHAT, reason, self._resumed())
            return True
        return False

    async def close(self) -> None:
        """Close the connection; idempotent. A peer that does not answer the close frame is cut off."""
        self._closing = True
        await self._outbox.detach()
        if self._ws is not None:
            try:
                await asyncio.wait_for(self._ws.close(), 1.0)
            finally:
                if self._ws.transport is not None:
                    self._ws.transport.abort()
