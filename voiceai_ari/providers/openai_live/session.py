"""`ModelSession` over a real (or fake) OpenAI GPT-Live WebSocket: the asyncio adapter.

It moves text between a `websockets` connection and `LiveProtocol`, and runs the protocol's clock (a
reply or a transcript ends after a gap: `LiveProtocol.deadline` / `tick`). Caller audio goes out as it
comes: 24 kHz PCM16 LE is the session's format, and the call feeds silence during the caller's gaps
(media/transport.py `_tick`), which GPT-Live needs: its timeline moves only while audio streams (§2.3).

There is no resumption handle (§2.11): after a dropped connection or `session.closed` with reason
`expired` or `connection_lost`, a new session starts, seeded (`input`) with the text of the earlier
turns. `error` events with a fatal code (bad key, unknown model, no credit) and `session.closed` with
reason `content` end the event stream with a fatal `ModelError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import websockets
from websockets.asyncio.client import ClientConnection

from ..base import ModelClosed, ModelError, ModelEvent, ModelReconnected, SessionReady
from ..websocket import ProviderSocket, write_now
from .protocol import LiveConfig, LiveProtocol

log = logging.getLogger("voiceai.live")

GREETING_PROMPT = "The caller has just been connected. Greet them now."
RECONNECT_REASONS = frozenset({"expired", "connection_lost"})   # session.closed reasons worth a new session


class LiveSession(ProviderSocket):
    WHAT = "GPT-Live"
    log = log

    def __init__(self, url: str, api_key: str, config: LiveConfig, *, connect_timeout: float = 10.0,
                 max_queue: int = 500) -> None:
        self.url = url
        self._key = api_key
        self.proto = LiveProtocol(config)
        super().__init__(max_queue, connect_timeout)
        self._first: list[ModelEvent] = []

    @property
    def session_id(self) -> str | None:
        return self.proto.session_id

    async def _connect(self) -> None:
        """Open a socket, send `session.start`, wait for `session.started` (an `error` refuses it)."""
        await self._open(self.url, {"Authorization": f"Bearer {self._key}"}, self._handshake)

    async def _handshake(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        await ws.send(self.proto.start_message())
        while True:
            try:
                first = await asyncio.wait_for(ws.recv(), self._connect_timeout)
            except websockets.ConnectionClosed:
                raise ConnectionRefusedError("GPT-Live closed the connection before session.started") from None
            evs = self.proto.receive(first, loop.time())
            err = next((e for e in evs if isinstance(e, ModelError)), None)
            if err is not None:
                raise ConnectionRefusedError(f"GPT-Live refused session.start ({err.code}: {err.message})")
            if any(isinstance(e, SessionReady) for e in evs):
                break
        self._first = evs

    # --- client messages -----------------------------------------------------------------------------
    def send_audio(self, pcm: bytes) -> None:
        self._outbox.put(self.proto.audio_message(pcm), audio=True)

    def interrupt(self, item_id: str | None, played_ms: int) -> None:
        """Nothing to send: the model stops by itself when talked over; GPT-Live has no truncate (§2.6)."""

    def send_tool_result(self, call_id: str, output: str, respond: bool = True) -> None:
        # the backend's work resumes only with response.create, sent once the whole batch is answered
        for msg in self.proto.tool_result(call_id, output):
            self._outbox.put(msg)

    def send_text(self, text: str, respond: bool = False) -> None:
        """With `respond` the model is told (it may act on it); without, it is silent context."""
        self._outbox.put(self.proto.append("instructions" if respond else "thinking", text))

    def request_response(self, instructions: str | None = None) -> None:
        self._outbox.put(self.proto.append("instructions", instructions or GREETING_PROMPT))

    def respond_instead(self, instructions: str) -> None:
        self._outbox.put(self.proto.append("instructions", instructions))

    def say(self, text: str) -> None:
        self._outbox.put(self.proto.append("commentary", text))   # the model says it in its own words

    def update_instructions(self, instructions: str) -> None:
        self._outbox.put(self.proto.instructions_update(instructions))

    # --- server messages -----------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[ModelEvent]:
        loop = asyncio.get_running_loop()
        while True:
            assert self._ws is not None
            ws = self._ws
            first, self._first = self._first, []
            for ev in first:          # session.started, read while connecting
                yield ev
            why = ""
            try:
                while True:
                    deadline = self.proto.deadline()
                    if deadline is None:
                        data = await ws.recv()
                    else:
                        try:
                            data = await asyncio.wait_for(ws.recv(), max(0.0, deadline - loop.time()))
                        except asyncio.TimeoutError:
                            for ev in self.proto.tick(loop.time()):
                                yield ev
                            continue
                    now = loop.time()
                    evs = self.proto.tick(now) + self.proto.receive(data, now)
                    while self.proto.outgoing:
                        self._outbox.put(self.proto.outgoing.pop(0))
                    for ev in evs:
                        yield ev
                        if isinstance(ev, ModelError) and ev.fatal:
                            yield ModelClosed(f"fatal error {ev.code}")
                            return
                    if self.proto.closed_reason is not None:
                        break
            except websockets.ConnectionClosed as exc:
                rcvd = exc.rcvd
                why = f"connection closed ({rcvd.code} {rcvd.reason})" if rcvd else "connection lost (no close frame)"
            reason = self.proto.closed_reason
            if reason is not None:
                why = f"session closed ({reason})"
                if reason == "content":
                    yield ModelError("content", "the session was ended by moderation", fatal=True)
                    yield ModelClosed(why)
                    return
                if reason not in RECONNECT_REASONS:
                    yield ModelClosed(why)
                    return
            for ev in self.proto.new_session():   # the cut-off reply and its text
                yield ev
            if self._closing or not await self._reconnect(why.rstrip()):
                yield ModelClosed(why)
                return
            if ws is not self._ws and ws.transport is not None:
                ws.transport.abort()
            yield ModelReconnected(self.proto.session_id or "", why)

    def _resumed(self) -> str:
        return f"a new session seeded with {len(self.proto.history)} earlier turns"

    async def close(self) -> None:
        """`session.close` (ends backend work and billing at once), then the socket."""
        if not self._closing and self._ws is not None:
            write_now(self._ws, '{"type":"session.close"}')
        await super().close()
