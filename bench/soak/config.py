"""The soak's settings (SoakConfig), names the bot uses in Asterisk, and what counts as a leak."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BOT_LOCK = "/tmp/voiceai-ari-e2e-bot.lock"
SANDBOX = REPO / "scripts" / "asterisk-sandbox"
APP = "voiceai"
BRIDGE_PREFIX = "voiceai-"       # the bot's bridge names
EM_ID_PREFIX = "voiceai-em-"     # the bot's externalMedia channel ids
MEDIA_CHANNEL_PREFIX = "UnicastRTP/"
AST_PORTS_PER_CALL = 4
HOST = "127.0.0.1"

# a leak in any of these fails the soak (after - before > 0)
LEAK_KEYS = ("channels", "bridges", "udp_ports", "tasks", "fds", "active_calls", "ports_in_use", "owned_ids")
ROW_LABELS = {
    "channels": "ARI channels (ours)",
    "bridges": "ARI bridges (voiceai-*)",
    "udp_ports": "bot UDP ports (its range)",
    "tasks": "asyncio tasks",
    "fds": "file descriptors",
    "active_calls": "active calls",
    "ports_in_use": "RTP ports in use (pool)",
    "owned_ids": "owned channel ids",
}


class SoakError(RuntimeError):
    """The soak could not run (not a failed check)."""


@dataclass
class SoakConfig:
    calls: int = 1000
    concurrency: int = 50
    call_seconds: float = 3.0          # how long each call plays audio before the caller's BYE
    rate: float | None = None          # calls per second; default: concurrency / call length * 1.15
    tone_seconds: float = 0.8          # tone at the start of each call (the rest is silence)
    warmup: int = 1
    settle_s: float = 2.0
    settle_max_s: float = 25.0
    max_rss_growth_mb: float = 50.0
    bot_ports: str = "46000-46399"     # VOICEAI_RTP_PORTS (one port per call)
    max_calls: int | None = None       # VOICEAI_MAX_CALLS; default: 2 x concurrency + 10
    ari_url: str = "http://127.0.0.1:8088"
    ari_user: str = "voiceai"
    ari_password: str = "voiceai-secret"
    server: str = "127.0.0.1:5060"
    extension: str = "100"
    workdir: str | None = None         # default: a fresh temp dir (kept when the soak fails)
    lock: bool = True                  # take BOT_LOCK (False only if the caller already holds it)
    python: str = sys.executable
    log_level: str = "INFO"
    check_rtp_range: bool = True
    progress: bool = True
    clean_up: bool = True              # delete leaked bridges / externalMedia channels after measuring them
    transport: str = "rtp"             # VOICEAI_TRANSPORT of the bot: rtp or websocket (chan_websocket)
    model: str = "offline"             # "offline": the bot's embedded demo model; "separate": the same fake
                                       # Realtime server (echo) in its own process, so the bot's CPU is its own

    @property
    def effective_rate(self) -> float:
        if self.rate:
            return self.rate
        return round(self.concurrency / (self.call_seconds + 0.15) * 1.15, 2)

    @property
    def effective_max_calls(self) -> int:
        return self.max_calls or 2 * self.concurrency + 10


def _say(cfg: SoakConfig, msg: str) -> None:
    if cfg.progress:
        print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)



def _port_range(spec: str) -> range:
    a, _, b = spec.partition("-")
    return range(int(a), int(b or a) + 1)
