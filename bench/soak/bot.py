"""The bot under test as a child process (`python -m voiceai_ari run`), the lock that gives it the Stasis app,
and the optional fake Realtime model in a process of its own."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .botlog import LogWatcher
from .config import APP, BOT_LOCK, REPO, SoakConfig, SoakError, _port_range


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
            VOICEAI_TRANSCRIPT_DIR=str(workdir / "transcripts"), VOICEAI_TRANSPORT=cfg.transport)
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
