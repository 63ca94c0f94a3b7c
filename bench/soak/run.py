"""The soak, step by step: preflight, the call's files, the bot, a warm-up call, the baseline, the load, the
settle, then the figures and the verdict (the package docstring tells the whole story)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .bot import Bot, BotLock, FakeModel
from .config import AST_PORTS_PER_CALL, LEAK_KEYS, SoakConfig, SoakError, _port_range, _say
from .media import write_pcap, write_scenario
from .probes import Ari, _asterisk_pid, _box_cpu, _proc_cpu_s, asterisk_rtp_range, clean_leftovers, leaks, snapshot
from .results import Load, Settled, failures, results
from .sipp import Sipp


def _wait_ended(bot: Bot, n: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        bot.watch.poll()
        if bot.watch.ended >= n:
            return True
        if bot.proc is not None and bot.proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _preflight(cfg: SoakConfig) -> tuple[Ari, Any, tuple[int, int] | None]:
    """ARI up, sipp present, the bot's port range and Asterisk's RTP range big enough: (ari, /asterisk/info,
    Asterisk's RTP range or None if it cannot be read)."""
    if cfg.calls < 1 or cfg.concurrency < 1:
        raise SoakError("--calls and --concurrency must be >= 1")
    ari = Ari(cfg.ari_url, cfg.ari_user, cfg.ari_password)
    for attempt in range(60):  # a sandbox (re)start by someone else takes a few seconds
        try:
            info = ari.get("/asterisk/info")
            break
        except OSError as exc:
            if attempt == 59:
                raise SoakError(f"ARI {cfg.ari_url} not reachable ({exc}): scripts/asterisk-sandbox start") from exc
            time.sleep(1.0)
    if shutil.which("sipp") is None:
        raise SoakError("sipp not found (apt-get install sip-tester)")
    bot_ports = _port_range(cfg.bot_ports)
    if len(bot_ports) < cfg.effective_max_calls:
        raise SoakError(f"VOICEAI_RTP_PORTS {cfg.bot_ports} has fewer ports than VOICEAI_MAX_CALLS "
                        f"{cfg.effective_max_calls}")
    ast_range = asterisk_rtp_range() if cfg.check_rtp_range else None
    if ast_range is not None:
        holds = (ast_range[1] - ast_range[0] + 1) // AST_PORTS_PER_CALL
        if holds < cfg.concurrency + 2:
            raise SoakError(f"Asterisk's RTP range {ast_range[0]}-{ast_range[1]} holds {holds} calls "
                            f"({AST_PORTS_PER_CALL} ports each), too few for {cfg.concurrency} at once: widen "
                            "asterisk/rtp.conf and restart the sandbox (scripts/asterisk-sandbox stop && start)")
    return ari, info, ast_range


def _write_call_files(cfg: SoakConfig, workdir: Path) -> Path:
    """The caller's audio (pcap) and the sipp scenario that plays it; returns the scenario."""
    pcap = workdir / "soak_g722.pcap"
    write_pcap(pcap, cfg.call_seconds, tone_seconds=cfg.tone_seconds)
    scenario = workdir / "soak_uac.xml"
    write_scenario(scenario, pcap, int(round(cfg.call_seconds * 1000)))
    return scenario


def _start_bot(cfg: SoakConfig, workdir: Path, stack: contextlib.ExitStack) -> tuple[Bot, FakeModel | None]:
    """The fake model (if separate) and the bot, up and connected; both stopped when ``stack`` closes."""
    fake: FakeModel | None = None
    if cfg.model == "separate":
        fake = FakeModel(cfg, workdir)
        stack.callback(fake.stop)
        _say(cfg, f"fake model (separate process): {fake.start()}")
    elif cfg.model != "offline":
        raise SoakError(f"model must be 'offline' or 'separate', not {cfg.model!r}")
    bot = Bot(cfg, workdir, fake.url if fake else None)
    stack.callback(bot.kill)
    bot.start()
    _say(cfg, f"bot pid {bot.pid} up; log {bot.log_path}")
    return bot, fake


def _warm_up(cfg: SoakConfig, workdir: Path, scenario: Path, bot: Bot, stack: contextlib.ExitStack) -> dict[str, int]:
    """``cfg.warmup`` calls before the baseline (imports, first-call allocations); SoakError if one fails."""
    warm = Sipp(cfg, workdir, scenario, "sipp-warmup", calls=cfg.warmup, limit=cfg.warmup,
                rate=max(1.0, float(cfg.warmup)))
    stack.callback(warm.kill)
    warm.start()
    while warm.poll() is None:
        bot.watch.poll()
        time.sleep(0.1)
    wres = warm.result()
    if wres.rc != 0:
        raise SoakError(f"the warm-up call failed (sipp rc {wres.rc}):\n{wres.errors_tail}\n"
                        f"{wres.stdout_tail[-800:]}\nbot log:\n{bot.tail()}")
    if not _wait_ended(bot, cfg.warmup, 15):
        raise SoakError(f"the bot did not end the warm-up call:\n{bot.tail()}")
    return {"rc": wres.rc, "ok": wres.count("SuccessfulCall(C)"), "failed": wres.count("FailedCall(C)")}


def _load(cfg: SoakConfig, workdir: Path, scenario: Path, bot: Bot, fake: FakeModel | None, ari: Ari,
          stack: contextlib.ExitStack) -> Load:
    """The calls, in one sipp process; the bot, ARI and CPU sampled every second while it runs."""
    rate = cfg.effective_rate
    _say(cfg, f"load: {cfg.calls} calls, {cfg.concurrency} at once, sipp -r {rate}/s, "
              f"{cfg.call_seconds:.1f} s each")
    sipp = Sipp(cfg, workdir, scenario, "sipp-load", calls=cfg.calls, limit=cfg.concurrency, rate=rate)
    stack.callback(sipp.kill)
    fake_pid = fake.proc.pid if fake is not None and fake.proc is not None else None
    cpu0 = {"bot": _proc_cpu_s(bot.pid), "asterisk": _proc_cpu_s(_asterisk_pid()), "model": _proc_cpu_s(fake_pid)}
    box0 = _box_cpu()
    sipp.start()
    cpu0["sipp"] = _proc_cpu_s(sipp.proc.pid if sipp.proc else None)
    peak = {"active_calls": 0, "rss_kb": 0, "fds": 0, "tasks": 0, "ports_in_use": 0}
    samples: list[dict[str, Any]] = []
    ari_ms: list[float] = []
    last_sample = 0.0
    last_say = time.monotonic()
    cpu_sipp_last = cpu0["sipp"]
    while True:
        rc = sipp.poll()
        now = time.monotonic()
        if rc is not None:
            break
        if now - last_sample >= 1.0:
            last_sample = now
            s = bot.request_stats()
            samples.append({"t": round(now - sipp.t0, 2), **{k: s[k] for k in
                            ("active_calls", "total_calls", "tasks", "fds", "rss_kb", "ports_in_use")}})
            for k in peak:
                peak[k] = max(peak[k], s[k])
            t_ping = time.monotonic()
            with contextlib.suppress(OSError):
                ari.get("/asterisk/ping")
                ari_ms.append((time.monotonic() - t_ping) * 1000)
            if now - last_say >= 10:
                last_say = now
                _say(cfg, f"  t={now - sipp.t0:5.1f}s active={s['active_calls']} total={s['total_calls']} "
                          f"ended={bot.watch.ended} rss={s['rss_kb'] / 1024:.1f} MB")
        cpu_sipp_last = _proc_cpu_s(sipp.proc.pid if sipp.proc else None)
        time.sleep(0.1)
    sres = sipp.result()
    cpu1 = {"bot": _proc_cpu_s(bot.pid), "asterisk": _proc_cpu_s(_asterisk_pid()), "sipp": cpu_sipp_last,
            "model": _proc_cpu_s(fake_pid)}
    box1 = _box_cpu()

    def cores(name: str) -> float | None:
        a, b = cpu0.get(name), cpu1.get(name)
        return None if a is None or b is None else round((b - a) / max(sres.seconds, 1e-6), 3)

    box_busy = (box1[0] - box0[0]) / max(1, box1[1] - box0[1])
    cpu = {"bot": cores("bot"), "asterisk": cores("asterisk"), "sipp": cores("sipp"), "model": cores("model"),
           "box_busy": round(box_busy, 3), "cores": os.cpu_count()}
    return Load(sipp=sres, samples=samples, peak=peak, ari_ms=ari_ms, cpu=cpu)


def _settle(cfg: SoakConfig, bot: Bot, ari: Ari, before: dict[str, Any]) -> Settled:
    """Wait for every 'x call ended', ``settle_s``, snapshot; poll up to ``settle_max_s`` while above the baseline."""
    expected = cfg.warmup + cfg.calls
    all_ended = _wait_ended(bot, expected, 60)
    t_last_end = time.monotonic()
    time.sleep(cfg.settle_s)
    after = snapshot(bot, ari)
    after_first = after
    lk = leaks(before, after)
    while lk and time.monotonic() - t_last_end < cfg.settle_max_s:
        _say(cfg, f"above the baseline after settling: {lk}; polling")
        time.sleep(1.0)
        after = snapshot(bot, ari)
        lk = leaks(before, after)
    return Settled(expected=expected, all_ended=all_ended, after_first=after_first, after=after, leaks=lk,
                   extra_s=time.monotonic() - t_last_end - cfg.settle_s)


def run_soak(cfg: SoakConfig) -> dict[str, Any]:
    """Run the soak; returns the report (``report["ok"]`` is the verdict). Raises SoakError if it cannot run."""
    t_start = time.monotonic()
    ari, info, ast_range = _preflight(cfg)
    made_tmp = cfg.workdir is None
    workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="voiceai-soak-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    scenario = _write_call_files(cfg, workdir)
    report: dict[str, Any] = {
        "config": {**asdict(cfg), "rate": cfg.effective_rate, "max_calls": cfg.effective_max_calls,
                   "workdir": str(workdir)},
        "asterisk": {"version": (info or {}).get("system", {}).get("version"), "rtp_range": ast_range},
    }
    lock = BotLock()
    # on the way out, whatever happened: sipp killed, the bot killed, the fake model stopped, the lock released
    with contextlib.ExitStack() as stack:
        stack.callback(lock.release)
        if cfg.lock:
            lock.acquire(lambda m: _say(cfg, m))
        t_locked = time.monotonic()
        bot, fake = _start_bot(cfg, workdir, stack)
        if cfg.warmup:
            report["warmup"] = _warm_up(cfg, workdir, scenario, bot, stack)
        time.sleep(cfg.settle_s)
        before = snapshot(bot, ari)
        _say(cfg, "baseline: " + ", ".join(f"{k}={before[k]}" for k in (*LEAK_KEYS, "rss_kb")))
        load = _load(cfg, workdir, scenario, bot, fake, ari, stack)
        settled = _settle(cfg, bot, ari, before)
        rc_bot = bot.stop()
        bot.watch.poll()
        after = settled.after
        cleaned = clean_leftovers(ari, before, after) if cfg.clean_up and (after["our_bridges"] or
                                                                          after["our_channels"]) else {}
        report.update(results(cfg, bot, before, load, settled, rc_bot, cleaned))
        report["seconds"] = {"load": round(load.sipp.seconds, 1), "total": round(time.monotonic() - t_start, 1),
                             "after_lock": round(time.monotonic() - t_locked, 1)}

    report["failures"] = failures(cfg, report)
    report["ok"] = not report["failures"]
    if made_tmp and report["ok"]:
        shutil.rmtree(workdir, ignore_errors=True)
        report["config"]["workdir"] = None
    return report
