"""``python -m bench``: measure the bridge, print one table, write the numbers as JSON.

    python -m bench                          every section (the sandbox ones need root, sipp and the bot lock)
    python -m bench --quick                  a smoke run of a few seconds: sections 1, 3, 4 and a tiny capacity
    python -m bench --only frames,latency    some sections: frames, capacity, memory, latency, barge-in,
                                             setup, ratio (capacity+memory and latency+barge-in share a run)
    python -m bench --json out.json          where the JSON goes (default bench/results/latest.json)

Sections (issue 6): 1 per-frame cost, 2 capacity on one core, 3 added latency, 4 barge-in reaction, 5 call
set-up on the sandbox, 6 memory per call, 7 bot CPU versus Asterisk CPU. See docs/benchmarks.md.
Benchmarks report; they never fail for being slow (exit status 0 unless a section could not run at all).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from .common import REPO, machine

SECTIONS = ("frames", "capacity", "memory", "latency", "barge-in", "setup", "ratio")
QUICK_SECTIONS = ("frames", "capacity", "memory", "latency", "barge-in")
DEFAULT_JSON = REPO / "bench" / "results" / "latest.json"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def busy_pct(seconds: float = 1.0) -> float:
    """CPU busy share of the whole machine over ``seconds`` (/proc/stat), before anything of ours runs."""
    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return sum(vals) - idle, sum(vals)
    b0, t0 = read()
    time.sleep(seconds)
    b1, t1 = read()
    return 100.0 * (b1 - b0) / max(1, t1 - t0)


def loadavg() -> list[float]:
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return []


# ------------------------------------------------------------------------------------------------ table
def _f(x: Any, nd: int = 1) -> str:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return f"{x:.{nd}f}"
    return "-"


def _ok(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "NO")


def build_rows(res: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    fr = res.get("frames")
    if fr:
        for s in fr["stages"]:
            name = f"{'in ' if s['direction'] == 'in' else 'out'} {s['stage']}" + ("" if s["core"] else " *")
            rows.append(["1", name, f"{_f(s['p50_us'], 2)} µs (p90 {_f(s['p90_us'], 2)})", "", ""])
        t = fr["totals"]
        rows.append(["1", "per-frame cost, inbound / outbound (all stages)",
                     f"{_f(t['in_all_p50_us'])} / {_f(t['out_all_p50_us'])} µs", "", ""])
        for key, label in (("ws_send_coroutine_us", "old WebSocket send: await ws.send"),
                           ("queue_hop_us", "old asyncio.Queue hop to a send task")):
            if key in fr.get("replaced", {}):
                rows.append(["1", f"in  ({label}; replaced, not counted)", f"{_f(fr['replaced'][key], 2)} µs", "", ""])
        rows.append(["1", "per-frame cost, both directions: the issue's stages (all stages, * included)",
                     f"{_f(t['both_core_p50_us'])} µs ({_f(t['both_all_p50_us'])} µs)", "<= 50 µs",
                     _ok(t["both_core_p50_us"] <= fr["target_us"])])
        for name, p in fr.get("paths", {}).items():   # one row per media path, side by side
            parts = ", ".join(f"{k} {_f(v, 1)}" for k, v in p["stages_p50_us"].items())
            rows.append(["1", f"per-frame cost, both directions, {name} ({parts})",
                         f"{_f(p['both_core_p50_us'])} µs", f"<= {p['target_us']:g} µs" if p["target_us"] else "",
                         _ok(p["both_core_p50_us"] <= p["target_us"]) if p["target_us"] else ""])
    fw = res.get("frames_ws")
    if fw and fr:
        for s in fw["stages"]:
            rows.append(["1", f"{'in ' if s['direction'] == 'in' else 'out'} websocket: {s['stage']}",
                         f"{_f(s['p50_us'], 2)} µs (p90 {_f(s['p90_us'], 2)})", "", ""])
        t = fw["totals"]
        rows.append(["1", "per-frame cost over chan_websocket slin24, inbound / outbound (with the model side)",
                     f"{_f(t['in_p50_us'])} / {_f(t['out_p50_us'])} µs", "", ""])
        rows.append(["1", "per-frame cost over chan_websocket slin24, both directions",
                     f"{_f(t['both_p50_us'])} µs", "<= 50 µs", _ok(t["both_p50_us"] <= fr["target_us"])])
    cap = res.get("capacity")
    if cap and "steps" in cap:
        for s in cap["steps"]:
            sat = " [harness core saturated]" if s.get("harness_cpu_pct", 0) > 90 else ""
            rows.append(["2", f"{s['calls']} calls on one core",
                         f"CPU {_f(s['cpu_pct'])}%, {_f(s['us_per_call_frame'], 0)} µs/call/20 ms, jitter p99 "
                         f"{_f(s['jitter_p99_ms_worst_call'], 2)} ms worst call, {s['underruns']} underruns, "
                         f"inbound p99 {_f(s['inbound_ms_p99'], 2)} ms; other work on its CPU "
                         f"{_f(s.get('foreign_on_bot_cpu_pct'), 0)}%{sat}",
                         "p99 <= 2 ms, 0 underruns", _ok(s["ok"])])
        rows.append(["2", "capacity: most calls on one core, p99 jitter <= 2 ms and no underruns at every level",
                     f"{cap['max_calls_ok']} calls (tried up to {cap['steps'][-1]['calls'] if cap['steps'] else 0})",
                     ">= 200", _ok(cap["max_calls_ok"] >= 200)])
        rows.append(["2", f"capacity: most calls keeping real time (no underrun, re-anchor or shed audio; CPU < "
                          f"{capacity_keep_up()}%)", f"{cap.get('max_calls_keeping_up', 0)} calls", "", ""])
    cw = res.get("capacity_ws")
    if cw and "steps" in cw:
        for s in cw["steps"]:
            rows.append(["2", f"{s['calls']} calls on one core over chan_websocket slin24",
                         f"CPU {_f(s['cpu_pct'])}%, {_f(s['us_per_call_frame'], 0)} µs/call/20 ms, caller frames "
                         f"received {_f(100 * s['rx_share'], 1)}%, silent ticks at Asterisk "
                         f"{_f(100 * s['silent_share'], 2)}%, dropped {s['asterisk_dropped_bytes']} B"
                         + (" [harness core saturated]" if s.get("harness_cpu_pct", 0) > 90 else ""),
                         "keeps real time", _ok(s["keeps_up"])])
        rows.append(["2", "capacity over chan_websocket: most calls keeping real time (CPU < 90 %, >= 99 % of "
                          "caller frames, < 1 % silent ticks, nothing dropped)",
                     f"{cw['calls_keeping_real_time']} calls", ">= 200", _ok(cw["calls_keeping_real_time"] >= 200)])
    lat = res.get("latency")
    if lat and "inbound_ms" in lat:
        i, w = lat["inbound_ms"], lat["inbound_wire_ms"]
        rows.append(["3", "RTP arrival -> input_audio_buffer.append sent (p50 / p99)",
                     f"{_f(i['p50'], 3)} / {_f(i['p99'], 3)} ms (from peer sendto: {_f(w['p50'], 3)} / "
                     f"{_f(w['p99'], 3)})", "p99 <= 1 ms", _ok(i["p99"] <= 1.0)])
        o = lat["outbound_first_audio_ms"]
        rows.append(["3", "first output_audio.delta read -> first RTP packet out (p50 / max)",
                     f"{_f(o['p50'])} / {_f(o['max'])} ms (n={o['n']})", "<= 25 ms", _ok(o["max"] <= 25.0)])
        r = lat["resampler_delay_ms"]
        rows.append(["3", "resampler group delay 24->16 kHz (inbound: none, Asterisk sends slin24)",
                     f"{_f(r['24to16'], 2)} ms", "", ""])
        if "barge-in" in res.get("_sections", ()):
            b = lat["barge_in_ms"]
            rows.append(["4", "speech_started read -> bot audio stopped (first silent packet; p50 / max)",
                         f"{_f(b['p50'])} / {_f(b['max'])} ms (n={b['n']}), audio packets after the event: "
                         f"{lat['barge_in_audio_packets_after']}", "<= 20 ms", _ok(b["max"] <= 20.0)])
    st = res.get("setup")
    if st and "calls" in st:
        rows.append(["5", "StasisStart -> call up (bot log; median / max)",
                     f"{_f(st['stasis_to_call_up_ms']['p50'], 0)} / {_f(st['stasis_to_call_up_ms']['max'], 0)} ms",
                     "", ""])
        rows.append(["5", "StasisStart -> first bot audio RTP to Asterisk (median / max)",
                     f"{_f(st['stasis_to_first_audio_rtp_ms']['p50'], 0)} / "
                     f"{_f(st['stasis_to_first_audio_rtp_ms']['max'], 0)} ms", "", ""])
        inv = st["invite_to_first_audio_ms"]
        rows.append(["5", f"caller INVITE -> first bot audio at the caller (median / max, {st['calls']} calls)",
                     f"{_f(inv['p50'], 0)} / {_f(inv['max'], 0)} ms", "median <= 150 ms",
                     _ok(inv["p50"] <= 150.0 if math.isfinite(inv["p50"]) else None)])
    elif st:
        rows.append(["5", "call set-up on the sandbox", f"skipped: {st.get('skipped')}", "median <= 150 ms", "-"])
    if cap and cap.get("memory") and "memory" in res.get("_sections", ()):
        mem = cap["memory"]
        for k in sorted(mem, key=int):
            note = "" if mem[k].get("keeps_up", True) else ", CPU overloaded"
            rows.append(["6", f"RSS per additional call at {k} call(s)", f"{_f(mem[k]['per_call_mb'], 2)} MB "
                         f"(RSS {_f(mem[k]['rss_kb'] / 1024, 0)} MB{note})", "<= 5 MB",
                         _ok(mem[k]["per_call_mb"] <= 5.0)])
    for fmt, c in res.get("capacity_by_format", {}).items():
        steps = c.get("steps", [])
        worst = ", ".join(f"{s['calls']}: {_f(s['jitter_p99_ms_worst_call'], 1)}" for s in steps)
        mem = ", ".join(f"{k}: {_f(m['per_call_mb'], 2)}" for k, m in sorted(c.get("memory", {}).items(), key=lambda x: int(x[0])))
        rows.append(["2", f"rtp-{fmt}: most calls keeping real time; jitter p99 worst call (ms) per level; RSS MB per "
                          f"call", f"{c.get('max_calls_keeping_up', 0)} calls (ok at p99 <= 2 ms: "
                          f"{c.get('max_calls_ok', 0)}); {worst}; {mem}", ">= 200", _ok(c.get("max_calls_keeping_up", 0) >= 200)])
    ra = res.get("ratio")
    fmt_ratios = tuple((k, f"VOICEAI_CALLER_FORMAT={k[6:]}") for k in res
                       if k.startswith("ratio_") and k not in ("ratio_dtx", "ratio_ws", "ratio_ws16"))
    for key, what in (("ratio", "continuous RTP (default)"), ("ratio_dtx", "VOICEAI_DTX=true"),
                      ("ratio_ws", "VOICEAI_TRANSPORT=websocket, slin24"),
                      ("ratio_ws16", "VOICEAI_TRANSPORT=websocket, slin16")) + fmt_ratios:
        r = res.get(key)
        if r and "ratio" in r:
            rows.append(["7", f"bot CPU / Asterisk CPU, {r['calls']} calls ({_f(r['window_s'], 0)} s window), {what}",
                         f"{_f(r['ratio'], 3)} (bot {_f(r['bot_cpu_pct'])}% of a core, {_f(r['bot_system_cpu_pct'])}% "
                         f"of it in the kernel; Asterisk {_f(r['asterisk_cpu_pct'])}%, "
                         f"{_f(r['asterisk_system_cpu_pct'])}% kernel)", "<= 0.5", _ok(r["ratio"] <= 0.5)])
    if ra and "ratio" not in ra:
        rows.append(["7", "bot CPU / Asterisk CPU", f"skipped: {ra.get('skipped')}", "<= 0.5", "-"])
    return rows


def capacity_keep_up() -> str:
    from .capacity import KEEP_UP_CPU_PCT
    return f"{KEEP_UP_CPU_PCT:g}"


def render(rows: list[list[str]]) -> str:
    head = ["#", "measure", "result", "target", "met"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few-seconds smoke run (no Asterisk)")
    ap.add_argument("--only", action="append", default=[], help="sections, comma separated: " + ", ".join(SECTIONS))
    ap.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the results (default %(default)s)")
    ap.add_argument("--lock-timeout", type=float, default=900.0, help="seconds to wait for the bot lock")
    ap.add_argument("--exclusive", action="store_true",
                    help="hold the bot lock (/tmp/voiceai-ari-e2e-bot.lock) for the whole run, not only for the "
                         "sandbox sections: other agents' bot tests wait instead of sharing the CPUs")
    ap.add_argument("--nice", type=int, default=0,
                    help="scheduling niceness for the benchmark and every process it starts (e.g. -10 as root on a "
                         "machine shared with other work; default %(default)s)")
    ap.add_argument("--rt", action="store_true",
                    help="run the process under test (capacity bot, latency bot) SCHED_FIFO: on a machine shared with "
                         "other work, this keeps other processes from preempting it (root)")
    ap.add_argument("--formats", default="",
                    help="more media paths side by side, comma separated VOICEAI_CALLER_FORMATs (slin16,ulaw,alaw): "
                         "capacity and the bot/Asterisk ratio are measured for each too (section 1 always has all)")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="py-spy profiles of the bot during the capacity levels and the ratio run (perturbs them)")
    args = ap.parse_args(argv)
    if args.nice:
        try:
            os.nice(args.nice)
        except OSError as exc:
            ap.error(f"--nice {args.nice}: {exc}")
    chosen = [s.strip() for part in args.only for s in part.split(",") if s.strip()]
    bad = [s for s in chosen if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    sections = tuple(s for s in SECTIONS if s in chosen) if chosen else (QUICK_SECTIONS if args.quick else SECTIONS)

    started = time.time()
    info = machine()
    res: dict[str, Any] = {"_sections": sections}
    with contextlib.ExitStack() as stack:
        if args.exclusive:
            from .sandbox import Skip, bot_lock
            try:
                stack.enter_context(bot_lock(args.lock_timeout, log))
            except Skip as exc:
                ap.error(str(exc))
        background = busy_pct(0.5 if args.quick else 2.0)
        load0 = loadavg()
        log(f"bench: {', '.join(sections)}{' (quick)' if args.quick else ''} on {info['nproc']} x "
            f"{info['cpu_model']}, Python {info['python']}; machine busy {background:.0f}% before start "
            f"(load {load0})")
        if background > 25:
            log("bench: WARNING: the machine is busy with other work; timings will be noisy")
        from .common import steal_s
        steal0, t_steal = steal_s(None), time.monotonic()
        run_sections(args, sections, res)
        ncpu = os.cpu_count() or 1
        res["_host_steal_pct"] = 100 * (steal_s(None) - steal0) / ncpu / max(1e-9, time.monotonic() - t_steal)
    return report(args, argv, sections, res, info, background, load0, started)


def run_sections(args: argparse.Namespace, sections: tuple[str, ...], res: dict[str, Any]) -> None:
    if "frames" in sections:
        log("1 per-frame cost ...")
        from . import frames
        res["frames"] = frames.run(args.quick)
        from . import frames_ws
        from .common import cpus, pinned
        with pinned(cpus()[0]):
            res["frames_ws"] = frames_ws.run(args.quick)
        res["frames_ws"]["totals"] = frames_ws.totals(res["frames_ws"]["stages"], res["frames"]["stages"])
    if "latency" in sections or "barge-in" in sections:
        log("3/4 latency and barge-in ...")
        from . import latency
        res["latency"] = latency.run(args.quick, rt=args.rt)
    if "capacity" in sections or "memory" in sections:
        log("2/6 capacity and memory ...")
        from . import capacity
        mem_levels = (3,) if args.quick else capacity.MEMORY_LEVELS
        if "capacity" in sections:
            res["capacity"] = capacity.run(args.quick, log=log, profile_dir=args.profile, rt=args.rt)
            for fmt in _formats(args):
                log(f"2 capacity with VOICEAI_CALLER_FORMAT={fmt} ...")
                res.setdefault("capacity_by_format", {})[fmt] = capacity.run(args.quick, log=log, rt=args.rt,
                                                                             caller_format=fmt)
            log("2 capacity over chan_websocket ...")
            from . import capacity_ws
            res["capacity_ws"] = (capacity_ws.run((3,), warm=1.0, measure=1.5, log=log) if args.quick
                                  else capacity_ws.run(log=log))
        if "memory" in sections:
            cap = res.get("capacity")
            missing = [m for m in mem_levels if cap is None or str(m) not in cap["memory"]]
            if missing:  # the capacity ladder stopped below them: a ladder of its own (RSS only matters)
                mem = capacity.run(args.quick, levels=tuple(mem_levels), log=log, rt=args.rt, keep_going=True,
                                   measure=1.5 if args.quick else 3.0)
                if cap is None:
                    res["capacity"] = mem
                else:
                    for m in missing:
                        if str(m) in mem["memory"]:
                            cap["memory"][str(m)] = dict(mem["memory"][str(m)], separate_run=True)
    if "setup" in sections or "ratio" in sections:
        log("5/7 sandbox ...")
        from . import sandbox
        res.update(sandbox.run({s for s in ("setup", "ratio") if s in sections}, args.quick, args.lock_timeout, log,
                               lock_held=args.exclusive, profile_dir=args.profile, formats=_formats(args)))


def _formats(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(f.strip() for f in args.formats.split(",") if f.strip() and f.strip() != "slin24")


def report(args: argparse.Namespace, argv: list[str] | None, sections: tuple[str, ...], res: dict[str, Any],
           info: dict[str, Any], background: float, load0: list[float], started: float) -> int:
    rows = build_rows(res)
    table = render(rows)
    print(table)
    steal = res.get("_host_steal_pct")
    print(f"\n{info['nproc']} x {info['cpu_model']}, Python {info['python']}, numpy {info['numpy']}; "
          f"* = stage beyond the issue's list (event-loop and queue plumbing), counted in the total."
          + (f" Host steal during the run: {steal:.1f}% of the CPUs (the hypervisor ran other guests)."
             if steal is not None else ""))
    out = {"command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
           "duration_s": time.time() - started, "quick": args.quick, "sections": list(sections),
           "machine": info, "nice": args.nice, "rt": args.rt, "exclusive": args.exclusive,
           "background_busy_pct": background, "host_steal_pct": res.get("_host_steal_pct"),
           "loadavg_start": load0, "loadavg_end": loadavg(),
           "results": {k: v for k, v in res.items() if not k.startswith("_")},
           "table": [dict(zip(["section", "measure", "result", "target", "met"], r)) for r in rows]}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(out), indent=1, default=_json_default, allow_nan=False) + "\n")
    log(f"bench: JSON in {path} ({out['duration_s']:.0f} s)")
    return 0


def _clean(o: Any) -> Any:
    """NaN/inf (a measure with no samples) become null: the file stays strict JSON."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
