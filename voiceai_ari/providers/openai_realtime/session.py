"""`ModelSession` over a real (or fake) OpenAI Realtime GA WebSocket: the asyncio adapter.

It only moves text between a `websockets` connection and `RealtimeProtocol`. It also keeps the call alive
when the model side breaks: if the socket drops, or the server ends the session at its 60-minute limit
(`session_expired`), it connects again, sends the same `session.update`, re-seeds the conversation with the
text of the earlier turns, and goes on; the call only hears a short gap. After `RECONNECT_DELAYS` attempts
in a row have failed, the event stream ends with `ModelClosed` and the call ends (or falls back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection

from .credentials import ApiKey, Credentials
from ..base import ModelClosed, ModelError, ModelEvent, ModelReconnected
from ..websocket import ProviderSocket
from .audio_batch import APPEND_MS_MIN, AudioBatch
from .protocol import RealtimeProtocol, SessionConfig

log = logging.getLogger("voiceai.realtime")

CANCEL_GRACE = 0.3                # s after a barge-in before we cancel a response the server did not cancel
OWN_RESPONSE_WAIT = 1.5           # s to wait for the server's own response that `respond_instead` replaces
BATCH_GRACE = 0.04                # s past a batch's length before a part batch goes anyway (the caller's audio stopped)


class RealtimeSession(ProviderSocket):
    log = log
    def __init__(self, url: str, credentials: Credentials | str, config: SessionConfig, *,
                 connect_timeout: float = 10.0, max_queue: int = 500) -> None:
        sep = "&" if "?" in url else "?"
        self.url = f"{url}{sep}{urlencode({'model': config.model})}"
        self._credentials = ApiKey(credentials) if isinstance(credentials, str) else credentials
        self.proto = RealtimeProtocol(config)
        super().__init__(max_queue, connect_timeout)
        self.cancels_sent = 0
        # VOICEAI_APPEND_MS above one frame: caller audio goes in batches (every other client event, a
        # deadline and close send what is kept first, so nothing is reordered or lost)
        self._batch = (AudioBatch.of_ms(config.append_ms, config.bytes_per_ms)
                       if config.append_ms > APPEND_MS_MIN else None)
        self._batch_deadline: asyncio.TimerHandle | None = None

    @property
    def session_id(self) -> str | None:
        return self.proto.session_id

    async def _connect(self) -> None:
        """Open a socket, configure the session, replay the history, then start sending queued events."""
        token = await asyncio.wait_for(self._credentials.bearer(), self._connect_timeout)
        await self._open(self.url, {"Authorization": f"Bearer {token}"}, self._handshake)

    async def _handshake(self, ws: ClientConnection) -> None:
        # the server speaks first: session.created, or an error (the live API authenticates after the
        # upgrade and sends an error before closing)
        first = self.proto.receive(await asyncio.wait_for(ws.recv(), self._connect_timeout))
        errors = [e for e in first if isinstance(e, ModelError)]
        if errors or self.proto.session_id is None:
            what = f"{errors[0].code}: {errors[0].message}" if errors else "no session.created"
            raise ConnectionRefusedError(f"Realtime session refused ({what})")
        await ws.send(self.proto.session_update())
        for msg in self.proto.restore_history():
            await ws.send(msg)

    # --- client events -----------------------------------------------------------------------------------
    def send_audio(self, pcm: bytes) -> None:
        batch = self._batch
        if batch is None:
            self._outbox.put(self.proto.append_audio(pcm), True)
            return
        started = not batch
        full = batch.add(pcm)
        if full is not None:
            if self._batch_deadline is not None:
                self._batch_deadline.cancel()
                self._batch_deadline = None
            self._outbox.put(self.proto.append_audio(full), True)
        elif started:
            self._batch_deadline = asyncio.get_running_loop().call_later(
                self.proto.config.append_ms / 1000 + BATCH_GRACE, self._flush_audio)

    def _flush_audio(self) -> None:
        """Send the caller audio kept so far (before another client event, at the deadline, at close)."""
        if self._batch_deadline is not None:
            self._batch_deadline.cancel()
            self._batch_deadline = None
        pcm = self._batch.take() if self._batch is not None else None
        if pcm is not None:
            self._outbox.put(self.proto.append_audio(pcm), True)

    def interrupt(self, item_id: str | None, played_ms: int) -> None:
        for msg in self.proto.interrupt(item_id, played_ms):
            self._put(msg)
        if self.proto.config.interrupt_response and self.proto.response_active:
            # the server should cancel by itself; if it has not within CANCEL_GRACE, cancel explicitly
            rid = self.proto.response_id
            asyncio.get_running_loop().call_later(CANCEL_GRACE, self._cancel_if_active, rid)

    def _cancel_if_active(self, response_id: str | None) -> None:
        for msg in self.proto.cancel_if_active(response_id):
            self.cancels_sent += 1
            self._put(msg)

    def send_tool_result(self, call_id: str, output: str, respond: bool = True) -> None:
        for msg in self.proto.tool_result(call_id, output, respond):
            self._put(msg)

    def send_text(self, text: str, respond: bool = False) -> None:
        for msg in self.proto.user_text(text, respond):
            self._put(msg)

    def request_response(self, instructions: str | None = None) -> None:
        for msg in self.proto.request_response(instructions):
            self._put(msg)

    def respond_instead(self, instructions: str) -> None:
        for msg in self.proto.respond_instead(instructions):
            self._put(msg)
        # the server answers an idle timeout by itself (A.7); should it not, ours must not wait forever
        asyncio.get_running_loop().call_later(OWN_RESPONSE_WAIT, self._no_response_to_replace)

    def _no_response_to_replace(self) -> None:
        if not self._closing:
            for msg in self.proto.no_response_to_replace():
                self._put(msg)

    def say(self, text: str) -> None:
        for msg in self.proto.say(text):
            self._put(msg)

    def update_instructions(self, instructions: str) -> None:
        self._put(self.proto.instructions_update(instructions))

    def _put(self, msg: str) -> None:
        """A client event other than audio: the audio kept in the batch goes first, so the order stays."""
        if self._batch:
            self._flush_audio()
        self._outbox.put(msg, False)

    async def close(self) -> None:
        self._flush_audio()
        await super().close()

    # --- server events -----------------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[ModelEvent]:
        while True:
            assert self._ws is not None
            expired = False
            try:
                async for text in self._ws:
                    for ev in self.proto.receive(text):
                        expired = expired or (isinstance(ev, ModelError) and ev.code == "session_expired")
                        yield ev
                    for msg in self.proto.take_pending():
                        self._put(msg)
            except websockets.ConnectionClosed as exc:
                reason = f"connection lost ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
            else:
                rc = self._ws.close_code
                reason = f"closed by server ({rc})" if rc is not None else "closed"
            if expired:
                reason = "session expired (60-minute limit)"
            if self._closing or not await self._reconnect(reason):
                yield ModelClosed(reason)
                return
            yield ModelReconnected(self.proto.session_id or "", reason)

    def _new_connection(self) -> None:
        self.proto.new_session()

    def _resumed(self) -> str:
        return f"{len(self.proto.history)} earlier turns restored"
