"""Soak: many real SIP calls through the Asterisk sandbox into a real `voiceai-ari run`, then a leak check.

    scripts/soak                                   # 1000 calls, 50 at once (defaults)
    scripts/soak --calls 100 --concurrency 20      # the short one (tests/e2e/test_soak.py runs it)
    scripts/soak --json out.json                   # the whole report as JSON as well

What it does, in order:

1. Checks the sandbox (ARI up, sipp present) and that Asterisk's RTP range (rtp.conf) holds the load: every
   call takes 4 Asterisk ports (caller RTP+RTCP, externalMedia RTP+RTCP).
2. Takes the bot lock (/tmp/voiceai-ari-e2e-bot.lock, the one tests/e2e/conftest.py takes: Asterisk gives
   the Stasis app "voiceai" to one process at a time) and starts `python -m voiceai_ari run` as a child,
   offline demo model (no OPENAI_API_KEY: the embedded fake Realtime server in echo mode), no greeting.
3. One warm-up call (imports, first-call allocations), ~2 s settle, then the baseline: the bot's own counters
   (SIGUSR1 makes it log one `stats {json}` line), ARI channels and bridges, the bot's UDP sockets in its
   port range, its file descriptors and VmRSS (from /proc).
4. The load: ONE sipp process, ``-r RATE -l CONCURRENCY -m CALLS``. Each call dials extension 100, offers
   G.722, plays a generated pcap (a 0.8 s 1 kHz tone, then silence: the echo model answers with the tone,
   so the bot's return path runs too) with ``play_pcap_audio`` for ``--call-seconds``, then sends BYE.
   The rate is a little above concurrency / call length, so the limit is what holds the calls up at once.
   The bot is sampled every second meanwhile (peak calls, RSS, stats latency, CPU).
5. When sipp is done and the bot has logged "x call ended" for every call, ~2 s settle, then the same
   snapshot again. A resource still above the baseline is polled for up to ``--settle-max`` seconds (a
   kept-alive HTTP connection may close late); what is still above then is a leak.

Exit status: 0 = no leak (ARI channels, bridges, bot UDP ports, asyncio tasks, fds, active calls, ports in
use, owned ids all back to the baseline), every call ok in sipp and ended in the bot, RSS growth under
``--max-rss-growth-mb``; 1 = a check failed; 2 = could not run (no sandbox, lock, sipp...).

This package does not import voiceai_ari: it drives the bot as a separate process, as an operator would.

Where the parts are: config.py (SoakConfig, the names, what counts as a leak), media.py (the caller's pcap and
sipp scenario), sipp.py (the callers), bot.py (the bot process, its lock, the separate fake model), botlog.py
(reading the bot's log), probes.py (ARI and /proc snapshots, the leak rule, clean-up), run.py (the steps above),
results.py (the figures and the verdict), report.py (the text report and the command line).
"""

from .bot import Bot, BotLock, FakeModel
from .botlog import LogWatcher, parse_log_line
from .config import LEAK_KEYS, ROW_LABELS, SoakConfig, SoakError
from .media import write_pcap, write_scenario
from .probes import Ari, clean_leftovers, leaks, proc_snapshot, snapshot
from .report import format_report, main
from .run import run_soak
from .sipp import Sipp, SippRun

__all__ = ["LEAK_KEYS", "ROW_LABELS", "Ari", "Bot", "BotLock", "FakeModel", "LogWatcher", "Sipp", "SippRun",
           "SoakConfig", "SoakError", "clean_leftovers", "format_report", "leaks", "main", "parse_log_line",
           "proc_snapshot", "run_soak", "snapshot", "write_pcap", "write_scenario"]
