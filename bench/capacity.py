"""Sections 2 and 6, capacity and memory: how many calls one bot process carries on one core.

Three processes:

- the bot (``python -m bench.capacity bot``), pinned to the first CPU: M ``SimCall``s, each a real
  ``RtpMedia`` (own UDP port) + ``RealtimeSession`` wired like ``Call._converse``, kept talking: every call
  asks for a response (a 3 s tone from the fake model, streamed at 4x real time), and asks for the next one
  once its playout queue is under 400 ms, so the bot speaks without pause and its queues stay bounded;
- the fake model (``bench.peers fake``: voiceai_ari's FakeRealtimeServer, tone mode, no history kept) and
- "Asterisk" (``bench.peers rtp``: slin24 BE PT 123, one packet per call every 20 ms, call phases spread over
  the period, digital silence so the model's VAD stays quiet; it also receives the bot's PT 9 packets),
  both pinned to the second CPU, with this orchestrator.

The bot adds calls level by level (1, 25, 50, 100, ...). At each level, after a warm-up, it measures for a
window: the outbound send interval of every packet of every call (at ``sendto``; jitter = |interval - 20 ms|,
p99 per call), playout underruns, clock re-anchors, caller audio dropped, its CPU (utime+stime from
/proc/self/stat) and RSS; and, for the first few calls, RTP arrival -> ``input_audio_buffer.append`` written.
A level passes with worst-call p99 jitter <= 2 ms and no underrun. The ladder stops after the first failing
level. RSS per additional call = (RSS at M calls - RSS with none) / M.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import (REPO, GcPauses, core_busy_s, cpu_seconds, cpus, ctx_switches, pct, pin, pinned, raise_nofile,
                     realtime, rss_kb, steal_s)

JITTER_TARGET_MS = 2.0
FULL_LEVELS = (1, 10, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500)
KEEP_UP_CPU_PCT = 90.0
MEMORY_LEVELS = (1, 50, 200)
TAPPED_CALLS = 4
TALK_AGAIN_BELOW_MS = 400


# ------------------------------------------------------------------------------------------------ the bot process
def _jitter(times: list[int], t0: int, t1: int) -> tuple[float, float, int]:
    """(p99 |interval - 20 ms| in ms, max, intervals) of the send times inside [t0, t1]."""
    ts = [t for t in times if t0 <= t <= t1]
    dev = [abs((b - a) - 20_000_000) / 1e6 for a, b in zip(ts, ts[1:])]
    if not dev:
        return float("nan"), float("nan"), 0
    return pct(dev, 99), max(dev), len(dev)


async def bot_main(args: argparse.Namespace) -> None:
    import gc

    from voiceai_ari.media.transport import FrameClock, PortPool

    from .callsim import SimCall

    ticks: list[tuple[int, int, int]] = []   # (start ns, late ns vs its deadline, duration ns)
    orig_tick = FrameClock._tick

    def timed_tick(self: FrameClock) -> None:   # tap: how late each shared tick ran, and how long it took
        t = now_ns()
        late = int((self._loop.time() - self.pacing.next_deadline()) * 1e9)
        orig_tick(self)
        ticks.append((t, late, now_ns() - t))

    FrameClock._tick = timed_tick  # type: ignore[method-assign]
    now_ns = time.monotonic_ns

    pin(args.cpu)
    raise_nofile()
    if args.rt:
        realtime(True).__enter__()  # for the life of this process
    levels = [int(x) for x in args.levels.split(",")]
    pool = PortPool(range(args.port_base, args.port_base + max(levels) + 200))
    remote = ("127.0.0.1", args.peer_port)
    calls: list[SimCall] = []
    loop = asyncio.get_running_loop()
    gc.collect()
    await asyncio.sleep(0.2)
    rss0 = rss_kb()
    emit({"baseline": {"rss_kb": rss0}})
    stdin_closed = loop.create_future()

    def on_stdin() -> None:  # the orchestrator closes our stdin to stop us early
        if not os.read(sys.stdin.fileno(), 4096):
            loop.remove_reader(sys.stdin.fileno())
            if not stdin_closed.done():
                stdin_closed.set_result(None)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    try:
        for level in levels:
            t_setup = time.monotonic()
            while len(calls) < level:
                call = SimCall(url=args.url, api_key="bench", pool=pool, talk_again_below_ms=TALK_AGAIN_BELOW_MS,
                               caller_format=args.format)
                await call.start(remote)
                if len(calls) < TAPPED_CALLS:
                    call.tap_inbound()
                calls.append(call)
            setup_s = time.monotonic() - t_setup
            emit({"ports": [c.media.port for c in calls]})
            await asyncio.wait([stdin_closed], timeout=args.warm)
            if stdin_closed.done():
                break
            for c in calls:
                assert c.tx is not None
                c.tx.reset()
                c.in_lat_ns.clear()
                c.in_wire_us.clear()
            before = _counters(calls)
            t0, c0, w0 = time.monotonic_ns(), cpu_seconds(), time.monotonic()
            cs0 = ctx_switches()
            emit({"window": "start"})
            with GcPauses() as gcp:
                await asyncio.wait([stdin_closed], timeout=args.measure)
            t1, c1, w1 = time.monotonic_ns(), cpu_seconds(), time.monotonic()
            cs1 = ctx_switches()
            after = _counters(calls)
            rss = rss_kb()
            per_call = [_jitter(c.tx.times, t0, t1) for c in calls if c.tx is not None]
            win = [(late / 1e6, dur / 1e6) for t, late, dur in ticks if t0 <= t <= t1]
            ticks.clear()
            p99s = [p for p, _, _ in per_call]
            maxes = [m for _, m, _ in per_call]
            intervals = sum(n for _, _, n in per_call)
            in_lat = [x / 1e6 for c in calls for x in c.in_lat_ns]
            in_wire = [x / 1e3 for c in calls for x in c.in_wire_us if x < 10_000_000]
            diff = {k: after[k] - before[k] for k in after}
            cpu = c1 - c0
            wall = w1 - w0
            frames = level * wall / 0.020
            res = {
                "calls": level, "setup_s": setup_s, "window_s": wall, "cpu_s": cpu, "cpu_pct": 100 * cpu / wall,
                "us_per_call_frame": cpu / frames * 1e6 if frames else None,
                "jitter_p99_ms_worst_call": max(p99s), "jitter_p99_ms_median_call": pct(p99s, 50),
                "jitter_max_ms": max(maxes), "intervals": intervals,
                "expected_intervals": int(level * (wall / 0.020 - 1)),
                "rss_kb": rss, "rss_per_call_mb": (rss - rss0) / 1024 / level,
                "inbound_ms_p50": pct(in_lat, 50), "inbound_ms_p99": pct(in_lat, 99),
                "inbound_wire_ms_p50": pct(in_wire, 50), "inbound_wire_ms_p99": pct(in_wire, 99),
                "tick_late_ms_p50": pct([a for a, _ in win], 50), "tick_late_ms_p99": pct([a for a, _ in win], 99),
                "tick_late_ms_max": max((a for a, _ in win), default=float("nan")),
                "tick_ms_p50": pct([b for _, b in win], 50), "tick_ms_p99": pct([b for _, b in win], 99),
                "preemptions": cs1[1] - cs0[1], "gc_runs": len(gcp.pauses_ms),
                "gc_pause_ms_max": max(gcp.pauses_ms, default=0.0), "gc_pause_ms_total": sum(gcp.pauses_ms),
                **diff,
            }
            res["ok"] = bool(res["jitter_p99_ms_worst_call"] <= JITTER_TARGET_MS and diff["underruns"] == 0)
            # the weaker criterion: the bot keeps real time (every frame sent, none re-anchored or starved, no
            # caller audio shed) with CPU to spare
            res["keeps_up"] = bool(diff["underruns"] == 0 and diff["reanchors"] == 0 and diff["dropped_audio"] == 0
                                   and res["cpu_pct"] < KEEP_UP_CPU_PCT
                                   and intervals >= 0.99 * res["expected_intervals"])
            emit({"result": res, "t0": t0, "t1": t1})
    finally:
        try:  # teardown is not measured: close everything at once, errors and stragglers ignored
            await asyncio.wait_for(asyncio.gather(*(c.close() for c in calls), return_exceptions=True), 20)
        except (asyncio.TimeoutError, Exception):
            pass


def _counters(calls: list[Any]) -> dict[str, int]:
    out = {"underruns": 0, "reanchors": 0, "dropped_audio": 0, "uplink_fill": 0, "rx_accepted": 0,
           "rx_dropped": 0, "tx_packets": 0, "responses": 0, "socket_errors": 0}
    for c in calls:
        m = c.media
        out["underruns"] += m.playout.underruns
        out["dropped_audio"] += c.session.dropped_audio
        out["uplink_fill"] += m.uplink_fill_frames
        out["rx_accepted"] += m.filter.accepted
        out["rx_dropped"] += sum(m.filter.drops.values())
        out["tx_packets"] += m.sender.packets_sent
        out["responses"] += c.responses_done
        out["socket_errors"] += m.socket_errors
    if calls:   # every call sends on the process's one clock
        out["reanchors"] = calls[0].media.clock.pacing.reanchors
    return out


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------------ orchestrator
class Proc:
    """A child process speaking JSON lines on stdout."""

    def __init__(self, args: list[str], cpu: int | None) -> None:
        cmd = [sys.executable, "-m", *args] + (["--cpu", str(cpu)] if cpu is not None else [])
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(REPO),
                                  bufsize=1)

    def line(self) -> str:
        assert self.p.stdout is not None
        s = self.p.stdout.readline()
        if not s:
            raise RuntimeError(f"{self.p.args} exited ({self.p.poll()})")
        return s.strip()

    def send(self, obj: dict[str, Any]) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(json.dumps(obj) + "\n")
        self.p.stdin.flush()

    def close(self, timeout: float = 20.0) -> None:
        if self.p.stdin is not None and not self.p.stdin.closed:
            try:
                self.p.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def _rx_jitter(arrivals: dict[str, list[int]], t0: int, t1: int) -> dict[str, float]:
    p99s, maxes = [], []
    for times in arrivals.values():
        ts = [t for t in times if t0 <= t <= t1]
        dev = [abs((b - a) - 20_000_000) / 1e6 for a, b in zip(ts, ts[1:])]
        if dev:
            p99s.append(pct(dev, 99))
            maxes.append(max(dev))
    return {"rx_jitter_p99_ms_worst_call": max(p99s) if p99s else float("nan"),
            "rx_jitter_p99_ms_median_call": pct(p99s, 50), "rx_jitter_max_ms": max(maxes) if maxes else float("nan")}


def run(quick: bool = False, levels: tuple[int, ...] | None = None, warm: float | None = None,
        measure: float | None = None, log=print, keep_going: bool = False, loop: str = "asyncio",
        profile_dir: Path | None = None, rt: bool = False, caller_format: str = "slin24") -> dict[str, Any]:
    """The capacity ladder for one media path (``caller_format``: VOICEAI_CALLER_FORMAT on RTP)."""
    bot_cpu, peer_cpu = cpus()
    levels = levels or ((3,) if quick else FULL_LEVELS)
    warm = warm if warm is not None else (1.0 if quick else 3.0)
    measure = measure if measure is not None else (1.5 if quick else 10.0)
    with pinned(peer_cpu):
        res = _run(levels, warm, measure, quick or keep_going, bot_cpu, peer_cpu, log, loop, profile_dir, rt,
                   caller_format)
    res["loop"] = loop
    res["transport"], res["caller_format"] = "rtp", caller_format
    res["realtime"] = rt
    return res


def _run(levels: tuple[int, ...], warm: float, measure: float, keep_going: bool, bot_cpu: int | None,
         peer_cpu: int | None, log, loop: str = "asyncio", profile_dir: Path | None = None,
         rt: bool = False, caller_format: str = "slin24") -> dict[str, Any]:
    from .profile import record
    fake = Proc(["bench.peers", "fake", "--mode", "tone", "--tone-seconds", "3", "--speed", "4"], peer_cpu)
    peer = Proc(["bench.peers", "rtp", "--format", caller_format], peer_cpu)
    bot = None
    steps: list[dict[str, Any]] = []
    try:
        url = fake.line()
        peer_port = int(peer.line())
        bot = Proc(["bench.capacity", "bot", "--url", url, "--peer-port", str(peer_port), "--levels",
                    ",".join(map(str, levels)), "--warm", str(warm), "--measure", str(measure),
                    "--port-base", str(51000), "--loop", loop, "--format", caller_format]
                   + (["--rt"] if rt else []), bot_cpu)
        baseline = json.loads(bot.line())["baseline"]
        harness: dict[str, float] = {}
        n_calls = 0
        spy = None
        while True:
            msg = json.loads(bot.line())
            if "ports" in msg:
                peer.send({"cmd": "start", "ports": msg["ports"]})
                n_calls = len(msg["ports"])
            elif msg.get("window") == "start":
                harness = {"fake": cpu_seconds(fake.p.pid), "peer": cpu_seconds(peer.p.pid), "t": time.monotonic(),
                           "bot": cpu_seconds(bot.p.pid), "core": core_busy_s(bot_cpu),
                           "hcore": core_busy_s(peer_cpu), "steal": steal_s(bot_cpu)}
                if profile_dir is not None:
                    spy = record(bot.p.pid, measure, profile_dir / f"capacity-{n_calls}.txt")
            elif "result" in msg:
                res = msg["result"]
                wall = time.monotonic() - harness["t"]
                if spy is not None:
                    spy.wait(30)
                    res["profile"] = str(profile_dir / f"capacity-{n_calls}.txt")  # type: ignore[operator]
                res["fake_cpu_pct"] = 100 * (cpu_seconds(fake.p.pid) - harness["fake"]) / wall
                res["peer_cpu_pct"] = 100 * (cpu_seconds(peer.p.pid) - harness["peer"]) / wall
                res["harness_cpu_pct"] = res["fake_cpu_pct"] + res["peer_cpu_pct"]
                # other work on the two CPUs meanwhile (other processes, interrupts): what makes timings noisy
                bot_s = cpu_seconds(bot.p.pid) - harness["bot"]
                res["foreign_on_bot_cpu_pct"] = 100 * (core_busy_s(bot_cpu) - harness["core"] - bot_s) / wall
                res["steal_on_bot_cpu_pct"] = 100 * (steal_s(bot_cpu) - harness["steal"]) / wall
                harness_s = (res["fake_cpu_pct"] + res["peer_cpu_pct"]) * wall / 100
                res["foreign_on_harness_cpu_pct"] = 100 * (core_busy_s(peer_cpu) - harness["hcore"] - harness_s) / wall
                peer.send({"cmd": "stats"})
                stats = json.loads(peer.line())
                res.update(_rx_jitter(stats["rx"], msg["t0"], msg["t1"]))
                res["peer_late_max_ms"] = stats["late_max_ms"]
                steps.append(res)
                log(f"  capacity: {res['calls']:4d} calls  cpu {res['cpu_pct']:5.1f}%  "
                    f"jitter p99 worst {res['jitter_p99_ms_worst_call']:.2f} ms  underruns {res['underruns']}  "
                    f"rss {res['rss_kb'] / 1024:.0f} MB  harness cpu {res['harness_cpu_pct']:.0f}%  "
                    f"others on the bot's cpu {res['foreign_on_bot_cpu_pct']:.0f}% (host steal "
                    f"{res['steal_on_bot_cpu_pct']:.0f}%)  preempted {res['preemptions']}x  "
                    f"gc max {res['gc_pause_ms_max']:.1f} ms  tick late p50/p99/max {res['tick_late_ms_p50']:.2f}/"
                    f"{res['tick_late_ms_p99']:.2f}/{res['tick_late_ms_max']:.2f} ms, tick p50/p99 "
                    f"{res['tick_ms_p50']:.2f}/{res['tick_ms_p99']:.2f} ms  "
                    f"{'ok' if res['ok'] else 'FAIL'}{'' if res['keeps_up'] else ' (not keeping up)'}")
                if not res["keeps_up"] and not keep_going:  # past the jitter limit, the ladder goes on while
                    break                                  # the bot still keeps real time
                if res["calls"] == levels[-1]:
                    break
    finally:
        if bot is not None:
            bot.close(60)
        peer.close()
        fake.close()
    passing = [s["calls"] for s in steps if s["ok"]]
    # the largest M with every level up to it passing
    max_ok = max_up = 0
    for s in steps:
        if not s["ok"]:
            break
        max_ok = s["calls"]
    for s in steps:
        if not s["keeps_up"]:
            break
        max_up = s["calls"]
    memory = {str(s["calls"]): {"rss_kb": s["rss_kb"], "per_call_mb": s["rss_per_call_mb"], "keeps_up": s["keeps_up"]}
              for s in steps if s["calls"] in (MEMORY_LEVELS + (levels[-1],))}
    return {"pinned": {"bot_cpu": bot_cpu, "harness_cpu": peer_cpu}, "levels": list(levels), "warm_s": warm,
            "measure_s": measure, "baseline_rss_kb": baseline["rss_kb"], "steps": steps,
            "max_calls_ok": max_ok, "passing_levels": passing, "max_calls_keeping_up": max_up, "memory": memory,
            "target_calls": 200, "jitter_target_ms": JITTER_TARGET_MS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.capacity")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bot")
    b.add_argument("--url", required=True)
    b.add_argument("--peer-port", type=int, required=True)
    b.add_argument("--levels", required=True)
    b.add_argument("--warm", type=float, default=3.0)
    b.add_argument("--measure", type=float, default=10.0)
    b.add_argument("--port-base", type=int, default=51000)
    b.add_argument("--cpu", type=int)
    b.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    b.add_argument("--rt", action="store_true")
    b.add_argument("--format", default="slin24")
    r = sub.add_parser("run")
    r.add_argument("--format", default="slin24", choices=("slin24", "slin16", "ulaw", "alaw"),
                   help="VOICEAI_CALLER_FORMAT of the simulated calls (the media path measured)")
    r.add_argument("--levels")
    r.add_argument("--warm", type=float)
    r.add_argument("--measure", type=float)
    r.add_argument("--keep-going", action="store_true", help="do not stop at the first failing level")
    r.add_argument("--rt", action="store_true", help="run the bot SCHED_FIFO (a machine shared with other work)")
    r.add_argument("--profile", type=Path, help="py-spy raw profiles of each level's window into this folder")
    r.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"),
                   help="the bot's event loop (uvloop: an experiment, not a dependency of voiceai-ari)")
    args = ap.parse_args(argv)
    if args.cmd == "bot":
        import logging
        logging.basicConfig(level=logging.WARNING)
        if args.loop == "uvloop":
            import uvloop
            uvloop.run(bot_main(args))
        else:
            asyncio.run(bot_main(args))
        return 0
    levels = tuple(int(x) for x in args.levels.split(",")) if args.levels else None
    res = run(levels=levels, warm=args.warm, measure=args.measure, keep_going=args.keep_going,
              log=lambda m: print(m, file=sys.stderr), loop=args.loop, profile_dir=args.profile, rt=args.rt,
              caller_format=args.format)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
