"""Section 1, per-frame cost: microseconds of CPU per 20 ms frame, per stage, for each direction of one call.

The sans-I/O stages are timed one call at a time with ``time.perf_counter_ns`` over many iterations (the cost
of an empty timed call is subtracted); the stages that involve the event loop and another process (the
WebSocket send and receive, the asyncio UDP receive, the 20 ms timer) are amortised: the CPU time of this
process (``time.process_time_ns``) over a batch divided by the frames in it, so waiting for the other end does
not count. Everything the bot does per frame is the same objects and calls as ``media.RtpMedia`` and
``realtime_session.RealtimeSession`` use.

Inbound (caller -> model), per 20 ms: one slin24 RTP datagram -> ``InboundFilter.accept`` -> the byte swap
(``codec.slin_be_to_le``; Asterisk already resampled to 24 kHz) -> ``RealtimeProtocol.append_audio`` (base64 +
JSON) -> the WebSocket write (``providers.websocket.write_now``: websockets' sans-I/O framing + transport.write).
Outbound (model -> caller): ``RealtimeProtocol.receive`` of a 20 ms ``response.output_audio.delta`` (key
search + base64 decode) -> ``StreamResampler`` 24->16 kHz -> ``Playout`` push/pop -> G.722 encode ->
``RtpSender.packet`` -> ``sendto``; the 20 ms tick is the process's one ``media.FrameClock``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from voiceai_ari.media.codec import make_encoder, slin_be_to_le
from voiceai_ari.media.playout import PacingClock, Playout
from voiceai_ari.providers.openai_realtime.protocol import RealtimeProtocol, SessionConfig
from voiceai_ari.providers.websocket import write_now as _write_now
from voiceai_ari.media.resample import StreamResampler
from voiceai_ari.media.rtp import InboundFilter, RtpPacket, RtpSender

from .common import cpus, pct, pinned
from .peers import delta_event

ADDR = ("127.0.0.1", 40000)
TARGET_US = 50.0


def _tone(rate: int, ms: int = 20, hz: float = 440.0, offset: int = 0) -> np.ndarray:
    n = rate * ms // 1000
    t = (np.arange(n) + offset) / rate
    return (np.sin(2 * np.pi * hz * t) * 9000 + np.sin(2 * np.pi * 1700 * t) * 3000).astype(np.int16)


def _cycling(fn: Callable[[Any], Any], inputs: list[Any]) -> Callable[[], Any]:
    """``fn`` on the next of ``inputs`` at each call, round and round: a stage sees changing frames (as in a
    call), never the same one, so no cache or branch predictor keeps one input hot."""
    it = itertools.cycle(inputs)
    return lambda: fn(next(it))


def time_each(fn: Callable[[], Any], n: int, warm: int = 300) -> list[int]:
    """ns per call of ``fn``, ``n`` samples, after ``warm`` untimed calls."""
    for _ in range(warm):
        fn()
    pc = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = pc()
        fn()
        out[i] = pc() - t0
    return out


class Stages:
    def __init__(self, n: int) -> None:
        self.n = n
        self.rows: list[dict[str, Any]] = []
        self.extra: dict[str, float] = {}
        self.overhead_ns = statistics.median(time_each(lambda: None, n))
        self.ws_send_small_us = 0.0   # WebSocket write of a 160-byte (G.711) append

    def timed(self, direction: str, key: str, label: str, fn: Callable[[], Any], core: bool = True,
              n: int | None = None) -> None:
        ns = time_each(fn, n or self.n)
        us = [max(0.0, (x - self.overhead_ns) / 1000) for x in ns]
        self.rows.append({"direction": direction, "key": key, "stage": label, "p50_us": pct(us, 50),
                          "p90_us": pct(us, 90), "n": len(us), "method": "per call", "core": core})

    def amortised(self, direction: str, key: str, label: str, per_frame_us: list[float], core: bool = True) -> None:
        self.rows.append({"direction": direction, "key": key, "stage": label, "p50_us": pct(per_frame_us, 50),
                          "p90_us": pct(per_frame_us, 90), "n": len(per_frame_us), "method": "amortised CPU",
                          "core": core})


# ------------------------------------------------------------------------------------------------ inbound
def inbound_sansio(st: Stages) -> None:
    n = st.n + 400
    payloads = [_tone(24000, offset=i * 480).astype(">i2").tobytes() for i in range(64)]
    pkts = [RtpPacket(123, (1000 + i) & 0xFFFF, 480 * i, 0x1234, payloads[i % 64]).to_bytes() for i in range(n)]
    filt = InboundFilter(payload_type=None, payload_bytes=960)   # as RtpMedia builds it: learns the PT
    filt.expected_source = ADDR
    it = iter(pkts)
    st.timed("in", "rtp_accept", "RTP parse + InboundFilter.accept", lambda: filt.accept(next(it), ADDR), n=st.n)
    assert filt.accepted >= st.n, filt.drops

    st.timed("in", "byte_swap", "byte swap slin24 BE -> LE (Asterisk resampled)", _cycling(slin_be_to_le, payloads))
    pcm24 = slin_be_to_le(payloads[0])
    assert len(pcm24) == 960
    st.timed("in", "append_json", "base64 + JSON (append_audio)", lambda: RealtimeProtocol.append_audio(pcm24))


# ------------------------------------------------------------------------------------------------ outbound
def outbound_sansio(st: Stages) -> None:
    proto = RealtimeProtocol(SessionConfig())
    texts = [delta_event(960, i) for i in range(64)]
    st.timed("out", "receive_delta", "delta parse + base64 decode (receive 20 ms delta)",
             _cycling(proto.receive, texts))
    ev = proto.receive(texts[0])
    assert ev and len(ev[0].pcm) == 960, ev

    down = StreamResampler(24000, 16000)
    pcm24 = [_tone(24000, offset=i * 480).astype("<i2").tobytes() for i in range(64)]

    st.timed("out", "resample_down", "resample 24->16 kHz", _cycling(down.process, pcm24))
    frame16 = down.process(pcm24[0])
    assert len(frame16) == 640

    playout = Playout(16000)
    clock = PacingClock(0.020)
    clock.start(0.0)
    t = [0.0]

    def push_pop() -> Any:
        playout.push(frame16, "item_1")
        t[0] += 0.020
        clock.due(t[0])
        clock.next_deadline()
        return playout.pop()

    st.timed("out", "playout", "Playout push + pop, PacingClock", push_pop, core=False)

    enc = make_encoder("g722")
    frames = [_tone(16000, offset=i * 320).astype("<i2").tobytes() for i in range(64)]

    st.timed("out", "g722_encode", "G.722 encode (make_encoder('g722'))", _cycling(enc.encode, frames))
    payload = enc.encode(frames[0])
    assert len(payload) == 160
    sender = RtpSender(9, 160)
    st.timed("out", "rtp_packet", "RtpSender.packet", lambda: sender.packet(payload, False))

    # sendto on loopback: the receiving socket is drained between batches, outside the timing
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    tx.setblocking(False)
    dest = rx.getsockname()
    pkt = sender.packet(payload)
    pc = time.perf_counter_ns
    samples: list[float] = []
    for b in range(max(10, st.n // 100)):
        ns = []
        for _ in range(100):
            t0 = pc()
            tx.sendto(pkt, dest)
            ns.append(pc() - t0)
        while True:
            try:
                rx.recv(2048)
            except BlockingIOError:
                break
        if b:  # first batch: warm-up
            samples += [max(0.0, (x - st.overhead_ns) / 1000) for x in ns]
    rx.close()
    tx.close()
    st.rows.append({"direction": "out", "key": "udp_sendto", "stage": "UDP sendto (loopback)",
                    "p50_us": pct(samples, 50), "p90_us": pct(samples, 90), "n": len(samples),
                    "method": "per call", "core": True})


# ------------------------------------------------------------------------------------------------ event-loop stages
def _spawn_peer(role: str, cpu: int | None) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "bench.peers", role]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(_repo()))


def _repo() -> str:
    from .common import REPO
    return str(REPO)


async def _cpu_per_write(ws: Any, msg: str, batches: int, batch: int) -> list[float]:
    """CPU µs per immediate WebSocket write of `msg`, per batch of `batch` (the first two are warm-up); the
    sink drains between batches, so no backpressure falls in the timed ones."""
    per: list[float] = []
    for b in range(batches + 2):
        c0 = time.process_time_ns()
        for _ in range(batch):
            assert _write_now(ws, msg)
        c1 = time.process_time_ns()
        if b >= 2:
            per.append((c1 - c0) / batch / 1000)
        await asyncio.sleep(0.002)
    return per


async def websocket_stages(st: Stages, quick: bool) -> None:
    """WebSocket send and receive against a sink in another process, CPU-amortised per message."""
    from websockets.asyncio.client import connect

    _, peer_cpu = cpus()
    sink = _spawn_peer("ws-sink", peer_cpu)
    try:
        assert sink.stdout is not None
        url = sink.stdout.readline().strip()
        async with connect(url, compression=None, max_size=16 * 2**20, proxy=None, ping_interval=20,
                           ping_timeout=20) as ws:
            msg = RealtimeProtocol.append_audio(_tone(24000).astype("<i2").tobytes())
            batch, batches = 100, (10 if quick else 150)
            per = await _cpu_per_write(ws, msg, batches, batch)
            st.amortised("in", "ws_send", "WebSocket write (framing + transport.write, no task hop)", per)
            # the same for 20 ms of G.711 (160 bytes): the passthrough paths' append
            st.ws_send_small_us = pct(await _cpu_per_write(ws, RealtimeProtocol.append_audio(bytes(160)),
                                                           batches, batch), 50)

            per = []   # what the old path cost: `await ws.send` from a send task (reported, not in the total)
            for b in range(batches + 2):
                c0 = time.process_time_ns()
                for _ in range(batch):
                    await ws.send(msg)
                c1 = time.process_time_ns()
                if b >= 2:
                    per.append((c1 - c0) / batch / 1000)
                await asyncio.sleep(0.002)
            st.extra["ws_send_coroutine_us"] = pct(per, 50)

            per = []
            for b in range(batches + 2):
                await ws.send(f"blast {batch} 960")
                first = await ws.recv()  # wait for the burst to start (idle time is not CPU)
                assert '"response.output_audio.delta"' in first
                await asyncio.sleep(0.003)  # the rest of the burst is in flight / buffered
                c0 = time.process_time_ns()
                for _ in range(batch - 1):
                    await ws.recv()
                c1 = time.process_time_ns()
                if b >= 2:
                    per.append((c1 - c0) / (batch - 1) / 1000)
            st.amortised("out", "ws_recv", "WebSocket receive (sink -> websockets client)", per, core=False)

            # the hop the old RealtimeSession made for every message (put_nowait, the send task wakes and
            # sends): now taken only while the socket is backed up; reported, not in the totals
            q: asyncio.Queue[str] = asyncio.Queue(500)

            async def sender() -> None:
                while True:
                    await ws.send(await q.get())

            task = asyncio.create_task(sender())
            per = []
            for b in range(batches + 2):
                c0 = time.process_time_ns()
                for _ in range(batch):
                    q.put_nowait(msg)
                    await asyncio.sleep(0)   # one loop iteration: the sender task runs
                    await asyncio.sleep(0)
                c1 = time.process_time_ns()
                if b >= 2:
                    per.append((c1 - c0) / batch / 1000)
                await asyncio.sleep(0.002)
            task.cancel()
            st.extra["queue_hop_us"] = max(0.0, pct(per, 50) - st.extra["ws_send_coroutine_us"])
    finally:
        if sink.stdin:
            sink.stdin.close()
        sink.wait(5)


async def udp_receive_stage(st: Stages, quick: bool) -> None:
    """asyncio datagram delivery (epoll, recvfrom, protocol callback) at 50 packets/s per socket, many sockets:
    this process's CPU per packet while a peer process streams to it."""
    import json

    _, peer_cpu = cpus()
    peer = _spawn_peer("rtp", peer_cpu)
    loop = asyncio.get_running_loop()
    count = [0]

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            count[0] += 1

    transports = []
    try:
        assert peer.stdout is not None and peer.stdin is not None
        peer.stdout.readline()  # its port: not needed, it sends to ours
        ports = []
        for _ in range(100):
            tr, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
            transports.append(tr)
            ports.append(tr.get_extra_info("sockname")[1])
        peer.stdin.write(json.dumps({"cmd": "start", "ports": ports}) + "\n")
        peer.stdin.flush()
        await asyncio.sleep(0.3)
        per = []
        for _ in range(2 if quick else 10):
            c0, n0 = time.process_time_ns(), count[0]
            await asyncio.sleep(0.25)
            c1, n1 = time.process_time_ns(), count[0]
            if n1 > n0:
                per.append((c1 - c0) / (n1 - n0) / 1000)
        st.amortised("in", "udp_recv", "UDP receive via asyncio (epoll + recvfrom + callback)", per, core=False)
    finally:
        for tr in transports:
            tr.close()
        if peer.stdin:
            peer.stdin.close()
        peer.wait(5)


async def timer_stage(st: Stages, quick: bool) -> None:
    """The outbound clock: the process's one FrameClock with 100 members (calls), CPU per member tick."""
    from voiceai_ari.media.transport import FrameClock

    clock = FrameClock()
    ticks = [0]
    members = [_Member(ticks) for _ in range(100)]
    for m in members:
        clock.join(m.tick)
    await asyncio.sleep(0.1)
    per = []
    for _ in range(2 if quick else 10):
        c0, n0 = time.process_time_ns(), ticks[0]
        await asyncio.sleep(0.25)
        c1, n1 = time.process_time_ns(), ticks[0]
        if n1 > n0:
            per.append((c1 - c0) / (n1 - n0) / 1000)
    for m in members:
        clock.leave(m.tick)
    st.amortised("out", "timer", "20 ms tick (one FrameClock, 100 calls: share per call)", per, core=False)


class _Member:
    """A call on the clock that does nothing on its tick (the tick's own cost is what is measured)."""

    def __init__(self, ticks: list[int]) -> None:
        self._ticks = ticks

    def tick(self, due: int, now: float) -> None:
        self._ticks[0] += due


# ------------------------------------------------------------------------------------------------ entry
def run(quick: bool = False) -> dict[str, Any]:
    bot_cpu, _ = cpus()
    with pinned(bot_cpu):
        return _run(quick)


def _run(quick: bool) -> dict[str, Any]:
    n = 2000 if quick else 30000
    st = Stages(n)
    gc.collect()
    inbound_sansio(st)
    outbound_sansio(st)

    async def loop_stages() -> None:
        await websocket_stages(st, quick)
        await udp_receive_stage(st, quick)
        await timer_stage(st, quick)

    asyncio.run(loop_stages())
    rows = sorted(st.rows, key=lambda r: (r["direction"] != "in", _ORDER.index(r["key"])))
    paths = _paths(st, rows)
    totals: dict[str, float] = {}
    for d in ("in", "out"):
        totals[f"{d}_core_p50_us"] = sum(r["p50_us"] for r in rows if r["direction"] == d and r["core"])
        totals[f"{d}_all_p50_us"] = sum(r["p50_us"] for r in rows if r["direction"] == d)
    totals["both_core_p50_us"] = totals["in_core_p50_us"] + totals["out_core_p50_us"]
    totals["both_all_p50_us"] = totals["in_all_p50_us"] + totals["out_all_p50_us"]
    return {"iterations": n, "timer_overhead_ns": st.overhead_ns, "stages": rows, "totals": totals,
            "replaced": st.extra, "paths": paths,
            "target_us": TARGET_US, "meets_target": totals["both_core_p50_us"] <= TARGET_US}


def _paths(st: Stages, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-frame cost per media path (bench/formats.py), side by side, from this run's measurements."""
    from . import formats
    return formats.run_paths(lambda fn: pct([max(0.0, (x - st.overhead_ns) / 1000) for x in time_each(fn, st.n)], 50),
                             {r["key"]: r["p50_us"] for r in rows}, st.ws_send_small_us)


_ORDER = ["udp_recv", "rtp_accept", "byte_swap", "append_json", "ws_send",
          "ws_recv", "receive_delta", "resample_down", "playout", "timer", "g722_encode", "rtp_packet", "udp_sendto"]


if __name__ == "__main__":
    import json
    print(json.dumps(run("--quick" in sys.argv), indent=1))
