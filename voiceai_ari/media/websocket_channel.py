"""`WebSocketMedia`: a call's audio over Asterisk's WebSocket media channel (chan_websocket).

externalMedia ``transport=websocket connection_type=server encapsulation=none transport_data=f(json)``
gives a channel with ``MEDIA_WEBSOCKET_CONNECTION_ID``; the bot dials ``ws://<ARI host>/media/<id>``
(subprotocol ``media``, nothing to listen on). Binary frames are little-endian slin at the channel's rate
both ways: slin24 is the model's own format (nothing to convert either way), slin16 goes through our
resampler. Asterisk re-times what we send (its channel timer takes one frame per 20 ms), so model audio
is written as it arrives: no per-call clock. The control side (marks, FLUSH_MEDIA, XOFF/XON) is the
sans-I/O `MediaSocketCore` (mediaws.py); this class only moves bytes between it, the socket (websockets'
sans-I/O client protocol on a plain asyncio transport: no task hop per message) and the model.

`on_sent(pcm, t)` (the call's recording and bot level meter) gets the bot's audio as the caller hears it,
not as it is handed over: the core releases it on each processed mark and on the process's 100 ms clock,
stamped with when Asterisk's timer took it; what a barge-in flushed is never given.

Ordering (asterisk.md §8.5): the channel enters Stasis only once the socket is connected, so the call
connects first, then waits for the channel's StasisStart, then adds it to the bridge.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import weakref
from collections.abc import Callable
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from ..providers.base import MODEL_RATE
from .mediaws import BadMessage, MediaSocketCore
from .resample import StreamResampler
from .transport import FrameClock

log = logging.getLogger("voiceai.media")

FORMATS = {"slin24": 24000, "slin16": 16000}
CONTROL_JSON = True           # transport_data=f(json); the parser reads plain text as well
DRAIN_MARGIN = 0.060          # s after the last mark came back, for the bridge to pass the last frame on
MARK_GRACE = 1.0              # s past the computed end of play before a farewell stops waiting for marks
UPLINK_FILL_AFTER = 0.060     # s without caller audio before silence is fed to the model
FILL_PERIOD = 0.100           # s: one process-wide check for caller gaps, not a per-call 20 ms clock
MAX_MESSAGE = 1 << 20         # bytes: Asterisk sends 20 ms frames; anything near this is not media


class MediaSocketRefused(ConnectionError):
    """Asterisk's HTTP server refused the /media upgrade (no such connection id, no chan_websocket, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _FillClock:
    """The process's 100 ms check for caller gaps (Asterisk's simple_bridge forwards the caller's audio
    only while the caller sends; the model's VAD still needs time to pass to see a turn end)."""

    _shared: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FrameClock]" = weakref.WeakKeyDictionary()

    @classmethod
    def get(cls) -> FrameClock:
        loop = asyncio.get_running_loop()
        clock = cls._shared.get(loop)
        if clock is None:
            clock = cls._shared[loop] = FrameClock(FILL_PERIOD)
        return clock


def media_url(ari_url: str, connection_id: str) -> str:
    """ws(s)://<ARI host>/media/<id> from the ARI base URL (http(s)://host:port)."""
    scheme, _, rest = ari_url.partition("://")
    host = rest.split("/", 1)[0]
    return f"{'wss' if scheme == 'https' else 'ws'}://{host}/media/{connection_id}"


class WebSocketMedia(asyncio.Protocol):
    """ARI externalMedia over chan_websocket for one call (the MediaTransport interface)."""

    def __init__(self, *, ari_url: str, fmt: str = "slin24") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"chan_websocket media needs slin24 or slin16, not {fmt}")
        self.external_format = fmt
        self.rate = FORMATS[fmt]
        self._ari_url = ari_url
        self.on_audio: Callable[[bytes], None] | None = None
        self.core = MediaSocketCore(self.rate // 50 * 2, use_json=CONTROL_JSON)
        self._up = StreamResampler(self.rate, MODEL_RATE) if self.rate != MODEL_RATE else None
        self._down = StreamResampler(MODEL_RATE, self.rate) if self.rate != MODEL_RATE else None
        self._odd = b""
        self._loop = asyncio.get_running_loop()
        self._proto: ClientProtocol | None = None
        self._transport: asyncio.Transport | None = None
        self._handshake: asyncio.Future[None] = self._loop.create_future()
        self._started: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._url = ""
        self._filling = False
        self._last_rx = 0.0
        self._uplink_silence = bytes(MODEL_RATE * 2 * int(FILL_PERIOD * 1000) // 1000)
        self.rx_frames = 0
        self.rx_bytes = 0
        self.uplink_fill_ms = 0
        self.dtmf_events = 0
        self.errors = 0           # ERROR events from Asterisk
        self.bad_messages = 0     # text we could not read, unexpected frames: counted, not fatal
        self.closed = False
        self.peer_closed = False
        self._sent_seen = 0           # frames sent, as of the last _write
        self._play_end = 0.0          # loop time by which Asterisk will have played all of them
        self.mark_timeouts = 0

    @property
    def on_sent(self) -> Callable[[memoryview, float], None] | None:
        """Called with the bot's audio (slin at `sent_rate`) as the caller hears it, and the loop time it was
        played: one call per run of frames, not per frame."""
        return self.core.on_played

    @on_sent.setter
    def on_sent(self, fn: Callable[[memoryview, float], None] | None) -> None:
        self.core.on_played = fn

    @property
    def sent_rate(self) -> int:
        """Sample rate of what `on_sent` carries: the channel's (slin24 or slin16)."""
        return self.rate

    # --- set-up ------------------------------------------------------------------------------------------
    async def open(self) -> None:
        """Nothing to bind: the bot dials Asterisk once the channel exists (`connect`)."""

    @property
    def external_host(self) -> str:
        return self._url or "chan_websocket"

    def ari_params(self) -> dict[str, Any]:
        """The externalMedia parameters for this transport (ari.external_media keywords)."""
        return {"fmt": self.external_format, "transport": "websocket", "encapsulation": "none",
                "connection_type": "server", "transport_data": "f(json)" if CONTROL_JSON else None}

    async def connect(self, channelvars: dict[str, Any]) -> None:
        """Dial /media/<MEDIA_WEBSOCKET_CONNECTION_ID>; returns once Asterisk's MEDIA_START arrived."""
        conn_id = str(channelvars.get("MEDIA_WEBSOCKET_CONNECTION_ID") or "")
        if not conn_id:
            raise RuntimeError("externalMedia answer has no MEDIA_WEBSOCKET_CONNECTION_ID")
        self._url = media_url(self._ari_url, conn_id)
        uri = parse_uri(self._url)
        self._proto = ClientProtocol(uri, subprotocols=["media"], max_size=MAX_MESSAGE)  # type: ignore[list-item]
        ctx = ssl.create_default_context() if uri.secure else None
        await self._loop.create_connection(lambda: self, uri.host, uri.port, ssl=ctx)
        self._proto.send_request(self._proto.connect())
        self._write()
        try:
            await self._handshake
        except InvalidHandshake as exc:
            status = getattr(getattr(exc, "response", None), "status_code", 0)
            raise MediaSocketRefused(status, f"{self._url}: {exc}") from None
        start = await self._started
        if self.core.control != "json":
            # f(json) not understood: chan_websocket before 22.8 / 20.18 / 23.2, which has no MARK_MEDIA
            # either, and marks are what tells the bot what the caller heard
            raise RuntimeError("chan_websocket answered in plain text: VOICEAI_TRANSPORT=websocket needs JSON "
                               "control and MARK_MEDIA (Asterisk 22.8+, 20.18+ or 23.2+)")
        if start.get("format") != self.external_format:
            raise RuntimeError(f"chan_websocket speaks {start.get('format')}, not {self.external_format}")

    def set_remote(self, host: str, port: int) -> None:
        """RTP only; the media socket knows its peer."""

    # --- socket --------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        proto = self._proto
        if proto is None:
            return
        proto.receive_data(data)
        for ev in proto.events_received():
            if isinstance(ev, Frame):
                self._frame(ev)
            elif isinstance(ev, Response) and not self._handshake.done():
                if proto.handshake_exc is not None:
                    self._handshake.set_exception(proto.handshake_exc)
                else:
                    self._handshake.set_result(None)
                    self._start_fill()
        if proto.handshake_exc is not None and not self._handshake.done():
            self._handshake.set_exception(proto.handshake_exc)
        self._write()

    def _frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.BINARY and frame.fin:
            self._last_rx = self._loop.time()
            self.rx_frames += 1
            self.rx_bytes += len(frame.data)
            if self.on_audio is not None:
                pcm = bytes(frame.data)
                self.on_audio(self._up.process(pcm) if self._up is not None else pcm)
        elif frame.opcode is Opcode.TEXT and frame.fin:
            self._text(bytes(frame.data).decode("utf-8", "replace"))
        elif frame.opcode is Opcode.CLOSE:
            self.peer_closed = True
        elif frame.opcode not in (Opcode.PING, Opcode.PONG):
            self.bad_messages += 1

    def _text(self, text: str) -> None:
        try:
            name, fields = self.core.on_text(text, self._loop.time())
        except BadMessage:
            self.bad_messages += 1
            return
        if name == "MEDIA_START" and not self._started.done():
            self._started.set_result(fields)
        elif name == "DTMF_END":
            # the same key also arrives as ARI ChannelDtmfReceived on the caller's channel, which every
            # transport has: that stays the one source for the model, this one is counted
            self.dtmf_events += 1
        elif name == "ERROR":
            self.errors += 1
            if self.errors <= 3:
                log.warning("! chan_websocket: %s", str(fields.get("error_text", ""))[:200])

    def _write(self) -> None:
        """Frame what the core queued and hand it to the transport."""
        proto, transport = self._proto, self._transport
        if proto is None:
            return
        out = self.core.out
        if out:
            if transport is not None and not self.closed and not self.peer_closed:
                for msg in out:
                    if isinstance(msg, str):
                        proto.send_text(msg.encode())
                    else:
                        proto.send_binary(msg)
            out.clear()
        sent = self.core.frames_sent
        if sent != self._sent_seen:   # when Asterisk will have played it all, from our own send times
            self._play_end = max(self._play_end, self._loop.time()) + (sent - self._sent_seen) * 0.020
            self._sent_seen = sent
        chunks = proto.data_to_send()
        if transport is None or transport.is_closing() or not chunks:
            return
        # one write (one send system call) for a delta's mark and frames together
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if data:
            transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.peer_closed = True
        self._transport = None
        for fut in (self._handshake, self._started):
            if not fut.done():
                fut.set_exception(ConnectionError("media socket closed during set-up"))
        self._stop_fill()

    # --- inbound gaps --------------------------------------------------------------------------------------
    def _start_fill(self) -> None:
        if not self._filling and not self.closed:
            self._last_rx = self._loop.time()
            self._filling = True
            _FillClock.get().join(self._fill)

    def _stop_fill(self) -> None:
        if self._filling:
            _FillClock.get().leave(self._fill)
            self._filling = False

    def _fill(self, due: int, now: float) -> None:
        self.core.deliver(now)          # the bot audio played since the last tick, to on_sent
        if now - self._last_rx > UPLINK_FILL_AFTER and self.on_audio is not None:
            for _ in range(due):
                self.uplink_fill_ms += int(FILL_PERIOD * 1000)
                self.on_audio(self._uplink_silence)

    # --- outbound: model -> Asterisk ---------------------------------------------------------------------
    def play(self, pcm: bytes, item_id: str | None) -> None:
        if self._down is not None:
            if self._odd:
                pcm, self._odd = self._odd + pcm, b""
            if len(pcm) & 1:
                pcm, self._odd = pcm[:-1], pcm[-1:]
            pcm = self._down.process(pcm)
        self.core.push(pcm, item_id)
        if self.core.out:
            self._write()

    def end_item(self) -> None:
        if self._down is not None:
            self._odd = b""
            tail = self._down.flush()
            self._down.reset()
            if tail:
                self.core.push(tail, self.core._item)
        self.core.end_item()
        self._write()

    def interrupt(self) -> tuple[str | None, int]:
        if self._down is not None:
            self._down.reset()
            self._odd = b""
        item, heard = self.core.interrupt(self._loop.time())
        self._play_end = self._loop.time()    # flushed: nothing left to play
        self._write()
        return item, heard

    @property
    def busy(self) -> bool:
        return self.core.busy(self._loop.time())

    def until_next_frame(self) -> float:
        """Asterisk's channel timer takes the next frame within 20 ms; its phase is not visible here."""
        return 0.020

    async def drained(self) -> None:
        """Return once the caller has heard the last audio: every mark sent has come back. Should marks stop
        coming back, the time Asterisk needs to play what was sent (from our own send times) plus
        MARK_GRACE bounds the wait, so a farewell is never cut short and a hang-up never waits 30 s."""
        while not self.core.all_heard and not self.closed and not self.peer_closed:
            if self._loop.time() > self._play_end + MARK_GRACE:
                self.mark_timeouts += 1
                log.warning("! chan_websocket: marks not answered %.1f s after the audio should have played; "
                            "going on", MARK_GRACE)
                break
            await asyncio.sleep(0.020)
        await asyncio.sleep(DRAIN_MARGIN)

    # --- end ---------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        # rx_packets/tx_packets: the frames each way, under the names the metrics and control API sum for RTP
        return {"transport": "websocket", "format": self.external_format, "codec": self.external_format,
                "rx_packets": self.rx_frames, "tx_packets": self.core.frames_sent, "rx_frames": self.rx_frames,
                "audio_in_ms": self.rx_bytes * 500 // self.rate,
                "audio_out_ms": self.core.frames_sent * 20, **self.core.stats(),
                "uplink_fill_ms": self.uplink_fill_ms, "dtmf_events": self.dtmf_events,
                "errors": self.errors, "bad_messages": self.bad_messages, "mark_timeouts": self.mark_timeouts}

    async def close(self) -> None:
        """Close the socket (Asterisk then hangs up its channel); idempotent."""
        if self.closed:
            return
        self.core.deliver(self._loop.time())   # what was played since the last tick
        self._stop_fill()
        proto, transport = self._proto, self._transport
        if proto is not None and transport is not None and not transport.is_closing():
            try:
                proto.send_close(1000)
                self._write()
            except Exception:   # already closing on the protocol's side
                pass
            transport.close()
        self.closed = True
        for fut in (self._handshake, self._started):
            if not fut.done():
                fut.cancel()
