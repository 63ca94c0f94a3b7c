"""The soak's report as text (the before / after / leak table and the figures under it), and `scripts/soak`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import __doc__ as _SOAK_DOC  # the package's docstring: --help's description
from .config import LEAK_KEYS, ROW_LABELS, SoakConfig, SoakError
from .run import run_soak


def format_report(r: dict[str, Any]) -> str:
    cfg = r["config"]
    b, a = r["before"], r["after"]
    out = [f"soak: {cfg['calls']} calls, {cfg['concurrency']} at once (sipp -r {cfg['rate']}/s -l "
           f"{cfg['concurrency']} -m {cfg['calls']}), {cfg['call_seconds']:.1f} s calls (G.722, "
           f"{cfg['tone_seconds']:.1f} s tone + silence), echo model "
           f"{'embedded (offline demo)' if cfg['model'] == 'offline' else 'in a separate process'}, bot media over "
           f"{cfg.get('transport', 'rtp')}, Asterisk "
           f"{r['asterisk']['version']} RTP {r['asterisk']['rtp_range']}",
           "",
           f"| {'resource':<27} | {'before':>9} | {'after':>9} | {'leak':>9} |",
           f"|{'-' * 29}|{'-' * 11}|{'-' * 11}|{'-' * 11}|"]
    for k in LEAK_KEYS:
        out.append(f"| {ROW_LABELS[k]:<27} | {b[k]:>9} | {a[k]:>9} | {a[k] - b[k]:>+9} |")
    out.append(f"| {'RSS (MB)':<27} | {b['rss_kb'] / 1024:>9.1f} | {a['rss_kb'] / 1024:>9.1f} | "
               f"{r['rss_growth_mb']:>+9.1f} |")
    out.append(f"| {'RSS growth per 100 calls':<27} | {'':>9} | {'':>9} | "
               f"{r['rss_growth_mb_per_100_calls']:>+6.2f} MB |")
    if r.get("rss_steady_mb_per_100_calls") is not None:
        out.append(f"| {'  steady state (last 3/4)':<27} | {'':>9} | {'':>9} | "
                   f"{r['rss_steady_mb_per_100_calls']:>+6.2f} MB |")
    c = r["calls"]
    fa = r["after_settle"]
    out += ["", f"sockets: before {b['sockets']} (tcp {b['tcp']}), {r['settle_extra_s'] + cfg['settle_s']:.0f} s after "
                f"the last call {a['sockets']} (tcp {a['tcp']}); at +{cfg['settle_s']:.0f} s: fds {fa['fds']}, tcp "
                f"{fa['tcp']}, tasks {fa['tasks']}"]
    out += ["",
            f"calls: {c['ok']} ok, {c['failed']} failed (sipp rc {c['sipp_rc']}); bot: {c['bot_call_up']} up, "
            f"{c['bot_call_ended']} ended of {c['expected_ended']} (incl. warm-up), {c['refused']} refused; "
            f"end reasons {c['end_reasons']}",
            f"concurrency: peak {c['peak_concurrent_sipp']} in sipp, {c['peak_active_bot']} active in the bot; "
            f"peak bot RSS {r['peak']['rss_kb'] / 1024:.1f} MB, fds {r['peak']['fds']}, tasks {r['peak']['tasks']}",
            f"duration: load {r['seconds']['load']} s, total {r['seconds']['total']} s "
            f"({r['seconds']['after_lock']} s holding the bot lock; extra settle {r['settle_extra_s']} s)",
            f"call set-up in the bot (ms): p50 {r['setup_ms']['p50']}, p95 {r['setup_ms']['p95']}, max "
            f"{r['setup_ms']['max']}; sipp INVITE->200 avg {r['invite_to_200_ms_avg']}",
            f"responsiveness under load (ms): ARI GET /asterisk/ping p50 {r['ari_ping_ms']['p50']}, max "
            f"{r['ari_ping_ms']['max']}; bot SIGUSR1->stats line p50 {r['stats_latency_ms']['p50']}, max "
            f"{r['stats_latency_ms']['max']}",
            f"media per call: rx median {r['media']['rx_packets_median']} (min {r['media']['rx_packets_min']}), "
            f"tx median {r['media']['tx_packets_median']}, {r['media']['calls_without_model_answer']} calls the echo "
            f"model did not answer, {r['media']['calls_without_return_audio']} without RTP back, underruns {r['media']['playout_underruns']}, socket errors {r['media']['socket_errors']}",
            f"CPU during the load (cores used): bot {r['cpu']['bot']}, asterisk {r['cpu']['asterisk']}, sipp "
            f"{r['cpu']['sipp']}{'' if r['cpu'].get('model') is None else ', fake model ' + str(r['cpu']['model'])}; machine busy {100 * r['cpu']['box_busy']:.0f} % of {r['cpu']['cores']} cores",
            f"bot: exit {r['bot']['rc']}, ari_reconnects {r['bot']['ari_reconnects']}, orphans_cleaned "
            f"{r['bot']['orphans_cleaned']}, tracebacks {r['bot']['tracebacks']}, warnings "
            f"{sum(r['bot']['warnings'].values())}"]
    lb = r.get("leaked_bridges") or {}
    if lb.get("count"):
        out.append(f"leaked bridges: {lb['count']} ({lb['empty_bridges']} empty); their calls: {lb['came_up']} came up, "
                   f"{lb['ended_without_call_up']} ended during set-up (no 'call up' line), {lb['not_in_log']} not in "
                   f"the log; lasted {lb['lasted_s'][:8]} s; e.g. {lb['examples'][:2]}")
    if r["after"]["our_channels"]:
        out.append(f"channels left: {r['after']['our_channels'][:5]}")
    if r.get("cleaned_up"):
        out.append(f"deleted after measuring (so no other bot finds them): {r['cleaned_up']}")
    out.append(f"calls that ended during set-up (no 'call up' line): {r.get('calls_ended_during_setup')}")
    for msg, n in r["bot"]["warnings"].items():
        out.append(f"  {n:>5} x {msg}")
    for e in r["bot"]["errors"][:3]:
        out.append(f"  ERROR {e}")
    if r["bot"].get("error_count", 0) > 3:
        out.append(f"  ... {r['bot']['error_count'] - 3} more ERROR lines")
    out.append("")
    out.append("PASS" if r["ok"] else "FAIL: " + "; ".join(r["failures"]))
    if cfg["workdir"]:
        out.append(f"files: {cfg['workdir']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/soak", description=(_SOAK_DOC or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = SoakConfig()
    p.add_argument("--calls", type=int, default=d.calls, help=f"calls in the load (default {d.calls})")
    p.add_argument("--concurrency", type=int, default=d.concurrency,
                   help=f"calls up at once, sipp -l (default {d.concurrency})")
    p.add_argument("--call-seconds", type=float, default=d.call_seconds,
                   help=f"audio per call before BYE (default {d.call_seconds})")
    p.add_argument("--rate", type=float, default=None,
                   help="calls per second (default: concurrency / call length x 1.15)")
    p.add_argument("--warmup", type=int, default=d.warmup, help="warm-up calls before the baseline")
    p.add_argument("--settle", type=float, default=d.settle_s, help="seconds after the last call ends")
    p.add_argument("--settle-max", type=float, default=d.settle_max_s,
                   help="how long something above the baseline may take to come back")
    p.add_argument("--max-rss-growth-mb", type=float, default=d.max_rss_growth_mb)
    p.add_argument("--bot-ports", default=d.bot_ports, help="VOICEAI_RTP_PORTS of the bot")
    p.add_argument("--max-calls", type=int, default=None, help="VOICEAI_MAX_CALLS (default 2 x concurrency + 10)")
    p.add_argument("--workdir", default=None, help="keep logs, pcap, sipp files here (default: temp, kept on failure)")
    p.add_argument("--log-level", default=d.log_level)
    p.add_argument("--model", choices=("offline", "separate"), default=d.model,
                   help="offline: the bot's embedded demo model (default); separate: the fake Realtime server "
                        "in its own process (the bot's CPU is then its own)")
    p.add_argument("--transport", choices=("rtp", "websocket"), default=d.transport,
                   help="the bot's media transport (VOICEAI_TRANSPORT; websocket needs chan_websocket)")
    p.add_argument("--json", dest="json_out", default=None, help="write the report as JSON here")
    p.add_argument("--no-lock", action="store_true", help="do not take the bot lock (the caller holds it)")
    p.add_argument("--no-clean-up", action="store_true",
                   help="leave leaked bridges / externalMedia channels in Asterisk (default: deleted after measuring)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    cfg = SoakConfig(calls=args.calls, concurrency=args.concurrency, call_seconds=args.call_seconds, rate=args.rate,
                     warmup=args.warmup, settle_s=args.settle, settle_max_s=args.settle_max,
                     max_rss_growth_mb=args.max_rss_growth_mb, bot_ports=args.bot_ports, max_calls=args.max_calls,
                     workdir=args.workdir, log_level=args.log_level, model=args.model, transport=args.transport,
                     clean_up=not args.no_clean_up, lock=not args.no_lock, progress=not args.quiet)
    try:
        report = run_soak(cfg)
    except SoakError as exc:
        print(f"soak: cannot run: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2, default=str))
    return 0 if report["ok"] else 1
