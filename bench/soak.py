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

This module does not import voiceai_ari: it drives the bot as a separate process, as an operator would.
"""

from __future__ import annotations

import argparse
import ast
import base64
import collections
import contextlib
import csv
import fcntl
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
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


# ------------------------------------------------------------------------------------------------ media
def write_pcap(path: Path, seconds: float, *, tone_seconds: float = 0.8, freq: float = 1000.0,
               amp: int = 5000) -> int:
    """An Ethernet/IPv4/UDP/RTP pcap for sipp's play_pcap_audio: G.722 (PT 9, 20 ms, RTP clock 8 kHz),
    ``tone_seconds`` of a ``freq`` sine at ``amp`` (5000 = -16.3 dBFS), then silence up to ``seconds``.
    One encoder for the whole stream (G.722 is stateful). Returns the number of packets."""
    import G722
    import numpy as np

    rate, spp = 16000, 320
    n = max(1, int(round(seconds * 50)))
    t = np.arange(n * spp) / rate
    pcm = (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    pcm[int(tone_seconds * rate):] = 0
    enc = G722.G722(16000, 64000)

    def csum(b: bytes) -> int:
        if len(b) % 2:
            b += b"\0"
        s = sum(struct.unpack(f"!{len(b) // 2}H", b))
        s = (s >> 16) + (s & 0xFFFF)
        s += s >> 16
        return ~s & 0xFFFF

    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # DLT_EN10MB
        for k in range(n):
            payload = bytes(enc.encode(pcm[k * spp:(k + 1) * spp]))
            rtp = struct.pack("!BBHII", 0x80, 9 | (0x80 if k == 0 else 0), k, k * 160, 0x50A4_50A4) + payload
            udp = struct.pack("!HHHH", 6000, 5060, 8 + len(rtp), 0) + rtp
            iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), k & 0xFFFF, 0, 64, 17, 0,
                              bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
            iph = iph[:10] + struct.pack("!H", csum(iph)) + iph[12:]
            eth = b"\0" * 12 + b"\x08\x00" + iph + udp
            ts = k * 0.020
            f.write(struct.pack("<IIII", int(ts), int(round((ts % 1) * 1e6)) % 1_000_000, len(eth), len(eth)) + eth)
    return n


SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- soak caller (bench/soak.py): INVITE with a G.722 offer, play the pcap for the call's length, BYE.
     A BYE from the far end, or no 200 within the timeouts, fails the call. -->
<scenario name="voiceai soak uac">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: soak <sip:soak@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:soak@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=soak 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 9 101
      a=rtpmap:9 G722/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=ptime:20
      a=sendrecv

    ]]>
  </send>

  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true" timeout="{setup_timeout_ms}"/>

  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: soak <sip:soak@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:soak@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>

  <nop>
    <action>
      <exec play_pcap_audio="{pcap}"/>
    </action>
  </nop>
  <pause milliseconds="{call_ms}"/>

  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: soak <sip:soak@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:soak@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" timeout="10000"/>

  <ResponseTimeRepartition value="10, 20, 50, 100, 200, 500, 1000, 2000"/>
  <CallLengthRepartition value="1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000"/>
</scenario>
"""


def write_scenario(path: Path, pcap: Path, call_ms: int, setup_timeout_ms: int = 15000) -> None:
    path.write_text(SCENARIO.format(pcap=pcap, call_ms=call_ms, setup_timeout_ms=setup_timeout_ms),
                    encoding="iso-8859-1")


# ------------------------------------------------------------------------------------------------ helpers
def _free_port(span: int = 1, even: bool = False, taken: set[int] | None = None) -> int:
    """A base port on 127.0.0.1 with ``span`` consecutive free UDP ports (below the ephemeral range)."""
    taken = taken if taken is not None else set()
    for _ in range(500):
        base = random.randrange(20000, 30000 - span)
        if even:
            base &= ~1
        if any(p in taken for p in range(base, base + span)):
            continue
        socks = []
        try:
            for p in range(base, base + span):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((HOST, p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        taken.update(range(base, base + span))
        return base
    raise SoakError("no free UDP port block on 127.0.0.1")


def _port_range(spec: str) -> range:
    a, _, b = spec.partition("-")
    return range(int(a), int(b or a) + 1)


class Ari:
    """Plain urllib ARI GETs (no proxies: loopback only)."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.base = url.rstrip("/") + "/ari"
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.base + path, headers={"Authorization": self.auth})
        with self.opener.open(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def delete(self, path: str) -> int:
        req = urllib.request.Request(self.base + path, headers={"Authorization": self.auth}, method="DELETE")
        try:
            with self.opener.open(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code


def clean_leftovers(ari: Ari, before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Delete what the soak's bot left in the shared sandbox (after measuring it): voiceai-* bridges that are
    still empty and our externalMedia channels, both only if they were not there at the baseline. Otherwise
    the next bot to start (another test's) would find them in its start-up resync."""
    had_b = {b[0] for b in before["our_bridges"]}
    had_c = {c[0] for c in before["our_channels"]}
    done = {"bridges": 0, "channels": 0}
    live = {b["id"]: b for b in ari.get("/bridges") or []}
    for bid, _, _ in after["our_bridges"]:
        if bid not in had_b and bid in live and not live[bid].get("channels"):
            done["bridges"] += ari.delete(f"/bridges/{bid}") == 204
    for cid, _, _ in after["our_channels"]:
        if cid not in had_c and str(cid).startswith(EM_ID_PREFIX):
            done["channels"] += ari.delete(f"/channels/{cid}") == 204
    return done


def _proc_cpu_s(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _box_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def _asterisk_pid() -> int | None:
    root = os.environ.get("VOICEAI_SANDBOX_ROOT", "/var/cache/voiceai-ari/asterisk-sid").rstrip("/")
    try:
        pid = int(Path(root + ".pid").read_text().strip())
        if Path(f"/proc/{pid}/comm").read_text().strip() == "asterisk":
            return pid
    except (OSError, ValueError):
        pass
    return None


def asterisk_rtp_range() -> tuple[int, int] | None:
    """The RTP range the running sandbox Asterisk uses (``rtp show settings``), None if it cannot be read."""
    if os.geteuid() != 0 or not SANDBOX.exists():
        return None
    try:
        out = subprocess.run([str(SANDBOX), "cli", "rtp show settings"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    a = re.search(r"Port start:\s*(\d+)", out)
    b = re.search(r"Port end:\s*(\d+)", out)
    return (int(a.group(1)), int(b.group(1))) if a and b else None


def proc_snapshot(pid: int, ports: range) -> dict[str, int]:
    """From /proc: fds, VmRSS (kB), the process's UDP sockets, and those bound to a port in ``ports``."""
    inodes = set()
    fds = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        fds += 1
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{name}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    udp, in_range = 0, 0
    for table in ("udp", "udp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                parts = line.split()
                if len(parts) > 9 and parts[9] in inodes:
                    udp += 1
                    if int(parts[1].rsplit(":", 1)[1], 16) in ports:
                        in_range += 1
    tcp: collections.Counter[str] = collections.Counter()
    conns: list[tuple[int, int]] = []
    listening: set[int] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                parts = line.split()
                if len(parts) > 9 and parts[9] in inodes:
                    local, remote = (int(x.rsplit(":", 1)[1], 16) for x in parts[1:3])
                    if parts[3] == "0A":
                        listening.add(local)
                    else:
                        conns.append((local, remote))
    tcp["listen"] = len(listening)
    for local, remote in conns:   # "out :8088" = a connection to ARI; "in :<port>" = accepted by its own server
        tcp[f"in :{local}" if local in listening else f"out :{remote}"] += 1
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return {"fds": fds, "rss_kb": rss, "udp_sockets": udp, "udp_ports": in_range, "tcp": dict(tcp),
            "sockets": len(inodes)}


# ------------------------------------------------------------------------------------------------ the bot
class BotLock:
    def __init__(self, path: str = BOT_LOCK) -> None:
        self.path = path
        self.f: Any = None

    def acquire(self, say=lambda m: None, timeout: float = 1800.0) -> None:
        self.f = open(self.path, "w")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            say(f"waiting for the bot lock {self.path} (another bot test is running)")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.2)
        self.release()
        raise SoakError(f"could not take {self.path} in {timeout:.0f} s")

    def release(self) -> None:
        if self.f is not None:
            self.f.close()  # closing the file releases the flock
            self.f = None


_UP = re.compile(r"^= call up in (\d+) ms")
_ENDED = re.compile(r"^x call ended after ([\d.]+) s: (.*?); media (\{.*\})\s*$")
_TEXT = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+)(?: \[([^\]]+)\])? (.*)$")
_CALL_PREFIX = re.compile(r"^\[([^\]]+)\] (.*)$")


def parse_log_line(line: str) -> tuple[str, str | None, str, bool] | None:
    """(level, call id or None, message, has a traceback) of one bot log line, JSON (the default) or text
    ("<date> <time> LEVEL logger [call] msg", or the older "... logger [call] msg" with the id in the message).
    None for a line that is neither (a traceback's continuation lines in text mode)."""
    if line.startswith("{"):
        try:
            d = json.loads(line)
        except ValueError:
            return None
        if not isinstance(d, dict) or "msg" not in d:
            return None
        return str(d.get("level", "")), d.get("call"), str(d["msg"]), bool(d.get("exc"))
    m = _TEXT.match(line)
    if m is None:
        return ("ERROR", None, line, True) if line.startswith("Traceback") else None
    level, _, call, msg = m.groups()
    if call is None and (c := _CALL_PREFIX.match(msg)) is not None:
        call, msg = c.groups()
    return level, call, msg, False


class LogWatcher:
    """Reads the bot's log incrementally and keeps the counts the soak needs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.connected = 0
        self.stats: list[dict[str, Any]] = []
        self.setup_ms: list[int] = []
        self.ended = 0
        self.end_reasons: collections.Counter[str] = collections.Counter()
        self.media: list[dict[str, Any]] = []
        self.durations: list[float] = []
        self.ended_ids: list[str] = []
        self.answered: set[str] = set()
        self.up_ids: set[str] = set()
        self.ended_after: dict[str, float] = {}   # call id -> seconds it lasted
        self.refused = 0
        self.warnings: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.tracebacks = 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            self._line(raw.decode("utf-8", "replace"))

    def _line(self, line: str) -> None:
        parsed = parse_log_line(line)
        if parsed is None:
            return
        level, call, msg, exc = parsed
        if exc:
            self.tracebacks += 1
        if "ARI events connected" in msg:
            self.connected += 1
        if msg.startswith("stats {"):
            with contextlib.suppress(ValueError):
                self.stats.append(json.loads(msg[6:]))
            return
        if (m := _UP.match(msg)) is not None:
            self.setup_ms.append(int(m.group(1)))
            if call:
                self.up_ids.add(call)
        elif (m := _ENDED.match(msg)) is not None:
            self.ended += 1
            self.ended_ids.append(call or "?")
            self.durations.append(float(m.group(1)))
            if call:
                self.ended_after[call] = float(m.group(1))
            self.end_reasons[m.group(2)] += 1
            with contextlib.suppress(ValueError, SyntaxError):
                self.media.append(ast.literal_eval(m.group(3)))
        elif msg.startswith("bot: ") and call:  # the model's transcript of a response it spoke
            self.answered.add(call)
        if level in ("WARNING", "ERROR", "CRITICAL"):
            # ids out, so equal warnings of different calls count together
            norm = re.sub(r"\b\d{10}\.\d+\b|\b[0-9a-f]{16,}\b", "<id>", msg)
            if "refused" in norm:
                self.refused += 1
            if level != "WARNING":
                self.errors.append(line[:400])
            elif not norm.startswith("OPENAI_API_KEY is not set"):  # the offline-demo banner is expected
                self.warnings[norm[:160]] += 1


class FakeModel:
    """`python -m voiceai_ari fake-realtime` (echo, the offline demo's settings) as a separate process."""

    def __init__(self, cfg: SoakConfig, workdir: Path) -> None:
        self.cfg, self.log_path = cfg, workdir / "fake_model.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 15.0) -> str:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([self.cfg.python, "-m", "voiceai_ari", "fake-realtime", "--port", "0",
                                          "--mode", "echo", "--tone-hz", "660", "--tone-seconds", "0.3",
                                          "--log-level", "WARNING"],
                                         env=env, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        end = time.monotonic() + timeout
        os.set_blocking(self.proc.stdout.fileno(), False)
        buf = b""
        while time.monotonic() < end and b"\n" not in buf:
            if self.proc.poll() is not None:
                break
            buf += self.proc.stdout.read() or b""
            time.sleep(0.05)
        self.url = buf.decode().strip().splitlines()[0] if b"\n" in buf else ""
        if not self.url.startswith("ws"):
            raise SoakError(f"fake-realtime did not start: {self.log_path.read_text(errors='replace')[-1000:]}")
        return self.url

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()


class Bot:
    def __init__(self, cfg: SoakConfig, workdir: Path, model_url: str | None = None) -> None:
        self.cfg = cfg
        self.log_path = workdir / "bot.log"
        self.ports = _port_range(cfg.bot_ports)
        self.proc: subprocess.Popen[bytes] | None = None
        self.watch = LogWatcher(self.log_path)
        self.stats_latency_s: list[float] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEAI_") and k != "OPENAI_API_KEY"}
        env.update(
            PYTHONPATH=str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
            VOICEAI_ARI_URL=cfg.ari_url, VOICEAI_ARI_USER=cfg.ari_user, VOICEAI_ARI_PASSWORD=cfg.ari_password,
            VOICEAI_ARI_APP=APP, VOICEAI_RTP_PORTS=cfg.bot_ports, VOICEAI_MAX_CALLS=str(cfg.effective_max_calls),
            VOICEAI_GREETING="none", VOICEAI_DRAIN_S="2", VOICEAI_LOG_LEVEL=cfg.log_level,
            VOICEAI_TRANSCRIPT_DIR=str(workdir / "transcripts"))
        if model_url:  # a key makes the bot use VOICEAI_REALTIME_URL instead of its embedded model
            env.update(OPENAI_API_KEY="sk-soak-not-a-real-key", VOICEAI_REALTIME_URL=model_url,
                       VOICEAI_TRANSCRIPTION_MODEL="")
        self.env = env
        self.workdir = workdir

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([self.cfg.python, "-m", "voiceai_ari", "run"], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.workdir)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.watch.poll()
            if self.proc.poll() is not None:
                raise SoakError(f"voiceai-ari exited {self.proc.returncode}:\n{self.tail()}")
            if self.watch.connected:
                return
            time.sleep(0.05)
        raise SoakError(f"voiceai-ari did not connect its ARI events in {timeout:.0f} s:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    def request_stats(self, timeout: float = 10.0) -> dict[str, Any]:
        """SIGUSR1, then the `stats {json}` line it logs."""
        assert self.proc is not None
        self.watch.poll()
        n = len(self.watch.stats)
        t0 = time.monotonic()
        os.kill(self.pid, signal.SIGUSR1)
        while time.monotonic() - t0 < timeout:
            self.watch.poll()
            if len(self.watch.stats) > n:
                self.stats_latency_s.append(time.monotonic() - t0)
                return self.watch.stats[-1]
            if self.proc.poll() is not None:
                raise SoakError(f"voiceai-ari died (rc {self.proc.returncode}):\n{self.tail()}")
            time.sleep(0.01)
        raise SoakError(f"no stats line {timeout:.0f} s after SIGUSR1")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        self.watch.poll()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def snapshot(bot: Bot, ari: Ari) -> dict[str, Any]:
    stats = bot.request_stats()
    chans = ari.get("/channels") or []
    bridges = ari.get("/bridges") or []
    try:
        in_app = set((ari.get(f"/applications/{APP}") or {}).get("channel_ids", []))
    except urllib.error.HTTPError:
        in_app = set()
    ours = [c for c in chans if c.get("name", "").startswith(MEDIA_CHANNEL_PREFIX) or c["id"] in in_app
            or c["id"].startswith(EM_ID_PREFIX)]
    proc = proc_snapshot(bot.pid, bot.ports)
    our_bridges = [b for b in bridges if str(b.get("name", "")).startswith(BRIDGE_PREFIX)]
    return {
        "our_channels": [(c["id"], c.get("name"), c.get("state")) for c in ours][:200],
        "our_bridges": [(b["id"], b.get("name"), len(b.get("channels", []))) for b in our_bridges][:200],
        "channels": len(ours),
        "unicastrtp_channels": sum(c.get("name", "").startswith(MEDIA_CHANNEL_PREFIX) for c in chans),
        "channels_in_app": len(in_app),
        "all_channels": len(chans),
        "bridges": sum(str(b.get("name", "")).startswith(BRIDGE_PREFIX) for b in bridges),
        "all_bridges": len(bridges),
        "udp_ports": proc["udp_ports"],
        "udp_sockets": proc["udp_sockets"],
        "sockets": proc["sockets"],
        "tcp": proc["tcp"],
        "tasks": stats["tasks"],
        "fds": proc["fds"],
        "rss_kb": proc["rss_kb"],
        "active_calls": stats["active_calls"],
        "ports_in_use": stats["ports_in_use"],
        "owned_ids": stats["owned_ids"],
        "stats": stats,
        "t": time.time(),
    }


def leaks(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in LEAK_KEYS if after[k] - before[k] > 0}


# ------------------------------------------------------------------------------------------------ sipp
@dataclass
class SippRun:
    rc: int
    seconds: float
    stats: dict[str, str] = field(default_factory=dict)   # the last row of -trace_stat
    peak_current: int = 0
    errors_tail: str = ""
    stdout_tail: str = ""
    cmd: list[str] = field(default_factory=list)

    def count(self, column: str) -> int:
        with contextlib.suppress(KeyError, ValueError):
            return int(self.stats[column])
        return -1


def _read_stat_csv(path: Path) -> tuple[dict[str, str], int]:
    if not path.exists():
        return {}, 0
    rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}, 0
    head = rows[0]
    data = [dict(zip(head, r, strict=False)) for r in rows[1:] if len(r) >= len(head) - 1]
    peak = 0
    for d in data:
        with contextlib.suppress(KeyError, ValueError):
            peak = max(peak, int(d["CurrentCall"]))
    return (data[-1] if data else {}), peak


class Sipp:
    def __init__(self, cfg: SoakConfig, workdir: Path, scenario: Path, tag: str, *, calls: int, limit: int,
                 rate: float) -> None:
        sipp = shutil.which("sipp")
        if sipp is None:
            raise SoakError("sipp not found (apt-get install sip-tester)")
        taken: set[int] = set()
        sip_port = _free_port(taken=taken)
        mp = _free_port(4, even=True, taken=taken)
        cp = _free_port(taken=taken)
        self.dir = workdir / tag
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stat_file = self.dir / "stat.csv"
        self.err_file = self.dir / "errors.log"
        self.out_file = self.dir / "stdout.log"
        total_s = calls / max(rate, 0.1) + cfg.call_seconds + 120
        # -rp 1000: RATE calls per second, rate given with 2 decimals via -rp scaling
        self.cmd = [sipp, "-sf", str(scenario), "-s", cfg.extension, cfg.server,
                    "-i", HOST, "-p", str(sip_port), "-mi", HOST, "-mp", str(mp), "-ci", HOST, "-cp", str(cp),
                    "-r", str(max(1, int(round(rate * 100)))), "-rp", "100000", "-l", str(limit), "-m", str(calls),
                    "-nostdin", "-trace_stat", "-stf", str(self.stat_file), "-fd", "1",
                    "-trace_err", "-error_file", str(self.err_file),
                    "-timeout", f"{int(math.ceil(total_s))}s", "-timeout_error"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        with open(self.out_file, "wb") as out:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=self.dir)

    def poll(self) -> int | None:
        assert self.proc is not None
        return self.proc.poll()

    def result(self) -> SippRun:
        assert self.proc is not None
        rc = self.proc.wait()
        stats, peak = _read_stat_csv(self.stat_file)

        def tail(p: Path, n: int = 1500) -> str:
            return p.read_text(errors="replace")[-n:] if p.exists() else ""

        return SippRun(rc=rc, seconds=time.monotonic() - self.t0, stats=stats, peak_current=peak,
                       errors_tail=tail(self.err_file), stdout_tail=tail(self.out_file), cmd=self.cmd)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------------------------------------ the soak
def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(math.ceil(q * len(s))) - 1)]


def _sipp_ms(value: str | None) -> float | None:
    """sipp's -trace_stat durations, "HH:MM:SS:uuuuuu", in ms."""
    m = re.fullmatch(r"(\d+):(\d+):(\d+):(\d+)", (value or "").strip())
    if m is None:
        return None
    h, mi, s, us = (int(g) for g in m.groups())
    return round((h * 3600 + mi * 60 + s) * 1000 + us / 1000, 1)


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


def run_soak(cfg: SoakConfig) -> dict[str, Any]:
    """Run the soak; returns the report (``report["ok"]`` is the verdict). Raises SoakError if it cannot run."""
    t_start = time.monotonic()
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

    made_tmp = cfg.workdir is None
    workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="voiceai-soak-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    pcap = workdir / "soak_g722.pcap"
    write_pcap(pcap, cfg.call_seconds, tone_seconds=cfg.tone_seconds)
    scenario = workdir / "soak_uac.xml"
    write_scenario(scenario, pcap, int(round(cfg.call_seconds * 1000)))
    rate = cfg.effective_rate
    report: dict[str, Any] = {
        "config": {**asdict(cfg), "rate": rate, "max_calls": cfg.effective_max_calls, "workdir": str(workdir)},
        "asterisk": {"version": (info or {}).get("system", {}).get("version"), "rtp_range": ast_range},
    }
    lock = BotLock()
    bot: Bot | None = None
    sipp: Sipp | None = None
    fake: FakeModel | None = None
    try:
        if cfg.lock:
            lock.acquire(lambda m: _say(cfg, m))
        t_locked = time.monotonic()
        if cfg.model == "separate":
            fake = FakeModel(cfg, workdir)
            _say(cfg, f"fake model (separate process): {fake.start()}")
        elif cfg.model != "offline":
            raise SoakError(f"model must be 'offline' or 'separate', not {cfg.model!r}")
        bot = Bot(cfg, workdir, fake.url if fake else None)
        bot.start()
        _say(cfg, f"bot pid {bot.pid} up; log {bot.log_path}")

        # warm-up
        if cfg.warmup:
            warm = Sipp(cfg, workdir, scenario, "sipp-warmup", calls=cfg.warmup, limit=cfg.warmup,
                        rate=max(1.0, float(cfg.warmup)))
            sipp = warm
            warm.start()
            while warm.poll() is None:
                bot.watch.poll()
                time.sleep(0.1)
            wres = warm.result()
            report["warmup"] = {"rc": wres.rc, "ok": wres.count("SuccessfulCall(C)"),
                                "failed": wres.count("FailedCall(C)")}
            if wres.rc != 0:
                raise SoakError(f"the warm-up call failed (sipp rc {wres.rc}):\n{wres.errors_tail}\n"
                                f"{wres.stdout_tail[-800:]}\nbot log:\n{bot.tail()}")
            if not _wait_ended(bot, cfg.warmup, 15):
                raise SoakError(f"the bot did not end the warm-up call:\n{bot.tail()}")
        time.sleep(cfg.settle_s)
        before = snapshot(bot, ari)
        _say(cfg, "baseline: " + ", ".join(f"{k}={before[k]}" for k in (*LEAK_KEYS, "rss_kb")))

        # the load
        _say(cfg, f"load: {cfg.calls} calls, {cfg.concurrency} at once, sipp -r {rate}/s, "
                  f"{cfg.call_seconds:.1f} s each")
        sipp = Sipp(cfg, workdir, scenario, "sipp-load", calls=cfg.calls, limit=cfg.concurrency, rate=rate)
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
        t_load = sres.seconds
        cpu1 = {"bot": _proc_cpu_s(bot.pid), "asterisk": _proc_cpu_s(_asterisk_pid()), "sipp": cpu_sipp_last,
                "model": _proc_cpu_s(fake_pid)}
        box1 = _box_cpu()
        expected = cfg.warmup + cfg.calls
        all_ended = _wait_ended(bot, expected, 60)
        t_last_end = time.monotonic()
        time.sleep(cfg.settle_s)
        after = snapshot(bot, ari)
        after_first = after
        lk = leaks(before, after)
        settle_extra = 0.0
        while lk and time.monotonic() - t_last_end < cfg.settle_max_s:
            _say(cfg, f"above the baseline after settling: {lk}; polling")
            time.sleep(1.0)
            after = snapshot(bot, ari)
            lk = leaks(before, after)
        settle_extra = time.monotonic() - t_last_end - cfg.settle_s
        rc_bot = bot.stop()
        bot.watch.poll()
        cleaned = clean_leftovers(ari, before, after) if cfg.clean_up and (after["our_bridges"] or
                                                                          after["our_channels"]) else {}
        w = bot.watch

        ok_calls = sres.count("SuccessfulCall(C)")
        failed_calls = sres.count("FailedCall(C)")
        rss_growth_mb = (after["rss_kb"] - before["rss_kb"]) / 1024
        rx = [m.get("rx_packets", 0) for m in w.media[cfg.warmup:]]
        tx = [m.get("tx_packets", 0) for m in w.media[cfg.warmup:]]
        box_busy = (box1[0] - box0[0]) / max(1, box1[1] - box0[1])

        def cpu(name: str) -> float | None:
            a, b = cpu0.get(name), cpu1.get(name)
            return None if a is None or b is None else round((b - a) / max(t_load, 1e-6), 3)

        # RSS in the steady state: from the first sample with a quarter of the calls placed to the end (the
        # growth before that is mostly the high-water mark of `concurrency` calls at once, not a leak)
        q = next((s for s in samples if s["total_calls"] - cfg.warmup >= cfg.calls // 4), None)
        steady = None
        if q is not None and cfg.calls + cfg.warmup - q["total_calls"] > 0:
            steady = round((after["rss_kb"] - q["rss_kb"]) / 1024 / (cfg.calls + cfg.warmup - q["total_calls"]) * 100, 3)
        # what the bot log says about the calls whose bridge (named voiceai-<caller channel id>) was left behind
        had = {b[0] for b in before["our_bridges"]}
        new_bridges = [b for b in after["our_bridges"] if b[0] not in had]
        leaked_bridge_calls = [str(name)[len(BRIDGE_PREFIX):] for _, name, _ in new_bridges]
        lbc = {"count": len(leaked_bridge_calls),
               "came_up": sum(1 for c in leaked_bridge_calls if c in w.up_ids),
               "ended_without_call_up": sum(1 for c in leaked_bridge_calls if c in w.ended_after and c not in w.up_ids),
               "not_in_log": sum(1 for c in leaked_bridge_calls if c not in w.ended_after),
               "lasted_s": sorted(w.ended_after[c] for c in leaked_bridge_calls if c in w.ended_after)[:20],
               "empty_bridges": sum(1 for _, _, n in new_bridges if n == 0),
               "examples": new_bridges[:5]}
        report.update({
            "cleaned_up": cleaned,
            "leaked_bridges": lbc,
            "calls_ended_during_setup": sum(1 for c in w.ended_after if c not in w.up_ids),
            "rss_steady_mb_per_100_calls": steady,
            "before": before, "after_settle": after_first, "after": after,
            "leaks": lk, "settle_extra_s": round(max(0.0, settle_extra), 1),
            "rss_growth_mb": round(rss_growth_mb, 2),
            "rss_growth_mb_per_100_calls": round(rss_growth_mb / cfg.calls * 100, 3),
            "calls": {"placed": cfg.calls, "ok": ok_calls, "failed": failed_calls, "sipp_rc": sres.rc,
                      "peak_concurrent_sipp": sres.peak_current, "peak_active_bot": peak["active_calls"],
                      "bot_call_up": len(w.setup_ms), "bot_call_ended": w.ended, "expected_ended": expected,
                      "all_ended": all_ended, "refused": w.refused, "end_reasons": dict(w.end_reasons)},
            "peak": peak,
            "setup_ms": {"p50": _pct(w.setup_ms, 0.5), "p95": _pct(w.setup_ms, 0.95), "max": max(w.setup_ms, default=None)},
            "invite_to_200_ms_avg": _sipp_ms(sres.stats.get("ResponseTime1(C)")),
            "media": {"rx_packets_median": statistics.median(rx) if rx else None, "rx_packets_min": min(rx, default=None),
                      "tx_packets_median": statistics.median(tx) if tx else None,
                      "calls_without_return_audio": sum(1 for v in tx if v == 0),
                      "calls_without_model_answer": sum(1 for i in w.ended_ids if i not in w.answered),
                      "playout_underruns": sum(m.get("playout_underruns", 0) for m in w.media),
                      "clock_reanchors": sum(m.get("clock_reanchors", 0) for m in w.media),
                      "socket_errors": sum(m.get("socket_errors", 0) for m in w.media)},
            "cpu": {"bot": cpu("bot"), "asterisk": cpu("asterisk"), "sipp": cpu("sipp"), "model": cpu("model"),
                    "box_busy": round(box_busy, 3), "cores": os.cpu_count()},
            "ari_ping_ms": {"p50": round(_pct(ari_ms, 0.5) or 0, 1), "max": round(max(ari_ms, default=0), 1)},
            "stats_latency_ms": {"p50": round(1000 * (_pct(bot.stats_latency_s, 0.5) or 0), 1),
                                 "max": round(1000 * max(bot.stats_latency_s, default=0), 1)},
            "bot": {"rc": rc_bot, "warnings": dict(w.warnings.most_common(12)), "errors": w.errors[:10],
                    "error_count": len(w.errors),
                    "tracebacks": w.tracebacks, "ari_reconnects": after["stats"].get("ari_reconnects"),
                    "orphans_cleaned": after["stats"].get("orphans_cleaned"), "log": str(bot.log_path)},
            "samples": samples,
            "sipp": {"rc": sres.rc, "cmd": " ".join(sres.cmd), "errors_tail": sres.errors_tail[-1500:]},
            "seconds": {"load": round(t_load, 1), "total": round(time.monotonic() - t_start, 1),
                        "after_lock": round(time.monotonic() - t_locked, 1)},
        })
    finally:
        if sipp is not None:
            sipp.kill()
        if bot is not None:
            bot.kill()
        if fake is not None:
            fake.stop()
        lock.release()

    failures: list[str] = []
    for k, v in report["leaks"].items():
        failures.append(f"leak: {ROW_LABELS[k]} +{v}")
    c = report["calls"]
    if c["failed"] != 0 or c["ok"] != cfg.calls or c["sipp_rc"] != 0:
        failures.append(f"sipp: {c['ok']} ok, {c['failed']} failed of {cfg.calls} (rc {c['sipp_rc']})")
    if c["bot_call_ended"] != c["expected_ended"]:
        failures.append(f"bot logged {c['bot_call_ended']} 'x call ended' for {c['expected_ended']} calls")
    if c["refused"]:
        failures.append(f"bot refused {c['refused']} calls")
    if report["rss_growth_mb"] > cfg.max_rss_growth_mb:
        failures.append(f"RSS grew {report['rss_growth_mb']:.1f} MB > {cfg.max_rss_growth_mb:.0f} MB")
    if report["bot"]["rc"] != 0:
        failures.append(f"bot exited {report['bot']['rc']} on SIGTERM")
    if report["bot"]["tracebacks"]:
        failures.append(f"{report['bot']['tracebacks']} traceback(s) in the bot log")
    if report["bot"]["errors"]:
        failures.append(f"{report['bot']['error_count']} ERROR line(s) in the bot log")
    report["failures"] = failures
    report["ok"] = not failures
    if made_tmp and report["ok"]:
        shutil.rmtree(workdir, ignore_errors=True)
        report["config"]["workdir"] = None
    return report


# ------------------------------------------------------------------------------------------------ report
def format_report(r: dict[str, Any]) -> str:
    cfg = r["config"]
    b, a = r["before"], r["after"]
    out = [f"soak: {cfg['calls']} calls, {cfg['concurrency']} at once (sipp -r {cfg['rate']}/s -l "
           f"{cfg['concurrency']} -m {cfg['calls']}), {cfg['call_seconds']:.1f} s calls (G.722, "
           f"{cfg['tone_seconds']:.1f} s tone + silence), echo model "
           f"{'embedded (offline demo)' if cfg['model'] == 'offline' else 'in a separate process'}, Asterisk "
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
    p = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n\n")[0],
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
    p.add_argument("--json", dest="json_out", default=None, help="write the report as JSON here")
    p.add_argument("--no-lock", action="store_true", help="do not take the bot lock (the caller holds it)")
    p.add_argument("--no-clean-up", action="store_true",
                   help="leave leaked bridges / externalMedia channels in Asterisk (default: deleted after measuring)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    cfg = SoakConfig(calls=args.calls, concurrency=args.concurrency, call_seconds=args.call_seconds, rate=args.rate,
                     warmup=args.warmup, settle_s=args.settle, settle_max_s=args.settle_max,
                     max_rss_growth_mb=args.max_rss_growth_mb, bot_ports=args.bot_ports, max_calls=args.max_calls,
                     workdir=args.workdir, log_level=args.log_level, model=args.model,
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


if __name__ == "__main__":
    sys.exit(main())
