"""What the soak measures from outside the bot: ARI (our channels and bridges), /proc (fds, RSS, sockets, CPU)
and the bot's own counters; the leak rule (after - before > 0) and the clean-up of what a leak left in Asterisk."""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import APP, BRIDGE_PREFIX, EM_ID_PREFIX, LEAK_KEYS, MEDIA_CHANNEL_PREFIX, SANDBOX

if TYPE_CHECKING:
    from .bot import Bot


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
