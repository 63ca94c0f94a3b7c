"""The far ends the benchmarks talk to, each meant to run as its own process (pinned away from the bot):

    python -m bench.peers ws-sink [--cpu N]     WebSocket server on 127.0.0.1:0; prints its URL.
        Text "blast <n> <size>" from the client: it answers with n output_audio.delta events of <size>
        PCM bytes, flat out. Everything else is read and dropped.
    python -m bench.peers rtp [--cpu N]         "Asterisk": one UDP socket on 127.0.0.1:0, prints its port,
        then reads JSON commands on stdin (see RtpPeer).
    python -m bench.peers fake [--cpu N] [--mode tone] [--tone-seconds S] [--speed X]
        voiceai_ari's FakeRealtimeServer (the protocol-faithful fake model) with no history kept; prints its
        URL, serves until stdin closes.

The RTP peer plays the externalMedia side of every call: slin24 big-endian on PT 123, 960-byte payloads, one
packet per call every 20 ms on an absolute schedule, call i offset by i/M of a period (Asterisk's channels
are not phase-aligned). It receives the bot's packets (PT 9) on the same socket and keeps per-source arrival
times. The RTP timestamp field of what it sends carries its monotonic send time in microseconds (mod 2**32):
the bot ignores RTP timestamps, and the latency harness reads them back to measure wire-to-append latency.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import random
import select
import socket
import struct
import sys
import time

from .common import pin, raise_nofile

HOST = "127.0.0.1"
PERIOD_NS = 20_000_000
PAYLOAD_BYTES = 960  # 20 ms of slin24
SLIN24_PT = 123      # Asterisk 22.10.1's dynamic PT for slin24 (the bot learns it)
FORMAT_PT = {"slin24": SLIN24_PT, "slin16": 118, "ulaw": 0, "alaw": 8}   # what Asterisk sends per caller format
HEADER = struct.Struct("!BBHII")


def delta_event(pcm_bytes: int, n: int = 0) -> str:
    """A realistic GA response.output_audio.delta carrying ``pcm_bytes`` of 24 kHz PCM16 (a tone)."""
    import numpy as np

    t = np.arange(pcm_bytes // 2) / 24000
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    return json.dumps({"type": "response.output_audio.delta", "event_id": f"event_CXk3aq4cG9fGJmfT{n:06d}",
                       "response_id": "resp_CXk3apJ2bYnZ1Yc9wQx7v", "item_id": "item_CXk3aqx0Wb2mLZ8JtFqpR",
                       "output_index": 0, "content_index": 0,
                       "delta": base64.b64encode(pcm).decode("ascii")}, separators=(",", ":"))


# ------------------------------------------------------------------------------------------------ WS sink
async def _ws_sink() -> None:
    from websockets.asyncio.server import serve

    async def handler(ws) -> None:
        async for msg in ws:
            if isinstance(msg, str) and msg.startswith("blast "):
                _, n, size = msg.split()
                text = delta_event(int(size))
                for _ in range(int(n)):
                    await ws.send(text)

    async with serve(handler, HOST, 0, compression=None, max_size=16 * 2**20) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"ws://{HOST}:{port}/", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes


async def _fake(mode: str, tone_seconds: float, speed: float, delay: float) -> None:
    from voiceai_ari.fakes.realtime.server import FakeRealtimeServer

    server = FakeRealtimeServer(mode=mode, tone_hz=440.0, tone_seconds=tone_seconds, speed=speed, host=HOST, port=0,
                                response_delay_s=delay, keep_history=False, seed=1)
    url = await server.start()
    print(url, flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    finally:
        await server.stop()


# ------------------------------------------------------------------------------------------------ RTP peer
class RtpPeer:
    """One socket, many calls. Commands (one JSON object per stdin line):

    {"cmd": "start", "ports": [p, ...], "level": 0, "burst": null | {"every": s, "first": s, "ms": ms}}
                            start streaming to those bot ports (restarts the schedule); with "burst", a loud
                            1 kHz tone for "ms" every "every" s from "first" s on, and at each burst's start the
                            packet clock slips by a random 0..20 ms (a new phase against the bot's clock)
    {"cmd": "stats"}        print per-port receive stats (JSON line) and reset them
    {"cmd": "stop"}         stop sending (keeps receiving)
    EOF                     exit
    """

    def __init__(self, fmt: str = "slin24") -> None:
        self.fmt = fmt
        self.pt = FORMAT_PT[fmt]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt, size in ((getattr(socket, "SO_RCVBUFFORCE", 33), 16 << 20), (socket.SO_RCVBUF, 16 << 20),
                          (getattr(socket, "SO_SNDBUFFORCE", 32), 16 << 20), (socket.SO_SNDBUF, 16 << 20)):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, size)
            except OSError:
                pass
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.ports: list[int] = []
        self.sending = False
        self.rx: dict[int, list[int]] = {}   # bot port -> arrival times (ns)
        self.rx_bytes: dict[int, int] = {}
        self.sent = 0
        self.send_errors = 0
        self.late_max_ns = 0

    def _frames(self, level: int) -> tuple[bytes, bytes]:
        """(quiet payload, loud payload) in the caller format (slin BE, or G.711). Quiet is digital silence, or a
        faint noise at ``level``."""
        import numpy as np

        from voiceai_ari.media.codec import g711_encode

        rate = {"slin24": 24000, "slin16": 16000}.get(self.fmt, 8000)
        n = rate // 50
        rng = np.random.default_rng(1)
        quiet = (rng.standard_normal(n) * level).astype(np.int16)
        t = np.arange(n) / rate
        loud = (np.sin(2 * np.pi * 1000 * t) * 10000).astype(np.int16)  # 1 kHz, whole periods per frame
        if self.fmt in ("ulaw", "alaw"):
            return g711_encode(quiet.astype("<i2").tobytes(), self.fmt), g711_encode(loud.astype("<i2").tobytes(), self.fmt)
        return quiet.astype(">i2").tobytes(), loud.astype(">i2").tobytes()

    def run(self) -> None:
        stdin = sys.stdin.fileno()
        quiet = loud = b""
        burst = None
        seq = ssrc = []
        t0 = tb0 = 0
        burst_no = -1
        rng = random.Random(7)
        k = 0              # frame index of the current slot round
        order: list[int] = []
        next_due = None
        poll = select.poll()
        poll.register(self.sock, select.POLLIN)
        poll.register(stdin, select.POLLIN)
        buf = b""
        while True:
            now = time.monotonic_ns()
            timeout = -1 if next_due is None else max(0, (next_due - now) / 1e6)
            events = poll.poll(timeout if timeout == -1 else math.ceil(timeout))
            for fd, _ in events:
                if fd == stdin:
                    chunk = os.read(stdin, 65536)
                    if not chunk:
                        return
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        cmd = json.loads(line)
                        if cmd["cmd"] == "start":
                            self.ports = list(cmd["ports"])
                            quiet, loud = self._frames(int(cmd.get("level", 0)))
                            burst = cmd.get("burst")
                            seq = [1000 + i for i in range(len(self.ports))]
                            ssrc = [0x10000 + i for i in range(len(self.ports))]
                            t0 = time.monotonic_ns() + 1_000_000
                            tb0 = t0          # the burst schedule's origin (t0 itself may shift)
                            burst_no = -1
                            k = 0
                            # call i is due at t0 + k*PERIOD + offset_i; offsets spread over the period
                            m = max(1, len(self.ports))
                            order = list(range(len(self.ports)))
                            offsets = [i * PERIOD_NS // m for i in range(len(self.ports))]
                            slot = 0
                            self.sending = bool(self.ports)
                            next_due = t0 if self.sending else None
                            self.rx = {}
                            self.rx_bytes = {}
                        elif cmd["cmd"] == "stats":
                            out = {"port": self.port, "sent": self.sent, "send_errors": self.send_errors,
                                   "late_max_ms": self.late_max_ns / 1e6,
                                   "rx": {str(p): times for p, times in self.rx.items()},
                                   "rx_bytes": {str(p): n for p, n in self.rx_bytes.items()}}
                            sys.stdout.write(json.dumps(out) + "\n")
                            sys.stdout.flush()
                            self.rx, self.rx_bytes = {}, {}
                            self.late_max_ns = 0
                        elif cmd["cmd"] == "stop":
                            self.sending = False
                            next_due = None
                elif fd == self.sock.fileno():
                    self._drain()
            if not self.sending or next_due is None:
                continue
            now = time.monotonic_ns()
            # send every call whose slot is due; slots are visited in offset order
            while self.sending and next_due <= now:
                i = order[slot]
                self.late_max_ns = max(self.late_max_ns, now - next_due)
                t_send = time.monotonic_ns()
                payload = quiet
                if burst is not None:
                    tb = (t_send - tb0) / 1e9 - burst["first"]
                    if tb >= 0 and (tb % burst["every"]) * 1000 < burst["ms"]:
                        payload = loud
                        if int(tb // burst["every"]) != burst_no:
                            # a new burst: shift the packet clock by a random part of a period, once, so the
                            # events it causes fall at a new phase of the bot's own 20 ms clock each time
                            burst_no = int(tb // burst["every"])
                            t0 += rng.randrange(PERIOD_NS)
                pkt = HEADER.pack(0x80, self.pt, seq[i] & 0xFFFF, (t_send // 1000) & 0xFFFFFFFF, ssrc[i]) + payload
                try:
                    self.sock.sendto(pkt, (HOST, self.ports[i]))
                    self.sent += 1
                except OSError:
                    self.send_errors += 1
                seq[i] += 1
                slot += 1
                if slot == len(order):
                    slot = 0
                    k += 1
                next_due = t0 + k * PERIOD_NS + offsets[order[slot]]
                if now - next_due > 200_000_000:  # stalled for 200 ms: re-anchor rather than burst
                    t0, k, slot = now, 0, 0
                    next_due = t0
                now = time.monotonic_ns()
                if slot % 16 == 0:
                    self._drain()

    def _drain(self) -> None:
        sock = self.sock
        while True:
            try:
                data, addr = sock.recvfrom(2048)
            except BlockingIOError:
                return
            except OSError:
                return
            t = time.monotonic_ns()
            port = addr[1]
            lst = self.rx.get(port)
            if lst is None:
                lst = self.rx[port] = []
                self.rx_bytes[port] = 0
            lst.append(t)
            self.rx_bytes[port] += len(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.peers")
    ap.add_argument("role", choices=("ws-sink", "rtp", "fake"))
    ap.add_argument("--cpu", type=int)
    ap.add_argument("--mode", default="tone")
    ap.add_argument("--tone-seconds", type=float, default=2.0)
    ap.add_argument("--speed", type=float, default=4.0)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--format", default="slin24", choices=tuple(FORMAT_PT), help="rtp: the caller format sent")
    args = ap.parse_args(argv)
    pin(args.cpu)
    raise_nofile()
    if args.role == "fake":
        import logging
        logging.basicConfig(level=logging.WARNING)
        asyncio.run(_fake(args.mode, args.tone_seconds, args.speed, args.delay))
        return 0
    if args.role == "ws-sink":
        asyncio.run(_ws_sink())
        return 0
    peer = RtpPeer(args.format)
    print(peer.port, flush=True)
    peer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
