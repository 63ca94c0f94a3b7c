"""Sections 5 and 7, on the real Asterisk sandbox: call set-up time, and the bot's CPU against Asterisk's.

Both start a real ``voiceai-ari run`` child (the same as tests/e2e/conftest.py's ``Bot``) against the fake
Realtime model running as its own process (``bench.peers fake``: so the bot's CPU is the bot's alone), and
call it with the e2e harness: sipp for SIP, ``tests/e2e/phone.Phone`` for the caller's media (G.722).
The bot lock (/tmp/voiceai-ari-e2e-bot.lock) is held from before the sandbox is touched until the bot is
gone: Asterisk gives the Stasis app to one bot at a time.

Set-up (section 5), ~10 calls one after another, ``VOICEAI_GREETING=model`` and a zero-delay fake model
(tone mode), so the bot speaks the moment the call is up; per call:

- StasisStart -> call up: the bot's own "call up in N ms" (answer, externalMedia, bridge, model connected);
- StasisStart -> first bot audio RTP to Asterisk: tcpdump on lo of the bot's RTP ports, the first packet that
  decodes to sound; StasisStart is the "call up" log line's time minus N (wall clock, ms resolution);
- caller INVITE -> first bot audio at the caller: the phone's arrival time of the first packet that decodes to
  sound, minus the time sipp sent the INVITE (both on the harness's clock).

Bot versus Asterisk (section 7): 20 calls at once, each caller repeating "speech" (0.8 s of a 1 kHz tone,
1.2 s of silence) to the fake model in echo mode, so the bot hears and speaks all the time. Over a window
while all 20 are up: utime+stime of the bot process and of Asterisk (its PID from the sandbox pidfile), from
/proc/<pid>/stat. Asterisk's count covers everything it does for those calls (SIP, both RTP legs, the mixing
bridges, G.722 transcoding on the caller leg).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .common import REPO, cpu_seconds, cpu_split, summary

BOT_LOCK = "/tmp/voiceai-ari-e2e-bot.lock"
SANDBOX = REPO / "scripts" / "asterisk-sandbox"
BOT_PORTS = (47400, 47499)
LOUD_DBFS = -40.0


class Skip(Exception):
    """The section cannot run here (not root, no sipp, no sandbox)."""


# ------------------------------------------------------------------------------------------------ plumbing
@contextlib.contextmanager
def bot_lock(timeout: float, log=print, held: bool = False):
    """Hold the bot lock (an exclusive flock); ``held``: the caller already holds it (no-op)."""
    if held:
        yield
        return
    f = open(BOT_LOCK, "a+")
    t0 = time.monotonic()
    told = False
    try:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - t0 > timeout:
                    raise Skip(f"the bot lock {BOT_LOCK} stayed busy for {timeout:.0f} s") from None
                if not told:
                    log(f"  waiting for the bot lock {BOT_LOCK} (another bot test is running)")
                    told = True
                time.sleep(0.5)
        yield
    finally:
        f.close()


def ensure_sandbox(log=print) -> int:
    """Asterisk running (started if not); returns its PID."""
    if os.geteuid() != 0:
        raise Skip("the Asterisk sandbox needs root")
    if not shutil.which("sipp"):
        raise Skip("sipp is not installed (scripts/asterisk-sandbox provision)")
    st = subprocess.run([str(SANDBOX), "status"], capture_output=True, text=True)
    if st.returncode != 0:
        log("  starting the Asterisk sandbox (scripts/asterisk-sandbox start)")
        done = subprocess.run([str(SANDBOX), "start"], capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise Skip(f"scripts/asterisk-sandbox start failed: {done.stderr.strip()[-300:]}")
    paths = subprocess.run([str(SANDBOX), "paths"], capture_output=True, text=True).stdout
    m = re.search(r"^pidfile\s+(\S+)", paths, re.M)
    if not m:
        raise Skip("cannot find the sandbox pidfile")
    return int(Path(m.group(1)).read_text().strip())


class Bot:
    """``python -m voiceai_ari run`` as a child, log to a file."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.log_path = workdir / "bot.log"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "voiceai_ari", "run"], env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=self.log_path.parent)
        for _ in range(300):
            if self.proc.poll() is not None:
                raise RuntimeError(f"voiceai-ari exited {self.proc.returncode}: {self.log()[-2000:]}")
            if "ARI events connected" in self.log():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("voiceai-ari did not connect to ARI in 15 s:\n" + self.log()[-2000:])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            for _ in range(300):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                self.proc.kill()
        self.proc.wait()
        self._log.close()


def bot_env(url: str, workdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEAI_") and k != "OPENAI_API_KEY"}
    env.update(VOICEAI_ARI_URL="http://127.0.0.1:8088", VOICEAI_LOG_LEVEL="INFO", PYTHONPATH=str(REPO),
               OPENAI_API_KEY="sk-bench-0123456789", VOICEAI_REALTIME_URL=url,
               VOICEAI_RTP_PORTS=f"{BOT_PORTS[0]}-{BOT_PORTS[1]}", VOICEAI_TRANSCRIPT_DIR="",
               VOICEAI_DRAIN_S="2", VOICEAI_TRANSCRIPTION_MODEL="")
    env.update(extra)
    return env


class Fake:
    def __init__(self, *args: str) -> None:
        self.p = subprocess.Popen([sys.executable, "-m", "bench.peers", "fake", *args], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, cwd=str(REPO))
        assert self.p.stdout is not None
        self.url = self.p.stdout.readline().strip()
        if not self.url:
            raise RuntimeError("the fake model did not start")

    def close(self) -> None:
        if self.p.stdin:
            self.p.stdin.close()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def _loud(payload: bytes, dec: Any) -> bool:
    pcm = np.asarray(dec.decode(payload), np.float64)
    if not pcm.size:
        return False
    rms = float(np.sqrt(np.mean(pcm * pcm)))
    return rms > 0 and 20 * np.log10(rms / 32768) > LOUD_DBFS


def _read_pcap(path: Path) -> list[tuple[float, int, int, bytes]]:
    """(wall time, src port, dst port, UDP payload) of every IPv4/UDP packet in a pcap (Ethernet or Linux SLL)."""
    data = path.read_bytes() if path.exists() else b""
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian, nano = ("<", False) if magic in (0xA1B2C3D4, 0xA1B23C4D) else (">", False)
    nano = magic == 0xA1B23C4D
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    l2 = {1: 14, 113: 16, 276: 20, 0: 4}.get(linktype, 14)
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[pos:pos + 16])
        pkt = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        ip = pkt[l2:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
        out.append((sec + frac / (1e9 if nano else 1e6), sport, dport, ip[ihl + 8:]))
    return out


_CALL_UP = re.compile(r"call up in (\d+) ms.*RTP [\d.]+:(\d+)")


def _call_up(log_text: str) -> tuple[float, float, int] | None:
    """(wall time of the line, set-up ms, bot RTP port) of the first "call up" line; the bot logs JSON lines
    ({"ts": "2025-01-01T12:00:00.123", "msg": ...}) or text ("2025-01-01 12:00:00,123 INFO ... msg")."""
    for line in log_text.splitlines():
        m = _CALL_UP.search(line)
        if not m:
            continue
        if line.startswith("{"):
            try:
                ts = json.loads(line)["ts"]
                t = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f").timestamp()
            except (ValueError, KeyError):
                continue
        else:
            try:
                t = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue
        return t, float(m.group(1)), int(m.group(2))
    return None


# ------------------------------------------------------------------------------------------------ section 5
async def _setup_calls(n: int, workdir: Path, log) -> dict[str, Any]:
    import G722

    from tests.e2e.caller import Phone, place_call

    fake = Fake("--mode", "tone", "--tone-seconds", "1.0", "--speed", "4", "--delay", "0")
    bot = Bot(workdir, bot_env(fake.url, workdir, VOICEAI_GREETING="model"))
    pcap = workdir / "bot-rtp.pcap"
    dump = None
    calls: list[dict[str, Any]] = []
    try:
        await bot.start()
        if shutil.which("tcpdump"):
            dump = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-U", "--immediate-mode", "-w", str(pcap),
                                     f"udp and src portrange {BOT_PORTS[0]}-{BOT_PORTS[1]}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(1.0)  # tcpdump is listening
        for i in range(n + 1):  # call 0 warms the bot up (imports, first connections) and is not counted
            phone = Phone("g722")
            log_mark = len(bot.log())
            res = await place_call("100", phone=phone, call_seconds=1.2, workdir=workdir / "calls")
            await asyncio.sleep(0.4)  # the bot's teardown
            if i == 0:
                continue
            rec: dict[str, Any] = {"ok": res.ok}
            t_invite = res.sip_time("INVITE", "sent")
            dec = G722.G722(16000, 64000)
            t_first = next((t for t, p in res.rx if p.pt == 9 and _loud(p.payload, dec)), None)
            if t_invite is not None and t_first is not None:
                rec["invite_to_first_audio_ms"] = (t_first - t_invite) * 1000
            if res.t_answered is not None and t_first is not None:
                rec["answer_to_first_audio_ms"] = (t_first - res.t_answered) * 1000
            up = _call_up(bot.log()[log_mark:])
            if up:
                rec["stasis_to_call_up_ms"] = up[1]
                rec["t_stasis_wall"] = up[0] - up[1] / 1000
                rec["bot_port"] = up[2]
            calls.append(rec)
        if dump is not None:
            await asyncio.sleep(0.5)
            dump.send_signal(signal.SIGINT)
            dump.wait(10)
            pkts = _read_pcap(pcap)
            for rec in calls:
                if "bot_port" not in rec:
                    continue
                dec = G722.G722(16000, 64000)
                for t, sport, _, udp in pkts:
                    if sport != rec["bot_port"] or t < rec["t_stasis_wall"] - 1 or len(udp) < 12 + 160:
                        continue
                    if udp[1] & 0x7F == 9 and _loud(udp[12:], dec):
                        rec["stasis_to_first_audio_rtp_ms"] = (t - rec["t_stasis_wall"]) * 1000
                        break
    finally:
        if dump is not None and dump.poll() is None:
            dump.send_signal(signal.SIGINT)
            dump.wait(10)
        await bot.stop()
        fake.close()

    def col(key: str) -> list[float]:
        return [c[key] for c in calls if key in c]

    return {"calls": len(calls), "failed": sum(1 for c in calls if not c["ok"]),
            "stasis_to_call_up_ms": summary(col("stasis_to_call_up_ms")),
            "stasis_to_first_audio_rtp_ms": summary(col("stasis_to_first_audio_rtp_ms")),
            "invite_to_first_audio_ms": summary(col("invite_to_first_audio_ms")),
            "answer_to_first_audio_ms": summary(col("answer_to_first_audio_ms")),
            "per_call": calls, "target_invite_to_first_audio_median_ms": 150.0}


# ------------------------------------------------------------------------------------------------ section 7
async def _ratio(n_calls: int, call_s: float, window: tuple[float, float], ast_pid: int, workdir: Path,
                 log, profile_dir: Path | None = None, **bot_settings: str) -> dict[str, Any]:
    from .profile import record

    from tests.e2e import analysis as A
    from tests.e2e.caller import Phone, ari, place_call

    fake = Fake("--mode", "echo", "--speed", "4")
    bot = Bot(workdir, bot_env(fake.url, workdir, VOICEAI_GREETING="none", VOICEAI_MAX_CALLS=str(n_calls + 10),
                               **bot_settings))
    try:
        await bot.start()
        assert bot.proc is not None
        speech = A.tone(1000, 0.8, amplitude=8000) + A.silence(1.2)
        phones = []
        for _ in range(n_calls):
            ph = Phone("g722")
            ph.play(speech * int(call_s / 2 + 1))
            phones.append(ph)
        tasks = [asyncio.create_task(place_call("100", phone=ph, call_seconds=call_s, workdir=workdir / "load"))
                 for ph in phones]
        await asyncio.sleep(window[0])
        _, chans0 = await ari("GET", "/channels")
        (bu0, bs0), (au0, as0), f0, w0 = (cpu_split(bot.proc.pid), cpu_split(ast_pid), cpu_seconds(fake.p.pid),
                                          time.monotonic())
        spy = record(bot.proc.pid, window[1] - window[0], profile_dir / "ratio-bot.txt") if profile_dir else None
        await asyncio.sleep(window[1] - window[0])
        (bu1, bs1), (au1, as1), f1, w1 = (cpu_split(bot.proc.pid), cpu_split(ast_pid), cpu_seconds(fake.p.pid),
                                          time.monotonic())
        _, chans1 = await ari("GET", "/channels")
        results = await asyncio.gather(*tasks)
        if spy is not None:
            spy.wait(30)
        wall = w1 - w0
        up = [c for c in (chans0 or []) if c.get("name", "").startswith(("UnicastRTP/", "WebSocket/"))]
        bot_cpu, ast_cpu = (bu1 + bs1) - (bu0 + bs0), (au1 + as1) - (au0 + as0)
        heard = sum(1 for r in results if _loud_seconds(r.audio_16k()) >= 0.5)
        return {"calls": n_calls, "window_s": wall, "bot_cpu_s": bot_cpu, "asterisk_cpu_s": ast_cpu,
                "fake_model_cpu_s": f1 - f0, "ratio": bot_cpu / ast_cpu if ast_cpu > 0 else float("nan"),
                "bot_cpu_pct": 100 * bot_cpu / wall, "asterisk_cpu_pct": 100 * ast_cpu / wall,
                # kernel time on each side's behalf (socket calls, wake-ups, loopback delivery of what it sends)
                "bot_system_cpu_pct": 100 * (bs1 - bs0) / wall, "asterisk_system_cpu_pct": 100 * (as1 - as0) / wall,
                "bot_channels_at_start": len(up), "channels_at_start": len(chans0 or []),
                "channels_at_end": len(chans1 or []), "calls_ok": sum(1 for r in results if r.ok),
                "calls_heard_bot": heard, "target_ratio": 0.5, "bot_settings": bot_settings}
    finally:
        await bot.stop()
        fake.close()


def _loud_seconds(pcm16k: bytes) -> float:
    """Seconds of 20 ms windows above LOUD_DBFS: how much bot audio a caller heard."""
    x = np.frombuffer(pcm16k, "<i2").astype(np.float64)
    n = len(x) // 320
    if not n:
        return 0.0
    rms = np.sqrt(np.mean(x[:n * 320].reshape(n, 320) ** 2, axis=1))
    return float(np.sum(20 * np.log10(np.maximum(rms, 1e-9) / 32768) > LOUD_DBFS)) * 0.02


# ------------------------------------------------------------------------------------------------ entry
def run(sections: set[str], quick: bool = False, lock_timeout: float = 600.0, log=print,
        lock_held: bool = False, profile_dir: Path | None = None, formats: tuple[str, ...] = ()) -> dict[str, Any]:
    """``formats``: more caller formats (VOICEAI_CALLER_FORMAT) for the ratio, each as ``ratio_<format>``."""
    out: dict[str, Any] = {}
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="voiceai-bench-") as tmp:
        workdir = Path(tmp)
        try:
            with bot_lock(lock_timeout, log, held=lock_held):
                ast_pid = ensure_sandbox(log)
                subprocess.run([str(SANDBOX), "hangup-all"], capture_output=True)
                if "setup" in sections:
                    log("  call set-up on the sandbox ...")
                    out["setup"] = asyncio.run(_setup_calls(3 if quick else 10, workdir, log))
                if "ratio" in sections:
                    log("  bot vs Asterisk CPU, 20 calls ...")
                    ast_pid = ensure_sandbox(log)
                    out["ratio"] = asyncio.run(_ratio(20, 14.0 if quick else 22.0, (4.0, 12.0 if quick else 20.0),
                                                      ast_pid, workdir, log, profile_dir))
                    log("  the same with VOICEAI_DTX=true ...")
                    ast_pid = ensure_sandbox(log)
                    out["ratio_dtx"] = asyncio.run(_ratio(20, 14.0 if quick else 22.0, (4.0, 12.0 if quick else 20.0),
                                                          ast_pid, workdir, log, None, VOICEAI_DTX="true"))
                    for fmt in formats:
                        log(f"  the same with VOICEAI_CALLER_FORMAT={fmt} ...")
                        ast_pid = ensure_sandbox(log)
                        out[f"ratio_{fmt}"] = asyncio.run(_ratio(
                            20, 14.0 if quick else 22.0, (4.0, 12.0 if quick else 20.0), ast_pid, workdir, log, None,
                            VOICEAI_CALLER_FORMAT=fmt))
                    for key, fmt in (("ratio_ws", "slin24"), ("ratio_ws16", "slin16")):
                        log(f"  the same over chan_websocket ({fmt}) ...")
                        ast_pid = ensure_sandbox(log)
                        out[key] = asyncio.run(_ratio(20, 14.0 if quick else 22.0, (4.0, 12.0 if quick else 20.0),
                                                      ast_pid, workdir, log, None, VOICEAI_TRANSPORT="websocket",
                                                      VOICEAI_CALLER_FORMAT=fmt))
        except Skip as exc:
            for s in sections:
                out.setdefault(s, {"skipped": str(exc)})
    return out


if __name__ == "__main__":
    print(json.dumps(run({"setup", "ratio"}, quick="--quick" in sys.argv), indent=1, default=str))
