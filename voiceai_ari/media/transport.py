"""Media transports: how a call's audio gets between Asterisk and the bot.

`MediaTransport` is the narrow interface a `Call` uses; `RtpMedia` implements it for ARI externalMedia over
RTP/UDP in the caller format of `formats.py`: slin24 big-endian in (Asterisk resamples to the model's rate
in C) or slin16 (our resampler, 16→24 kHz), G.722 PT 9 or L16 8 kHz PT 11 out; or G.711 (ulaw/alaw) passed
through untouched both ways, PT 0/8. Another transport (Asterisk's WebSocket channel) is one more class with
the same methods.

The asyncio parts here only move bytes between the socket, the loop's clock and the sans-I/O cores:
`InboundFilter` (rtp.py), `StreamResampler` (resample.py), `Playout`/`PacingClock` (playout.py) and the
return-path encoder (codec.py). The hot path runs once per 20 ms per direction and logs nothing.

Every call of the process sends on one `FrameClock` (frame_clock.py). By default each datagram is read when
it arrives (inbound latency under a millisecond). With ``read_per_tick`` (VOICEAI_APPEND_MS above 20, where
the caller's audio waits for its batch anyway) the socket is a plain non-blocking one that the 20 ms tick
drains: one wake-up per tick for all calls instead of one per packet, at up to 20 ms more inbound latency.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any, Protocol

from .codec import make_encoder, slin_be_to_le
from .formats import CallerFormat
from .frame_clock import TICK_LATE_BUCKETS, FrameClock
from .formats import caller_format as caller_format_row
from .ports import PortPool
from ..providers.base import MODEL_RATE
from .playout import Playout
from .resample import StreamResampler
from .rtp import InboundFilter, RtpSender

__all__ = ["CALLER_FORMAT", "TICK_LATE_BUCKETS", "FrameClock", "MediaTransport", "PortPool", "RtpMedia"]

log = logging.getLogger("voiceai.media")

# What externalMedia is asked for by default. slin24 is the model's own rate, so the caller's audio needs only
# a byte swap here; Asterisk resamples in C (its translator), which costs it less than numpy costs us. Asterisk
# sends it on a dynamic PT (123 on 22.10.1) that the inbound gate learns from the first packet.
CALLER_FORMAT = "slin24"
DRAIN_MARGIN = 0.060        # s after the last frame left, so it reaches the caller before a BYE
UPLINK_FILL_AFTER = 0.060    # s without caller RTP before silence is fed to the model (simple_bridge gaps)
DTX_KEEPALIVE_FRAMES = 50    # with dtx: one silent packet per second while the bot is silent


class MediaTransport(Protocol):
    """What a Call needs from a media path. Audio in and out is in the model session's format: 24 kHz PCM16
    LE, or G.711 (8 kHz, a byte a sample) with a G.711 caller format."""

    on_audio: Callable[[bytes], None] | None
    external_format: str   # the externalMedia `format` this transport expects from Asterisk

    @property
    def external_host(self) -> str:
        """host:port that Asterisk should send the call's media to."""

    def set_remote(self, host: str, port: int) -> None:
        """Where Asterisk receives (UNICASTRTP_LOCAL_ADDRESS/PORT); starts the outbound clock."""

    def play(self, pcm: bytes, item_id: str | None) -> None:
        """Queue model audio for paced playout. Never drops audio."""

    def end_item(self) -> None:
        """The current model item has no more audio: flush its tail."""

    def interrupt(self) -> tuple[str | None, int]:
        """Barge-in: stop at once, drop what is queued, return (item_id, ms of it actually sent)."""

    async def drained(self) -> None:
        """Return once every queued frame has been sent (the bot's last words are on the wire)."""

    @property
    def busy(self) -> bool:
        """Bot audio is queued or playing."""

    def until_next_frame(self) -> float:
        """Seconds until the next outbound frame leaves (what a barge-in waits at most)."""

    def stats(self) -> dict[str, Any]:
        """Counters for logs and the control API."""

    async def close(self) -> None:
        """Stop the clock and release the socket; idempotent."""


RECV_MAX = 2048   # bytes read per datagram (read_per_tick); RTP of 20 ms slin24 is 972, larger is not ours


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class RtpMedia(asyncio.DatagramProtocol):
    """ARI externalMedia over RTP/UDP for one call, in one caller format (`formats.CALLER_FORMATS`)."""

    def __init__(self, *, bind_host: str, advertise_host: str, pool: PortPool,
                 return_codec: str = "g722", clock: FrameClock | None = None, dtx: bool = False,
                 caller_format: str | CallerFormat = CALLER_FORMAT, read_per_tick: bool = False) -> None:
        self._bind_host, self._advertise_host, self._pool = bind_host, advertise_host, pool
        self.port = 0
        self.on_audio: Callable[[bytes], None] | None = None
        self.on_sent: Callable[[bytes], None] | None = None   # each bot frame as sent (meters, recording)
        cf = self.format = caller_format if isinstance(caller_format, CallerFormat) else \
            caller_format_row(caller_format)
        self.external_format = cf.name
        self.filter = InboundFilter(payload_type=cf.payload_type, payload_bytes=cf.payload_bytes)
        # caller audio -> the model's: a byte swap (slin24), our resampler (slin16), or nothing (G.711)
        self._up = StreamResampler(cf.rate, MODEL_RATE) if not cf.passthrough and cf.rate != MODEL_RATE else None
        self._passthrough = cf.passthrough
        self._uplink_silence = bytes((cf.silence_byte,)) * cf.model_frame_bytes
        if cf.passthrough:
            # G.711 both ways: the model's bytes are the payload; nothing is resampled or encoded
            self.encoder = None
            self._down = None
            self.playout = Playout(8000, sample_bytes=1, pad=cf.silence_byte)
            self._silence = bytes((cf.silence_byte,)) * cf.payload_bytes
            self.sender = RtpSender(cf.payload_type or 0, 160)
            self.codec_name = cf.name
        else:
            self.encoder = make_encoder(return_codec)
            fmt = self.encoder.fmt
            self._down = StreamResampler(MODEL_RATE, fmt.sample_rate)
            self.playout = Playout(fmt.sample_rate)
            self._silence = bytes(fmt.sample_rate // 50 * 2)
            self.sender = RtpSender(fmt.payload_type, fmt.ts_step)
            self.codec_name = fmt.name
        self._dtx = dtx
        self._quiet = 0                    # silent frames in a row (dtx)
        self.dtx_skipped = 0
        self.clock = clock if clock is not None else FrameClock.shared()
        self._transport: asyncio.DatagramTransport | None = None
        # read_per_tick: a plain non-blocking socket, drained by the 20 ms tick instead of a wake-up per packet
        self._read_per_tick = read_per_tick
        self._sock: socket.socket | None = None
        self._remote: tuple[str, int] | None = None
        self._ticking = False
        self._reanchors0 = 0
        self._loop = asyncio.get_running_loop()
        self._last_rx = 0.0
        self.uplink_fill_frames = 0
        self.socket_errors = 0
        self._item: str | None = None      # model item whose audio is being queued
        self._muted: set[str] = set()      # items cut off by a barge-in: late deltas are discarded
        self._odd = b""                    # a trailing half sample of model audio
        self.closed = False

    # --- set-up ------------------------------------------------------------------------------------------
    async def open(self) -> None:
        """Bind a port from the pool (skipping ports something else holds).

        The advertised host is resolved here: Asterisk's chan_rtp resolves `external_host` with its own
        DNS lookup, which ignores /etc/hosts, so a name such as a compose service must become an address.
        """
        infos = await self._loop.getaddrinfo(self._advertise_host, None, family=socket.AF_INET,
                                             type=socket.SOCK_DGRAM)
        self._advertise_host = infos[0][4][0]
        for _ in range(len(self._pool._ports)):
            port = self._pool.take()
            try:
                # bound here, not by create_datagram_endpoint: uvloop's error for a taken port has no errno
                sock = _bound_socket(self._bind_host, port)
                if self._read_per_tick:
                    self._sock = sock
                else:
                    self._transport, _ = await self._loop.create_datagram_endpoint(lambda: self, sock=sock)
                self.port = port
                return
            except OSError as exc:
                self._pool.release(port)
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise RuntimeError("every RTP port in the range is taken by another process")

    @property
    def external_host(self) -> str:
        return f"{self._advertise_host}:{self.port}"

    @property
    def sent_rate(self) -> int:
        """Sample rate of the frames given to `on_sent` (the return codec's; G.711 passthrough: 8000)."""
        return 8000 if self.encoder is None else self.encoder.fmt.sample_rate

    @property
    def audio_law(self) -> str | None:
        """"ulaw"/"alaw" when the call's audio passes through as G.711 both ways (what `on_audio` and
        `on_sent` carry), else None (16-bit PCM)."""
        return self.format.name if self._passthrough else None

    def set_remote(self, host: str, port: int) -> None:
        self._remote = (host, port)
        self.filter.expected_source = (host, port)
        if not self._ticking and not self.closed:
            self._last_rx = self._loop.time()
            self._ticking = True
            self._reanchors0 = self.clock.pacing.reanchors   # the clock is shared: count only this call's
            self.clock.join(self._tick)

    # --- inbound: Asterisk -> model ----------------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:  # type: ignore[override]
        self.clock.poll()
        self._received(data, addr)

    def _read_queued(self, sock: socket.socket) -> None:
        """read_per_tick: every datagram that arrived since the last tick, in order."""
        while True:
            try:
                data, addr = sock.recvfrom(RECV_MAX)
            except BlockingIOError:
                return
            except OSError:            # an ICMP error queued on the socket, etc.: not fatal for the call
                self.socket_errors += 1
                return
            self._received(data, addr)

    def _received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        payload = self.filter.accept(data, (addr[0], addr[1]))
        if payload is None:
            return
        self._last_rx = self._loop.time()
        if self.on_audio is not None:
            if self._passthrough:
                self.on_audio(payload)
            elif self._up is None:
                self.on_audio(slin_be_to_le(payload))
            else:
                self.on_audio(self._up.process(payload, big_endian=True))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable while Asterisk's side is not up yet, etc.: not fatal for the call
        self.socket_errors += 1

    # --- outbound: model -> Asterisk ---------------------------------------------------------------------
    def play(self, pcm: bytes, item_id: str | None) -> None:
        if item_id in self._muted:
            return
        self._item = item_id
        if self._down is None:                 # G.711 passthrough: queued as it came
            self.playout.push(pcm, item_id)
            return
        if self._odd:                          # a delta may split a sample: carry the odd byte over
            pcm, self._odd = self._odd + pcm, b""
        if len(pcm) & 1:
            pcm, self._odd = pcm[:-1], pcm[-1:]
        out = self._down.process(pcm)
        if out:
            self.playout.push(out, item_id)

    def end_item(self) -> None:
        self._odd = b""
        if self._item in self._muted:
            return
        if self._down is None:
            self.playout.end_item()
            return
        tail = self._down.flush()
        if tail:
            self.playout.push(tail, self._item)
        self.playout.end_item()
        self._down.reset()

    def interrupt(self) -> tuple[str | None, int]:
        if self._down is not None:
            self._down.reset()
        self._odd = b""
        item_id, played_ms = self.playout.clear()
        if self._item is not None:
            # the model keeps streaming the cut-off item until its cancel lands: none of it may play
            self._muted.add(self._item)
        return item_id, played_ms

    def _tick(self, due: int, now: float) -> None:
        """The shared clock's 20 ms tick: read what came (read_per_tick), send what is due, feed uplink
        silence during caller gaps."""
        if self._sock is not None:
            self._read_queued(self._sock)
        for _ in range(due):
            self._send_frame()
        if now - self._last_rx > UPLINK_FILL_AFTER and self.on_audio is not None:
            # Asterisk's simple_bridge forwards only while the caller sends; the model's VAD still
            # needs time to pass to see the end of a turn.
            self.uplink_fill_frames += 1
            self.on_audio(self._uplink_silence)

    def _send_frame(self) -> None:
        item = self.playout.pop()
        if item is None:
            if self._dtx:
                self._quiet += 1
                if self._quiet % DTX_KEEPALIVE_FRAMES:
                    # nothing encoded, nothing sent: the encoder and Asterisk's decoder stay in step, the
                    # timestamp moves on, and the next talkspurt carries the marker bit (Playout says so)
                    self.sender.skip()
                    self.dtx_skipped += 1
                    return
            marker = False
            payload = self._silence if self.encoder is None else self.encoder.encode(self._silence)
        else:
            self._quiet = 0
            frame, marker = item
            payload = frame if self.encoder is None else self.encoder.encode(frame)
            if self.on_sent is not None:
                self.on_sent(frame)
        if self._remote is None:
            return
        if self._sock is not None:
            try:
                self._sock.sendto(self.sender.packet(payload, marker), self._remote)
            except OSError:            # a full send buffer or an ICMP error: this frame is lost, not the call
                self.socket_errors += 1
        elif self._transport is not None:
            self._transport.sendto(self.sender.packet(payload, marker), self._remote)

    @property
    def busy(self) -> bool:
        return self.playout.queued_ms > 0

    def until_next_frame(self) -> float:
        return self.clock.until_next() if self._ticking else 0.0

    async def drained(self) -> None:
        while self.playout.queued_ms > 0 and not self.closed:
            await asyncio.sleep(0.020)
        await asyncio.sleep(DRAIN_MARGIN)

    # --- end ---------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        f = self.filter
        return {"port": self.port, "rx_packets": f.received, "rx_accepted": f.accepted,
                "rx_dropped": dict(f.drops), "tx_packets": self.sender.packets_sent,
                "playout_underruns": self.playout.underruns,
                "clock_reanchors": self.clock.pacing.reanchors - self._reanchors0,
                "audio_in_ms": f.accepted * 20, "audio_out_ms": self.playout.frames_out * 20,
                "uplink_fill_frames": self.uplink_fill_frames, "socket_errors": self.socket_errors,
                "dtx_skipped": self.dtx_skipped,
                "codec": self.codec_name, "caller_format": self.external_format}

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._ticking:
            self.clock.leave(self._tick)
            self._ticking = False
        if self._transport is not None:
            self._transport.close()
        if self._sock is not None:
            self._sock.close()
        if self.port:
            self._pool.release(self.port)
