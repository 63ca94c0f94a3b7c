"""Section 2 for the websocket transport: how many chan_websocket calls one bot process carries on one core.

Three processes, as in capacity.py:
- the bot (this module's ``bot`` role, pinned to the first CPU): M calls, each the bot's real `WebSocketMedia`
  + `RealtimeSession`, wired like `Call._converse` and kept talking (a new response once less than 400 ms is
  left unplayed at "Asterisk");
- the fake model (``bench.peers fake``: 3 s tone replies at 4x real time) and
- "Asterisk" (``asterisk`` role): a /media WebSocket server (websockets' sans-I/O server protocol on plain
  asyncio transports) that speaks chan_websocket's JSON control, sends each call a 960-byte slin24 frame of
  digital silence every 20 ms (one timer for all calls), and plays the bot's frames with
  `fakes.chan_websocket.ChanWebsocketQueue` on the same 20 ms tick: marks answered, whole frames only,
  1000-frame limit, XOFF/XON,
both pinned to the second CPU.

Per level, over the window: the bot's CPU (a core = 100 %), caller frames the bot received vs sent, and at
"Asterisk" the ticks with nothing to play (``silent``: the bot was late or between replies), frames played,
bytes dropped (partial frames, full queue), and the harness's CPU (fake model + "Asterisk" share one core:
above 90 % it is the harness, not the bot, that falls behind). A level keeps real time when the bot's CPU stays under 90 %, it
got >= 99 % of the caller frames and < 1 % of the ticks were silent. There is no send jitter to measure: the
bot does not pace; Asterisk's timer does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from .capacity import Proc, emit
from .common import cpu_seconds, cpus, pin, pinned, raise_nofile, rss_kb

FRAME = 960
LEVELS = (1, 25, 50, 100, 200, 300, 400)
KEEP_UP_CPU_PCT = 90.0
TALK_AGAIN_BELOW_MS = 400


# ------------------------------------------------------------------------------------------------ "Asterisk"
async def asterisk_main() -> None:
    from websockets.frames import Opcode
    from websockets.http11 import Request
    from websockets.server import ServerProtocol

    from voiceai_ari.fakes.chan_websocket import ChanWebsocketQueue

    conns: list[Conn] = []
    silence = bytes(FRAME)
    stats = {"caller_frames": 0, "played": 0, "silent": 0}

    class Conn(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport
            self.p = ServerProtocol(subprotocols=["media"])   # type: ignore[list-item]
            self.q = ChanWebsocketQueue(FRAME)
            self.up = False

        def data_received(self, data: bytes) -> None:
            self.p.receive_data(data)
            for ev in self.p.events_received():
                if isinstance(ev, Request):
                    self.p.send_response(self.p.accept(ev))
                    self.p.send_text(json.dumps({"event": "MEDIA_START", "format": "slin24", "channel_id": "1",
                                                 "optimal_frame_size": FRAME, "ptime": 20}).encode())
                    self.up = True
                    conns.append(self)
                elif ev.opcode is Opcode.BINARY:
                    self.q.binary(bytes(ev.data))
                elif ev.opcode is Opcode.TEXT:
                    self.q.text(bytes(ev.data).decode())
            self.flush()

        def flush(self) -> None:
            for data in self.p.data_to_send():
                if data:
                    self.t.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self in conns:
                conns.remove(self)

        def tick(self) -> None:
            self.p.send_binary(silence)
            stats["caller_frames"] += 1
            if self.q.tick() is None:
                stats["silent"] += 1
            else:
                stats["played"] += 1
            for ev in self.q.events:
                self.p.send_text(ev.encode())
            self.q.events.clear()
            self.flush()

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    t0 = loop.time()
    k = [0]

    def tick() -> None:
        for c in list(conns):
            c.tick()
        k[0] += 1
        loop.call_at(t0 + k[0] * 0.020, tick)

    loop.call_at(t0 + 0.020, tick)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "stats":
            dropped = sum(c.q.dropped_bytes for c in conns)
            emit({**stats, "dropped_bytes": dropped, "conns": len(conns)})
            for key in stats:
                stats[key] = 0


# ------------------------------------------------------------------------------------------------ the bot
async def bot_main(port: int, url: str) -> None:
    from voiceai_ari.media.websocket_channel import WebSocketMedia
    from voiceai_ari.providers.base import AudioDelta, AudioDone, ResponseDone
    from voiceai_ari.providers.openai_realtime.protocol import SessionConfig
    from voiceai_ari.providers.openai_realtime.session import RealtimeSession

    loop = asyncio.get_running_loop()
    calls: list[tuple[WebSocketMedia, RealtimeSession]] = []
    tasks: list[asyncio.Task[None]] = []

    async def converse(media: WebSocketMedia, model: RealtimeSession) -> None:
        done = asyncio.Event()

        async def talk() -> None:
            model.request_response()
            while True:
                await done.wait()
                done.clear()
                left = media.core.unplayed_frames(loop.time()) * 20
                if left > TALK_AGAIN_BELOW_MS:
                    await asyncio.sleep((left - TALK_AGAIN_BELOW_MS) / 1000)
                model.request_response()

        talker = asyncio.create_task(talk())
        try:
            async for ev in model.events():
                if isinstance(ev, AudioDelta):
                    media.play(ev.pcm, ev.item_id)
                    await asyncio.sleep(0)
                elif isinstance(ev, AudioDone):
                    media.end_item()
                elif isinstance(ev, ResponseDone):
                    done.set()
        finally:
            talker.cancel()

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "level":
            while len(calls) < cmd["calls"]:
                media = WebSocketMedia(ari_url=f"http://127.0.0.1:{port}", fmt="slin24")
                model = RealtimeSession(url, "sk-bench-0123456789", SessionConfig())
                await model.start()
                media.on_audio = model.send_audio
                await media.connect({"MEDIA_WEBSOCKET_CONNECTION_ID": f"c{len(calls)}"})
                calls.append((media, model))
                tasks.append(asyncio.create_task(converse(media, model)))
            emit({"calls": len(calls)})
        elif cmd["cmd"] == "measure":
            rx0 = sum(m.rx_frames for m, _ in calls)
            c0, w0 = time.process_time(), loop.time()
            await asyncio.sleep(cmd["seconds"])
            c1, w1 = time.process_time(), loop.time()
            rx1 = sum(m.rx_frames for m, _ in calls)
            emit({"cpu_pct": 100 * (c1 - c0) / (w1 - w0), "window_s": w1 - w0, "rx_frames": rx1 - rx0,
                  "rss_kb": rss_kb(), "xoffs": sum(m.core.xoffs for m, _ in calls),
                  "dropped_audio": sum(s.dropped_audio for _, s in calls)})
    for t in tasks:
        t.cancel()
    for media, model in calls:
        await media.close()
        await model.close()


# ------------------------------------------------------------------------------------------------ orchestrator
def run(levels: tuple[int, ...] = LEVELS, warm: float = 3.0, measure: float = 8.0, log=print,
        keep_going: bool = False) -> dict[str, Any]:
    bot_cpu, peer_cpu = cpus()
    with pinned(peer_cpu):
        fake = Proc(["bench.peers", "fake", "--mode", "tone", "--tone-seconds", "3", "--speed", "4"], peer_cpu)
        ast = Proc(["bench.capacity_ws", "asterisk"], peer_cpu)
        steps: list[dict[str, Any]] = []
        bot = None
        try:
            url, port = fake.line(), int(ast.line())
            bot = Proc(["bench.capacity_ws", "bot", "--port", str(port), "--url", url], bot_cpu)
            for n in levels:
                bot.send({"cmd": "level", "calls": n})
                json.loads(bot.line())
                time.sleep(warm)
                ast.send({"cmd": "stats"})
                json.loads(ast.line())
                h0, t0 = cpu_seconds(fake.p.pid) + cpu_seconds(ast.p.pid), time.monotonic()
                bot.send({"cmd": "measure", "seconds": measure})
                b = json.loads(bot.line())
                harness = 100 * (cpu_seconds(fake.p.pid) + cpu_seconds(ast.p.pid) - h0) / (time.monotonic() - t0)
                ast.send({"cmd": "stats"})
                a = json.loads(ast.line())
                ticks = a["played"] + a["silent"]
                step = {"calls": n, **b, **{f"asterisk_{k}": v for k, v in a.items()},
                        "rx_share": b["rx_frames"] / a["caller_frames"] if a["caller_frames"] else 0.0,
                        "silent_share": a["silent"] / ticks if ticks else 1.0,
                        "us_per_call_frame": b["cpu_pct"] / 100 * 0.020 / n * 1e6, "harness_cpu_pct": harness}
                step["keeps_up"] = (step["cpu_pct"] < KEEP_UP_CPU_PCT and step["rx_share"] >= 0.99
                                    and step["silent_share"] < 0.01 and a["dropped_bytes"] == 0)
                steps.append(step)
                log(f"  {n} websocket calls: CPU {step['cpu_pct']:.1f}%, {step['us_per_call_frame']:.0f} µs/call/20 ms, "
                    f"caller frames {step['rx_share']:.3f}, silent ticks {step['silent_share']:.4f}, "
                    f"dropped {a['dropped_bytes']} B; fake model + Asterisk {harness:.0f}% of their core"
                    f"{' [harness saturated]' if harness > 90 else ''}: {'keeps up' if step['keeps_up'] else 'NO'}")
                if not step["keeps_up"] and not keep_going:
                    break
        finally:
            for p in (bot, ast, fake):
                if p is not None:
                    p.close()
    best = max((s["calls"] for s in steps if s["keeps_up"]), default=0)
    return {"steps": steps, "calls_keeping_real_time": best, "target_calls": 200}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.capacity_ws")
    ap.add_argument("role", choices=["run", "bot", "asterisk"])
    ap.add_argument("--port", type=int)
    ap.add_argument("--url")
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)))
    ap.add_argument("--keep-going", action="store_true")
    ap.add_argument("--cpu", type=int)
    args = ap.parse_args(argv)
    raise_nofile()
    if args.role != "run":
        pin(args.cpu)
    if args.role == "asterisk":
        asyncio.run(asterisk_main())
    elif args.role == "bot":
        asyncio.run(bot_main(args.port, args.url))
    else:
        res = run(tuple(int(x) for x in args.levels.split(",")), keep_going=args.keep_going)
        print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
