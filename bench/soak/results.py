"""What a soak run measured, as the report's figures, and the checks that fail it (the verdict)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from .bot import Bot
from .botlog import LogWatcher
from .config import BRIDGE_PREFIX, ROW_LABELS, SoakConfig
from .sipp import SippRun, _sipp_ms


@dataclass
class Load:
    """The load phase: sipp's result and what was sampled from the bot and Asterisk while it ran."""
    sipp: SippRun
    samples: list[dict[str, Any]]      # the bot's counters, once a second
    peak: dict[str, int]
    ari_ms: list[float]                # GET /asterisk/ping round trips
    cpu: dict[str, Any]                # cores used by each process during the load; the machine's busy share


@dataclass
class Settled:
    """After the load: the calls the bot ended, and the snapshots once it had settled."""
    expected: int                      # 'x call ended' lines due (warm-up + load)
    all_ended: bool
    after_first: dict[str, Any]        # the snapshot at +settle_s
    after: dict[str, Any]              # the last one (polled up to settle_max_s while above the baseline)
    leaks: dict[str, int]
    extra_s: float                     # polled beyond settle_s


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(math.ceil(q * len(s))) - 1)]


def _steady_rss(cfg: SoakConfig, samples: list[dict[str, Any]], after: dict[str, Any]) -> float | None:
    """RSS in the steady state (MB per 100 calls): from the first sample with a quarter of the calls placed to the
    end (the growth before that is mostly the high-water mark of `concurrency` calls at once, not a leak)."""
    q = next((s for s in samples if s["total_calls"] - cfg.warmup >= cfg.calls // 4), None)
    if q is not None and cfg.calls + cfg.warmup - q["total_calls"] > 0:
        return round((after["rss_kb"] - q["rss_kb"]) / 1024 / (cfg.calls + cfg.warmup - q["total_calls"]) * 100, 3)
    return None


def _leaked_bridges(before: dict[str, Any], after: dict[str, Any], w: LogWatcher) -> dict[str, Any]:
    """What the bot log says about the calls whose bridge (named voiceai-<caller channel id>) was left behind."""
    had = {b[0] for b in before["our_bridges"]}
    new_bridges = [b for b in after["our_bridges"] if b[0] not in had]
    leaked_bridge_calls = [str(name)[len(BRIDGE_PREFIX):] for _, name, _ in new_bridges]
    return {"count": len(leaked_bridge_calls),
            "came_up": sum(1 for c in leaked_bridge_calls if c in w.up_ids),
            "ended_without_call_up": sum(1 for c in leaked_bridge_calls if c in w.ended_after and c not in w.up_ids),
            "not_in_log": sum(1 for c in leaked_bridge_calls if c not in w.ended_after),
            "lasted_s": sorted(w.ended_after[c] for c in leaked_bridge_calls if c in w.ended_after)[:20],
            "empty_bridges": sum(1 for _, _, n in new_bridges if n == 0),
            "examples": new_bridges[:5]}


def results(cfg: SoakConfig, bot: Bot, before: dict[str, Any], load: Load, settled: Settled, rc_bot: int,
            cleaned: dict[str, int]) -> dict[str, Any]:
    """The report's figures (everything but the config, the verdict and the timings)."""
    w = bot.watch
    sres, after = load.sipp, settled.after
    rss_growth_mb = (after["rss_kb"] - before["rss_kb"]) / 1024
    rx = [m.get("rx_packets", 0) for m in w.media[cfg.warmup:]]
    tx = [m.get("tx_packets", 0) for m in w.media[cfg.warmup:]]
    return {
        "cleaned_up": cleaned,
        "leaked_bridges": _leaked_bridges(before, after, w),
        "calls_ended_during_setup": sum(1 for c in w.ended_after if c not in w.up_ids),
        "rss_steady_mb_per_100_calls": _steady_rss(cfg, load.samples, after),
        "before": before, "after_settle": settled.after_first, "after": after,
        "leaks": settled.leaks, "settle_extra_s": round(max(0.0, settled.extra_s), 1),
        "rss_growth_mb": round(rss_growth_mb, 2),
        "rss_growth_mb_per_100_calls": round(rss_growth_mb / cfg.calls * 100, 3),
        "calls": {"placed": cfg.calls, "ok": sres.count("SuccessfulCall(C)"), "failed": sres.count("FailedCall(C)"),
                  "sipp_rc": sres.rc, "peak_concurrent_sipp": sres.peak_current,
                  "peak_active_bot": load.peak["active_calls"], "bot_call_up": len(w.setup_ms),
                  "bot_call_ended": w.ended, "expected_ended": settled.expected, "all_ended": settled.all_ended,
                  "refused": w.refused, "end_reasons": dict(w.end_reasons)},
        "peak": load.peak,
        "setup_ms": {"p50": _pct(w.setup_ms, 0.5), "p95": _pct(w.setup_ms, 0.95), "max": max(w.setup_ms, default=None)},
        "invite_to_200_ms_avg": _sipp_ms(sres.stats.get("ResponseTime1(C)")),
        "media": {"rx_packets_median": statistics.median(rx) if rx else None, "rx_packets_min": min(rx, default=None),
                  "tx_packets_median": statistics.median(tx) if tx else None,
                  "calls_without_return_audio": sum(1 for v in tx if v == 0),
                  "calls_without_model_answer": sum(1 for i in w.ended_ids if i not in w.answered),
                  "playout_underruns": sum(m.get("playout_underruns", 0) for m in w.media),
                  "clock_reanchors": sum(m.get("clock_reanchors", 0) for m in w.media),
                  "socket_errors": sum(m.get("socket_errors", 0) for m in w.media)},
        "cpu": load.cpu,
        "ari_ping_ms": {"p50": round(_pct(load.ari_ms, 0.5) or 0, 1), "max": round(max(load.ari_ms, default=0), 1)},
        "stats_latency_ms": {"p50": round(1000 * (_pct(bot.stats_latency_s, 0.5) or 0), 1),
                             "max": round(1000 * max(bot.stats_latency_s, default=0), 1)},
        "bot": {"rc": rc_bot, "warnings": dict(w.warnings.most_common(12)), "errors": w.errors[:10],
                "error_count": len(w.errors),
                "tracebacks": w.tracebacks, "ari_reconnects": after["stats"].get("ari_reconnects"),
                "orphans_cleaned": after["stats"].get("orphans_cleaned"), "log": str(bot.log_path)},
        "samples": load.samples,
        "sipp": {"rc": sres.rc, "cmd": " ".join(sres.cmd), "errors_tail": sres.errors_tail[-1500:]},
    }


def failures(cfg: SoakConfig, report: dict[str, Any]) -> list[str]:
    """Every check the run failed (none: it passed)."""
    out: list[str] = []
    for k, v in report["leaks"].items():
        out.append(f"leak: {ROW_LABELS[k]} +{v}")
    c = report["calls"]
    if c["failed"] != 0 or c["ok"] != cfg.calls or c["sipp_rc"] != 0:
        out.append(f"sipp: {c['ok']} ok, {c['failed']} failed of {cfg.calls} (rc {c['sipp_rc']})")
    if c["bot_call_ended"] != c["expected_ended"]:
        out.append(f"bot logged {c['bot_call_ended']} 'x call ended' for {c['expected_ended']} calls")
    if c["refused"]:
        out.append(f"bot refused {c['refused']} calls")
    if report["rss_growth_mb"] > cfg.max_rss_growth_mb:
        out.append(f"RSS grew {report['rss_growth_mb']:.1f} MB > {cfg.max_rss_growth_mb:.0f} MB")
    if report["bot"]["rc"] != 0:
        out.append(f"bot exited {report['bot']['rc']} on SIGTERM")
    if report["bot"]["tracebacks"]:
        out.append(f"{report['bot']['tracebacks']} traceback(s) in the bot log")
    if report["bot"]["errors"]:
        out.append(f"{report['bot']['error_count']} ERROR line(s) in the bot log")
    return out
