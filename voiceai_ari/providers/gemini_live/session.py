"""`ModelSession` over a real (or fake) Gemini Live WebSocket: the asyncio adapter.

It moves text between a `websockets` connection and `GeminiProtocol`, and resamples the caller's 24 kHz
audio to the 16 kHz Gemini takes. It keeps the call up when the connection ends: on `goAway` (the
~10-minute connection limit) it reconnects at once with the latest session-resumption handle, as it does
after a dropped socket or a 1011; the caller hears at most a short gap and the conversation goes on where
it was. Close codes 1007 (invalid argument, bad key) and 1008 (unknown model) are not retried: they
become a fatal `ModelError` and the event stream ends (gemini-live.md §9, §10).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import websockets
from websockets.asyncio.client import ClientConnection

from ...media.resample import StreamResampler
from ..base import MODEL_RATE, ModelClosed, ModelError, ModelEvent, ModelReconnected, SessionReady
from ..websocket import ProviderSocket
from .protocol import INPUT_RATE, GeminiConfig, GeminiProtocol

log = logging.getLogger("voiceai.gemini")

FATAL_CLOSE_CODES = frozenset({1007, 1008})
GREETING_PROMPT = "(The caller has just been connected. Greet them now.)"


class GeminiSession(ProviderSocket):
    WHAT = "Gemini"
    RECONNECT_DELAYS = (0.0, 0.2, 1.0)   # s before each attempt; the first at once (goAway: a planned end)
    log = log
    def __init__(self, url: str, api_key: str, config: GeminiConfig, *, connect_timeout: float = 10.0,
                 max_queue: int = 500) -> None:
        self.url = url
        self._key = api_key
        self.proto = GeminiProtocol(config)
        super().__init__(max_queue, connect_timeout)
        self._up = StreamResampler(MODEL_RATE, INPUT_RATE)
        self._first: list[ModelEvent] = []

    @property
    def session_id(self) -> str | None:
        return self.proto.session_id

    async def _connect(self) -> None:
        """Open a socket, send `setup` (with the resumption handle if there is one), wait for setupComplete."""
        await self._open(self.url, {"x-goog-api-key": self._key}, self._handshake)

    async def _handshake(self, ws: ClientConnection) -> None:
        try:
            await ws.send(self.proto.setup_message())
            first = await asyncio.wait_for(ws.recv(), self._connect_timeout)
        except websockets.ConnectionClosed as exc:   # refused: the close frame says why (§10)
            rcvd = exc.rcvd
            raise ConnectionRefusedError(
                f"Gemini Live refused the session ({rcvd.code if rcvd else 'no close frame'}: "
                f"{rcvd.reason if rcvd else ''})") from None
        self._first = self.proto.receive(first)
        if not any(isinstance(e, SessionReady) for e in self._first):
            raise ConnectionRefusedError("Gemini Live: no setupComplete")

    # --- client messages -----------------------------------------------------------------------------
    def send_audio(self, pcm: bytes) -> None:
        pcm16 = self._up.process(pcm)
        if pcm16:
            self._outbox.put(self.proto.audio_message(pcm16), audio=True)

    def interrupt(self, item_id: str | None, played_ms: int) -> None:
        """Nothing to send: the server has already cut its reply, and Gemini has no truncate (§7)."""

    def send_tool_result(self, call_id: str, output: str, respond: bool = True) -> None:
        for msg in self.proto.tool_result(call_id, output):   # the model goes on by itself after it
            self._outbox.put(msg)

    def send_text(self, text: str, respond: bool = False) -> None:
        self._outbox.put(self.proto.text_turn(text, turn_complete=respond))

    def request_response(self, instructions: str | None = None) -> None:
        self._outbox.put(self.proto.text_turn(instructions or GREETING_PROMPT))

    def say(self, text: str) -> None:
        self._outbox.put(self.proto.text_turn(f"Tell the caller now, in your own voice: {text}"))

    def update_instructions(self, instructions: str) -> None:
        self._outbox.put(self.proto.instructions_update(instructions))

    # --- server messages -----------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[ModelEvent]:
        while True:
            assert self._ws is not None
            code: int | None = None
            reason = ""
            first, self._first = self._first, []
            for ev in first:          # setupComplete, read while connecting
                yield ev
            try:
                async for data in self._ws:
                    for ev in self.proto.receive(data):
                        yield ev
                    if self.proto.go_away is not None:
                        break      # reconnect now, while the old connection still has time left
            except websockets.ConnectionClosed as exc:
                code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "no close frame")
            else:
                code, reason = self._ws.close_code, self._ws.close_reason or ""
            why = (f"goAway (time left {self.proto.go_away})" if self.proto.go_away is not None
                   else f"connection closed ({code} {reason})".rstrip())
            if code in FATAL_CLOSE_CODES and self.proto.go_away is None:
                yield ModelError(str(code), reason or "refused by the server", fatal=True)
                yield ModelClosed(why)
                return
            old = self._ws
            if self._closing or not await self._reconnect(why):
                yield ModelClosed(why)
                return
            if old is not None and old is not self._ws and old.transport is not None:
                old.transport.abort()
            yield ModelReconnected(self.proto.session_id or "", why)

    def _new_connection(self) -> None:
        self.proto.new_connection()

    def _resumed(self) -> str:
        return "with its resumption handle" if self.proto.resume_handle else "no handle: a fresh session"
