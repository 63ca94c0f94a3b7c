"""The caller of the end-to-end tests: sipp does the SIP signalling, a Python RTP endpoint (``Phone``) is
the phone's media, so the test hears exactly what a phone would hear, with arrival times, and no capture.

    phone = Phone("g722")                       # binds 127.0.0.1:<even port> (+1 swallows RTCP)
    phone.play(analysis.tone(1000, 1.0))        # int16 LE 16 kHz; queued, sent once the call is up
    res = await place_call("300", phone=phone, call_seconds=3, workdir=tmp_path)
    pcm = res.audio_16k()                       # what the phone received, decoded

Media: one RTP packet every 20 ms on an absolute monotonic schedule (no drift), PT 9 G.722 (one
persistent encoder, RTP timestamp +160 per packet: G.722's RTP clock is 8000 Hz) or PT 8 PCMA (audio
resampled 16 -> 8 kHz at ``play()``). When nothing is queued the phone sends encoded silence, like a real
phone without silence suppression (Asterisk's simple_bridge only forwards the caller -> app direction while
the caller sends). Sending starts as soon as the far end's media address is known: from the 200 OK's SDP
answer (the scenario writes it to a file the moment the call is up) or, if that comes later, from the
first RTP packet received. Asterisk's Echo() never sends first, so the SDP answer is what starts it.

Signalling: ``tests/e2e/uac.xml`` with sipp ``-key`` parameters. The caller waits up to ``call_seconds``
for the far end's BYE and hangs up itself if none came (``CallResult.got_bye`` says which happened).
Every sipp instance gets its own SIP, media (-mp, unused but always opened) and control ports (-cp),
all on 127.0.0.1, so calls can run concurrently.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import random
import re
import shutil
import socket
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import analysis

UAC_XML = Path(__file__).with_name("uac.xml")
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
_handed_out: set[int] = set()  # never give the same port twice in this process


def _bind_udp(port: int) -> socket.socket | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((HOST, port))
        return s
    except OSError:
        s.close()
        return None


def _free_port_block(offsets: tuple[int, ...], even: bool = False) -> tuple[int, list[socket.socket]]:
    """A base port p such that p+o is free on 127.0.0.1 for every o in offsets; the sockets holding them are
    returned still bound (close them right before handing the ports to someone else)."""
    for _ in range(200):
        probe = _bind_udp(0)
        assert probe is not None
        base = probe.getsockname()[1]
        probe.close()
        if even:
            base &= ~1
        if base + max(offsets) > 65535 or any(base + o in _handed_out for o in offsets):
            continue
        held = []
        for o in offsets:
            s = _bind_udp(base + o)
            if s is None:
                break
            held.append(s)
        if len(held) == len(offsets):
            _handed_out.update(base + o for o in offsets)
            return base, held
        for s in held:
            s.close()
    raise RuntimeError("no free UDP port block on 127.0.0.1")


# ------------------------------------------------------------------------------------------------ Phone
class _Proto(asyncio.DatagramProtocol):
    def __init__(self, phone: Phone):
        self.phone = phone

    def datagram_received(self, data: bytes, addr) -> None:
        self.phone._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable after the far end left
        self.phone.send_errors += 1


class _Sink(asyncio.DatagramProtocol):
    def __init__(self, phone: Phone):
        self.phone = phone

    def datagram_received(self, data: bytes, addr) -> None:
        self.phone.rtcp_received += 1


class Phone:
    """The caller's RTP endpoint on 127.0.0.1:port (port 0 = an even free port; port+1 is bound too and
    swallows RTCP). Create it, ``play()`` what the caller says, hand it to ``place_call``.

    ``start_on="sdp"`` (default): start sending at the SDP answer or the first packet received, whichever
    comes first. ``"rtp"``: stay silent until the far end has sent a packet (an experiment knob; Echo()
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
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp_transport: asyncio.DatagramTransport | None = None
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
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(self), sock=self._socks[0])
        if len(self._socks) > 1:
            self._rtcp_transport, _ = await loop.create_datagram_endpoint(lambda: _Sink(self), sock=self._socks[1])
        self._task = asyncio.create_task(self._send_loop(), name=f"phone-{self.port}")

    async def stop(self) -> None:
        """Stop sending and close the sockets (idempotent). What was received stays in ``rx``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self._closed:
            self._closed = True
            for t in (self._transport, self._rtcp_transport):
                if t is not None:
                    t.close()
            if self._transport is None:
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
    def _on_datagram(self, data: bytes, addr) -> None:
        t = asyncio.get_running_loop().time()
        if _is_rtcp(data):
            self.rtcp_received += 1
            return
        pkt = RtpPacket.parse(data, (addr[0], addr[1]))
        if pkt is None:
            return
        self.rx.append((t, pkt))
        if self.remote is None:
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
            assert self._transport is not None and self.remote is not None
            self._transport.sendto(data, self.remote)
            self.tx_times.append(loop.time())
            k += 1


# ------------------------------------------------------------------------------------------------ result
@dataclass(frozen=True)
class SipEvent:
    t: float  # loop.time() scale (converted from sipp's wall-clock log)
    direction: str  # "sent" | "recv"
    line: str  # first line: "INVITE sip:...", "SIP/2.0 200 OK", "BYE sip:..."


@dataclass
class CallResult:
    ext: str
    call_id: str
    codec: str
    sipp_rc: int
    sipp_stdout: str
    sipp_errors: str
    sip_messages: str
    rx: list[tuple[float, RtpPacket]]
    tx_times: list[float]
    got_bye: bool  # True: the far end (Asterisk) hung up; False: the caller did (or the call failed)
    answer: tuple[str, int, int] | None  # SDP answer: (ip, port, first payload type)
    remote_from: str | None  # how the phone learnt where to send: "sdp" | "rtp" | None (never)
    sip_events: list[SipEvent] = field(default_factory=list)
    t_start: float = 0.0  # loop.time() when sipp was launched
    t_answered: float | None = None  # when the SDP answer reached the phone (just after 200 OK + ACK)
    t_end: float = 0.0  # when sipp exited
    timed_out: bool = False  # sipp had to be killed

    @property
    def pt(self) -> int:
        return CODECS[self.codec][0]

    @property
    def ok(self) -> bool:
        return self.sipp_rc == 0 and not self.timed_out

    def voice(self) -> list[RtpPacket]:
        return [p for _, p in self.rx if p.pt == self.pt]

    def rx_times(self) -> list[float]:
        """Arrival times (loop.time()) of the voice packets."""
        return [t for t, p in self.rx if p.pt == self.pt]

    def payload_types(self) -> collections.Counter:
        return collections.Counter(p.pt for _, p in self.rx)

    def audio(self, fill_gaps: bool = False) -> tuple[bytes, int]:
        """What the phone heard at the codec's own rate: (int16 LE, 16000) for G.722, (int16 LE, 8000) PCMA."""
        if self.codec == "g722":
            return analysis.decode_g722(self.voice(), self.pt, fill_gaps), 16000
        return analysis.decode_pcma(self.voice(), self.pt, fill_gaps), 8000

    def audio_16k(self, fill_gaps: bool = False) -> bytes:
        """What the phone heard as int16 LE 16 kHz. G.722: decoded with ONE decoder in sequence order.
        PCMA: A-law decoded at 8 kHz, then upsampled x2 (polyphase; nothing above 4 kHz, by nature)."""
        pcm, rate = self.audio(fill_gaps)
        if rate == 16000:
            return pcm
        return analysis.to_bytes(analysis.resample(pcm, rate, 16000))

    @property
    def dtmf_events(self) -> list[tuple[str, bool]]:
        """(digit, end bit) of every RFC 4733 packet received (End packets come in threes)."""
        return [analysis.dtmf_event(p.payload)[:2] for _, p in self.rx if p.pt == DTMF_PT and len(p.payload) >= 4]

    def dtmf_digits(self) -> str:
        """One digit per event (an event = one RTP timestamp with an End packet)."""
        seen, out = set(), []
        for _, p in self.rx:
            if p.pt == DTMF_PT and len(p.payload) >= 4:
                digit, end, _ = analysis.dtmf_event(p.payload)
                if end and (p.ssrc, p.ts) not in seen:
                    seen.add((p.ssrc, p.ts))
                    out.append(digit)
        return "".join(out)

    def sip_time(self, line_prefix: str, direction: str | None = None) -> float | None:
        for e in self.sip_events:
            if e.line.startswith(line_prefix) and (direction is None or e.direction == direction):
                return e.t
        return None

    def summary(self) -> str:
        """One-paragraph description for assertion messages."""
        times = self.rx_times()
        first = f"{times[0] - self.t_start:.3f}s" if times else "-"
        return (f"call {self.ext} codec={self.codec} rc={self.sipp_rc} timed_out={self.timed_out} "
                f"got_bye={self.got_bye} answer={self.answer} remote_from={self.remote_from} "
                f"rx={dict(self.payload_types())} tx={len(self.tx_times)} first_rx={first} "
                f"dur={self.t_end - self.t_start:.3f}s sip={[(round(e.t - self.t_start, 3), e.direction, e.line[:24]) for e in self.sip_events]} "
                f"errors={self.sipp_errors.strip()[-400:]!r}")


_MSG_HEAD = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s*\n(\w+) message (sent|received)[^\n]*\n\s*\n([^\n]*)",
                       re.M)


def _parse_messages(text: str, wall_to_loop: float) -> list[SipEvent]:
    out = []
    for m in _MSG_HEAD.finditer(text):
        wall = time.mktime(time.strptime(m.group(1).split(".")[0], "%Y-%m-%d %H:%M:%S")) + float("0." + m.group(1).split(".")[1])
        out.append(SipEvent(wall + wall_to_loop, "sent" if m.group(3) == "sent" else "recv", m.group(4).strip()))
    return out


# ------------------------------------------------------------------------------------------------ call
def sipp_binary() -> str | None:
    return shutil.which("sipp")


async def place_call(ext: str, *, phone: Phone, call_seconds: float, hangup: str = "caller",
                     codec: str | None = None, timeout: float = 60.0, workdir: Path,
                     server: str = "127.0.0.1:5060", call_id: str | None = None,
                     extra_args: tuple[str, ...] = ()) -> CallResult:
    """Call ``ext`` on ``server`` with sipp; the media is ``phone`` (started here if needed, stopped when
    the call ends). The call lasts at most ``call_seconds`` after the answer: if the far end has not sent
    BYE by then, the caller sends BYE. ``hangup`` states who is expected to end the call ("caller" or
    "remote"); it does not change the scenario, check ``result.got_bye``. ``call_id`` sets the SIP Call-ID
    (default: a fresh unique one, in ``result.call_id``); Asterisk shows it as ``CHANNEL(pjsip,call-id)``,
    which lets a test find the call's channel over ARI while the call runs. ``timeout`` bounds the whole
    call (sipp -timeout; the process is killed 5 s later if still alive). Files land in ``workdir``."""
    if hangup not in ("caller", "remote"):
        raise ValueError("hangup must be 'caller' or 'remote'")
    codec = codec or phone.codec
    if codec != phone.codec:
        raise ValueError(f"codec {codec!r} differs from the phone's {phone.codec!r}")
    sipp = sipp_binary()
    if sipp is None:
        raise RuntimeError("sipp not found (apt-get install sip-tester)")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"call-{ext}-{phone.port}-{uuid.uuid4().hex[:8]}"
    call_id = call_id or f"{tag}@{HOST}"
    if "%" in call_id or not re.fullmatch(r"[\w.!%*+`'~@:-]+", call_id):
        raise ValueError(f"unusable Call-ID {call_id!r}")
    answer_file = workdir / f"{tag}.answer"
    msg_file, err_file, out_file = (workdir / f"{tag}.{s}" for s in ("messages.log", "errors.log", "stdout.log"))
    pt, codec_name, _, _ = CODECS[codec]

    # ports: SIP, sipp's own media port and its +2 (video; both opened even when unused), control port
    sip_port, held_sip = _free_port_block((0,))
    mp, held_mp = _free_port_block((0, 1, 2, 3), even=True)
    cp, held_cp = _free_port_block((0,))
    cmd = [sipp, "-sf", str(UAC_XML), "-s", ext, server,
           "-i", HOST, "-p", str(sip_port), "-mi", HOST, "-mp", str(mp), "-ci", HOST, "-cp", str(cp),
           "-m", "1", "-l", "1", "-nostdin", "-f", "3600", "-cid_str", call_id,
           "-recv_timeout", str(max(1, int(round(call_seconds * 1000)))),
           "-timeout", f"{max(1, int(math.ceil(timeout)))}s", "-timeout_error",
           "-key", "rtp_port", str(phone.port), "-key", "pt", str(pt), "-key", "codec_name", codec_name,
           "-key", "answer_file", str(answer_file),
           "-trace_msg", "-message_file", str(msg_file), "-trace_err", "-error_file", str(err_file),
           *extra_args]

    if not phone.started:
        await phone.start()
    loop = asyncio.get_running_loop()
    wall_to_loop = loop.time() - time.time()
    for s in held_sip + held_mp + held_cp:
        s.close()
    t_start = loop.time()
    with open(out_file, "wb") as out:
        proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                                                    stderr=asyncio.subprocess.STDOUT, cwd=workdir)
    answer = None
    t_answered = None
    timed_out = False
    wait = asyncio.create_task(proc.wait())
    try:
        deadline = t_start + timeout + 5
        while not wait.done():
            if answer is None and answer_file.exists():
                parts = answer_file.read_text().split()
                if len(parts) == 3:
                    answer = (parts[0], int(parts[1]), int(parts[2]))
                    t_answered = loop.time()
                    phone.set_remote((answer[0], answer[1]), "sdp")
            if loop.time() > deadline:
                timed_out = True
                proc.kill()
                break
            await asyncio.wait({wait}, timeout=0.005)
        rc = await wait
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await phone.stop()
        for p in (sip_port, mp, mp + 1, mp + 2, mp + 3, cp):
            _handed_out.discard(p)
    t_end = loop.time()

    def read(p: Path) -> str:
        return p.read_text(errors="replace") if p.exists() else ""

    if answer is None and answer_file.exists():
        parts = answer_file.read_text().split()
        if len(parts) == 3:
            answer = (parts[0], int(parts[1]), int(parts[2]))
    messages = read(msg_file)
    events = _parse_messages(messages, wall_to_loop)
    got_bye = any(e.direction == "recv" and e.line.startswith("BYE ") for e in events)
    return CallResult(ext=ext, call_id=call_id, codec=codec, sipp_rc=rc, sipp_stdout=read(out_file), sipp_errors=read(err_file),
                      sip_messages=messages, rx=list(phone.rx), tx_times=list(phone.tx_times), got_bye=got_bye,
                      answer=answer, remote_from=phone.remote_from, sip_events=events, t_start=t_start,
                      t_answered=t_answered, t_end=t_end, timed_out=timed_out)


def cleanup_workdir(workdir: Path) -> None:
    """Remove the files place_call left in ``workdir`` (answer/messages/errors/stdout)."""
    for p in Path(workdir).glob("call-*"):
        with contextlib.suppress(OSError):
            os.unlink(p)


# ------------------------------------------------------------------------------------------------ sandbox + ARI
REPO = Path(__file__).resolve().parents[2]
SANDBOX_SCRIPT = REPO / "scripts" / "asterisk-sandbox"
ARI_URL = "http://127.0.0.1:8088/ari"
ARI_USER, ARI_PASSWORD = "voiceai", "voiceai-secret"


def start_sandbox(timeout: float = 900.0) -> str:
    """``scripts/asterisk-sandbox start`` (idempotent: provisions once, then only checks/starts Asterisk).
    Root only. Returns the script's output; raises CalledProcessError on failure."""
    import subprocess

    done = subprocess.run([str(SANDBOX_SCRIPT), "start"], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    return done.stdout + done.stderr


def _ari_headers() -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{ARI_USER}:{ARI_PASSWORD}".encode()).decode()}


async def ari(method: str, path: str, **params) -> tuple[int, object]:
    """One ARI REST request: (status, JSON body or None)."""
    import aiohttp

    async with aiohttp.ClientSession(headers=_ari_headers()) as s:
        async with s.request(method, f"{ARI_URL}{path}", params=params or None) as r:
            body = await r.json(content_type=None) if r.content_length != 0 else None
            return r.status, body


async def find_channel(call_id: str) -> dict | None:
    """The PJSIP channel of the call whose SIP Call-ID is ``call_id`` (ARI channel JSON), or None."""
    status, chans = await ari("GET", "/channels")
    for c in chans or []:
        if not c.get("name", "").startswith("PJSIP/"):
            continue
        if c.get("protocol_id") == call_id:  # ARI shows the SIP Call-ID of PJSIP channels here
            return c
        st, v = await ari("GET", f"/channels/{c['id']}/variable", variable="CHANNEL(pjsip,call-id)")
        if st == 200 and isinstance(v, dict) and v.get("value") == call_id:
            return c
    return None


async def hangup_from_asterisk(call_id: str, wait: float = 5.0) -> bool:
    """Make Asterisk hang up the call (ARI DELETE of its channel; Asterisk then sends BYE). Polls up to
    ``wait`` seconds for the channel to appear. True if a channel was deleted."""
    loop = asyncio.get_running_loop()
    end = loop.time() + wait
    while loop.time() < end:
        c = await find_channel(call_id)
        if c is not None:
            status, _ = await ari("DELETE", f"/channels/{c['id']}")
            return status == 204
        await asyncio.sleep(0.05)
    return False
