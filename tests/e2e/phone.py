"""The phone's media for the end-to-end tests: a Python RTP endpoint (``Phone``), so the test hears exactly
what a phone would hear, with arrival times, and no capture. Arrival times are the kernel's receive stamps
(SO_TIMESTAMPNS), so a stall of the test process does not show up as a gap in the far end's stream.
Signalling is sipp's (``caller.place_call``).

Media: one RTP packet every 20 ms on an absolute monotonic schedule (no drift), PT 9 G.722 (one
persistent encoder, RTP timestamp +160 per packet: G.722's RTP clock is 8000 Hz) or PT 8 PCMA (audio
resampled 16 -> 8 kHz at ``play()``). When nothing is queued the phone sends encoded silence, like a real
phone without silence suppression (Asterisk's simple_bridge only forwards the caller -> app direction while
the caller sends). Sending starts as soon as the far end's media address is known: from the 200 OK's SDP
answer (``place_call`` reads it from a file the scenario writes the moment the call is up) or, if that comes
later, from the first RTP packet received. Asterisk's Echo() never sends first, so the SDP answer is what
starts it. ``send_dtmf`` sends RFC 4733 events (PT 101) in the same stream.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import socket
import struct
import time
from dataclasses import dataclass

import numpy as np

from . import analysis

HOST = "127.0.0.1"
PTIME = 0.020
DTMF_PT = 101

CODECS = {
    # name: (payload type, rtpmap name, audio rate of the codec, samples per 20 ms at that rate)
    "g722": (9, "G722", 16000, 320),
    "pcma": (8, "PCMA", 8000, 160),
}


# ------------------------------------------------------------------------------------------------ RTP
@dataclass(frozen=True)
class RtpPacket:
    pt: int
    seq: int
    ts: int
    marker: bool
    ssrc: int
    payload: bytes
    src: tuple[str, int] | None = None

    @classmethod
    def parse(cls, data: bytes, src: tuple[str, int] | None = None) -> RtpPacket | None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return None
        b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
        off = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:  # header extension
            if len(data) < off + 4:
                return None
            off += 4 + 4 * int.from_bytes(data[off + 2:off + 4], "big")
        end = len(data)
        if b0 & 0x20 and end > off:  # padding
            end -= data[-1]
        if end < off:
            return None
        return cls(b1 & 0x7F, seq, ts, bool(b1 & 0x80), ssrc, bytes(data[off:end]), src)

    def pack(self) -> bytes:
        return struct.pack("!BBHII", 0x80, (0x80 if self.marker else 0) | self.pt, self.seq & 0xFFFF,
                           self.ts & 0xFFFFFFFF, self.ssrc) + self.payload


def _is_rtcp(data: bytes) -> bool:
    return len(data) >= 2 and data[0] >> 6 == 2 and 200 <= data[1] <= 206


# ------------------------------------------------------------------------------------------------ ports
# The harness's own UDP ports (each phone's RTP/RTCP, each sipp's SIP, media and control ports) come from this
# block: below Linux's ephemeral range (32768-60999 by default) and clear of every bot's VOICEAI_RTP_PORTS in
# the tests (40000-47999) and of Asterisk's RTP (10000-12399). A port the kernel picked at random could land
# in a bot's range: a phone there can take the first datagram of a stranger (test_rtp_gate's spoofer floods
# that range) for the far end, and then a test hears silence for reasons that have nothing to do with the bot.
HARNESS_PORTS = range(30000, 32768)
_handed_out: set[int] = set()  # never give the same port twice at once in this process
_cursor = [random.randrange(len(HARNESS_PORTS))]   # where the next search starts: not where the last run's did


def _bind_udp(port: int) -> socket.socket | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((HOST, port))
        return s
    except OSError:
        s.close()
        return None


def _free_port_block(offsets: tuple[int, ...], even: bool = False) -> tuple[int, list[socket.socket]]:
    """A base port p in HARNESS_PORTS such that p+o is free on 127.0.0.1 for every o in offsets; the sockets
    holding them are returned still bound (close them right before handing the ports to someone else)."""
    lo, n = HARNESS_PORTS.start, len(HARNESS_PORTS)
    for _ in range(n):
        base = lo + _cursor[0] % n
        _cursor[0] += 1
        if even:
            base &= ~1
        if base < lo or base + max(offsets) >= HARNESS_PORTS.stop or any(base + o in _handed_out for o in offsets):
            continue
        held = []
        for o in offsets:
            s = _bind_udp(base + o)
            if s is None:
                break
            held.append(s)
        if len(held) == len(offsets):
            _handed_out.update(base + o for o in offsets)
            _cursor[0] = base - lo + max(offsets) + 1
            return base, held
        for s in held:
            s.close()
    raise RuntimeError(f"no free UDP port block in {HARNESS_PORTS.start}-{HARNESS_PORTS.stop - 1} on {HOST}")


# ------------------------------------------------------------------------------------------------ Phone
_STAMP = struct.Struct("@qq")         # struct timespec: the kernel's receive time (SO_TIMESTAMPNS)
_CMSG = socket.CMSG_SPACE(_STAMP.size)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)   # Linux's value (asm-generic); Python < 3.12 lacks the name


def _arrival(loop: asyncio.AbstractEventLoop, ancdata) -> float:
    """When the kernel received the datagram, on the loop's clock. A stall of this test process (GC, a busy
    loop) delays reading, not this stamp, so arrival gaps are the sender's and the network's alone."""
    now_wall, now = time.time(), loop.time()
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _STAMP.size:
            sec, nsec = _STAMP.unpack_from(data)
            return now - max(0.0, now_wall - (sec + nsec * 1e-9))
    return now


class Phone:
    """The caller's RTP endpoint on 127.0.0.1:port (port 0 = an even free port; port+1 is bound too and
    swallows RTCP). Create it, ``play()`` what the caller says, hand it to ``place_call``.

    ``start_on="sdp"`` (default): start sending at the SDP answer or the first packet received in an offered
    payload type, whichever comes first. ``"rtp"``: stay silent until the far end has sent a packet (an experiment knob; Echo()
    then never hears anything)."""

    def __init__(self, codec: str = "g722", port: int = 0, start_on: str = "sdp"):
        if start_on not in ("sdp", "rtp"):
            raise ValueError("start_on must be 'sdp' (SDP answer or first RTP packet) or 'rtp' (first RTP only)")
        self.start_on = start_on
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
        self.codec = codec
        self.pt, self.codec_name, self.rate, self.spf = CODECS[codec]
        if port:
            rtp = _bind_udp(port)
            if rtp is None:
                raise OSError(f"UDP {HOST}:{port} is in use")
            held = [rtp]
            rtcp = _bind_udp(port + 1)
            if rtcp is not None:
                held.append(rtcp)
        else:
            port, held = _free_port_block((0, 1), even=True)
        self.port: int = port
        self._socks = held
        self.remote: tuple[str, int] | None = None
        self.remote_from: str | None = None  # "sdp" or "rtp"
        self.rx: list[tuple[float, RtpPacket]] = []
        self.tx_times: list[float] = []  # loop.time() of every packet sent (voice and DTMF)
        self.rtcp_received = 0
        self.send_errors = 0
        self.late_resyncs = 0  # times the sender fell > 3 packets behind and skipped ahead
        self._audio = np.zeros(0, dtype=np.int16)  # queued samples at the codec rate
        self._drained = asyncio.Event()
        self._drained.set()
        self._remote_known = asyncio.Event()
        self._dtmf: collections.deque = collections.deque()
        self._event_ts: int | None = None  # RTP timestamp of the DTMF event being sent
        self._reading: list[int] = []  # file descriptors with a reader on the loop
        self._task: asyncio.Task | None = None
        self._closed = False
        self.ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        if codec == "g722":
            import G722

            self._g722 = G722.G722(16000, 64000)  # ONE encoder for the whole stream

    # ---- audio in
    def play(self, pcm16k_le: bytes) -> None:
        """Queue int16 LE 16 kHz audio; it goes out after what is already queued (silence when idle)."""
        x = analysis.as_array(pcm16k_le)
        if self.rate != 16000:
            x = analysis.resample(x, 16000, self.rate)
        x = np.clip(np.round(x), -32768, 32767).astype(np.int16)
        self._audio = np.concatenate([self._audio, x])
        if self._audio.size:
            self._drained.clear()

    @property
    def queued_seconds(self) -> float:
        return self._audio.size / self.rate

    async def drained(self) -> None:
        """Wait until everything queued with ``play()`` has been sent."""
        await self._drained.wait()

    def send_dtmf(self, digits: str, duration_ms: int = 100, gap_ms: int = 100) -> None:
        """Queue RFC 4733 events (PT 101): per digit ``duration_ms`` of event packets (voice paused, its
        queued audio skipped), three End packets, then ``gap_ms`` of voice."""
        for d in digits:
            code = analysis.DTMF_EVENTS.index(d.upper())
            n = max(1, round(duration_ms / 20))
            for i in range(n):
                self._dtmf.append((code, (i + 1) * 160, False, i == 0))
            for _ in range(3):
                self._dtmf.append((code, n * 160, True, False))
            self._dtmf.extend([None] * max(0, round(gap_ms / 20)))

    # ---- lifecycle
    @property
    def started(self) -> bool:
        return self._task is not None

    async def start(self) -> None:
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        for k, s in enumerate(self._socks):          # [RTP, RTCP]
            s.setblocking(False)
            if k == 0:
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            loop.add_reader(s.fileno(), self._read_rtp if k == 0 else self._read_rtcp)
            self._reading.append(s.fileno())
        self._task = asyncio.create_task(self._send_loop(), name=f"phone-{self.port}")

    async def stop(self) -> None:
        """Stop sending and close the sockets (idempotent). What was received stays in ``rx``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self._closed:
            self._closed = True
            if self._reading:
                loop = asyncio.get_running_loop()
                for fd in self._reading:
                    loop.remove_reader(fd)
            for s in self._socks:
                s.close()
            _handed_out.discard(self.port)
            _handed_out.discard(self.port + 1)

    def set_remote(self, addr: tuple[str, int], source: str = "sdp") -> None:
        """Where to send (the far end's RTP address). The first call wins; with ``start_on="rtp"`` only the
        source of the first received RTP packet counts (to observe whether the far end sends first)."""
        if self.remote is None and (source == "rtp" or self.start_on == "sdp"):
            self.remote = (addr[0], int(addr[1]))
            self.remote_from = source
            self._remote_known.set()

    # ---- internals
    def _read_rtp(self) -> None:
        loop, sock = asyncio.get_running_loop(), self._socks[0]
        while True:
            try:
                data, ancdata, _flags, addr = sock.recvmsg(65535, _CMSG)
            except BlockingIOError:
                return
            except OSError:               # e.g. ICMP port unreachable for an earlier send, after the far end left
                self.send_errors += 1
                continue
            self._on_datagram(data, addr, _arrival(loop, ancdata))

    def _read_rtcp(self) -> None:
        while True:
            try:
                self._socks[1].recv(65535)
            except BlockingIOError:
                return
            except OSError:
                continue
            self.rtcp_received += 1

    def _on_datagram(self, data: bytes, addr, t: float) -> None:
        if _is_rtcp(data):
            self.rtcp_received += 1
            return
        pkt = RtpPacket.parse(data, (addr[0], addr[1]))
        if pkt is None:
            return
        self.rx.append((t, pkt))
        if self.remote is None and pkt.pt in (self.pt, DTMF_PT):
            # like a phone doing symmetric RTP: only a packet of a payload type the SDP offer named (uac.xml:
            # the codec and telephone-event) says where the far end is
            self.set_remote((addr[0], addr[1]), "rtp")

    def _next_audio(self) -> np.ndarray:
        n = self.spf
        frame = self._audio[:n]
        self._audio = self._audio[n:]
        if frame.size < n:
            frame = np.concatenate([frame, np.zeros(n - frame.size, dtype=np.int16)])
        if self._audio.size == 0:
            self._drained.set()
        return frame

    def _encode(self, frame: np.ndarray) -> bytes:
        if self.codec == "g722":
            return bytes(self._g722.encode(frame))
        return analysis.alaw_encode(frame)

    def _build_packet(self, first: bool) -> bytes:
        frame = self._next_audio()  # the audio timeline advances even while DTMF replaces voice
        item = self._dtmf.popleft() if self._dtmf else None
        ts = self._ts
        if item is None:
            pkt = RtpPacket(self.pt, self._seq, ts, first, self.ssrc, self._encode(frame))
            self._event_ts = None
        else:
            code, dur, end, ev_first = item
            if ev_first or self._event_ts is None:
                self._event_ts = ts
            payload = bytes([code, (0x80 if end else 0) | 10]) + dur.to_bytes(2, "big")
            pkt = RtpPacket(DTMF_PT, self._seq, self._event_ts, ev_first, self.ssrc, payload)
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + 160) & 0xFFFFFFFF  # 8000 Hz RTP clock for both G.722 and PCMA
        return pkt.pack()

    async def _send_loop(self) -> None:
        await self._remote_known.wait()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        k = 0
        while True:
            due = t0 + k * PTIME
            now = loop.time()
            if now < due:
                await asyncio.sleep(due - now)
            elif now - due > 3 * PTIME:  # blocked loop: do not burst, skip ahead
                self.late_resyncs += 1
                t0, k = now, 0
            data = self._build_packet(first=not self.tx_times)
            assert self.remote is not None
            try:
                self._socks[0].sendto(data, self.remote)
            except OSError:               # a full buffer, or ICMP port unreachable reported on this send
                self.send_errors += 1
            self.tx_times.append(loop.time())
            k += 1
