"""Fixtures for the end-to-end tests: the real Asterisk sandbox and a real `voiceai-ari run` process."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.session_io import fake_servers

from voiceai_ari.fakes.gemini.server import FakeGeminiServer
from voiceai_ari.fakes.openai_live.server import FakeLiveServer
from voiceai_ari.fakes.realtime.server import FakeRealtimeServer

from .caller import REPO, sipp_binary, start_sandbox

E2E_KEY = "sk-e2e-test-secret-0123456789"
GEMINI_KEY = "gm-e2e-test-secret-0123456789"
LIVE_KEY = "sk-live-e2e-test-secret-0123456789"


@pytest.fixture(scope="session")
def sandbox() -> None:
    """A running Asterisk sandbox (started if needed; left running for the next test run)."""
    if os.geteuid() != 0:
        pytest.skip("the Asterisk sandbox needs root (debootstrap + chroot): run the e2e tests as root")
    start_sandbox()
    assert sipp_binary(), "scripts/asterisk-sandbox start should have installed sipp (sip-tester)"


class Bot:
    """`voiceai-ari run` as a child process, with its log captured to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, ports: str) -> None:
        self.env, self.log_path, self.ports = env, log_path, ports
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "voiceai_ari", "run"], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=self.log_path.parent)
        # until its events socket is up: GET /applications/voiceai is no proof, Asterisk keeps an app
        # it has seen after its socket went away
        for _ in range(200):
            if self.proc.poll() is not None:
                raise RuntimeError(f"voiceai-ari exited {self.proc.returncode}: {self.log()}")
            if "ARI events connected" in self.log():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("voiceai-ari did not register its Stasis app in 10 s:\n" + self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_for_log(self, text: str, count: int = 1, timeout: float = 10.0) -> str:
        """The log once it holds `text` `count` times (a call's last line comes after its resources are freed)."""
        for _ in range(int(timeout / 0.05)):
            log = self.log()
            if log.count(text) >= count:
                return log
            await asyncio.sleep(0.05)
        raise AssertionError(f"{text!r} not logged {count}x in {timeout} s:\n{self.log()[-3000:]}")

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            for _ in range(200):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                self.proc.kill()
        self._log.close()
        return self.proc.wait()

    def port_range(self) -> range:
        a, b = self.ports.split("-")
        return range(int(a), int(b) + 1)


def bot_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEAI_") and k != "OPENAI_API_KEY"}
    env.update(VOICEAI_ARI_URL="http://127.0.0.1:8088", VOICEAI_LOG_LEVEL="DEBUG", PYTHONPATH=str(REPO),
               VOICEAI_DRAIN_S="2")
    env.update(overrides)
    return env


BOT_LOCK = "/tmp/voiceai-ari-e2e-bot.lock"


@pytest.fixture
async def make_bot(sandbox, tmp_path):
    """Start `voiceai-ari run` with extra settings; stops it (SIGTERM) after the test.

    Asterisk gives a Stasis app's events to one WebSocket only (the newest), so two test runs that each
    start a bot for app "voiceai" would steal each other's calls: a file lock serialises them."""
    import fcntl
    lock = open(BOT_LOCK, "w")
    await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
    bots: list[Bot] = []

    async def make(**settings: str) -> Bot:
        ports = settings.setdefault("VOICEAI_RTP_PORTS", "47000-47019")
        settings.setdefault("VOICEAI_GREETING", "none")
        settings.setdefault("VOICEAI_TRANSCRIPT_DIR", str(tmp_path / "transcripts"))
        bot = Bot(bot_env(**settings), tmp_path / f"bot{len(bots)}.log", ports)
        bots.append(bot)
        await bot.start()
        return bot

    try:
        yield make
        for bot in bots:
            rc = await bot.stop()
            assert rc == 0, f"voiceai-ari exited {rc} on SIGTERM:\n{bot.log()[-3000:]}"
    finally:
        for bot in bots:
            if bot.proc is not None and bot.proc.poll() is None:
                bot.proc.kill()
        lock.close()


@pytest.fixture
async def fake_model():
    """A fake Realtime server the bot talks to."""
    async for make in fake_servers(FakeRealtimeServer, api_key=E2E_KEY):
        yield make


@pytest.fixture
async def fake_gemini():
    """A fake Gemini Live server the bot talks to (VOICEAI_PROVIDER=gemini-live)."""
    async for make in fake_servers(FakeGeminiServer, api_key=GEMINI_KEY):
        yield make


@pytest.fixture
async def fake_live():
    """A fake OpenAI GPT-Live server the bot talks to (VOICEAI_PROVIDER=openai-live)."""
    async for make in fake_servers(FakeLiveServer, api_key=LIVE_KEY):
        yield make


class Provider:
    """How a test drives one model provider through the bot: its fake, the bot's settings for it, and what
    the fake records in the provider's own terms, read the same way for every provider."""

    def __init__(self, name: str, make_fake, rate: int, settings, caller_format: str = "slin24") -> None:
        self.name, self.make_fake, self.rate, self._settings = name, make_fake, rate, settings
        self.caller_format = caller_format

    def bot_settings(self, fake) -> dict[str, str]:
        return {**self._settings(fake), "VOICEAI_CALLER_FORMAT": self.caller_format}

    def tool_outputs(self, fs) -> list[dict]:
        """The results the bot returned for the model's function calls, parsed, in order."""
        if self.name == "gemini-live":
            return [r["response"].get("output", r["response"]) for r in fs.tool_responses]
        if self.name == "openai-live":
            return [json.loads(item["output"]) for item in fs.tool_outputs]
        return [json.loads(e["item"]["output"]) for e in fs.events_of("conversation.item.create")
                if e["item"]["type"] == "function_call_output"]

    def __repr__(self) -> str:
        return self.name if self.caller_format == "slin24" else f"{self.name}/{self.caller_format}"


@pytest.fixture(params=["openai-realtime", "gemini-live", "openai-live", "openai-realtime/slin16",
                        "openai-realtime/ulaw"])
def provider(request, fake_model, fake_gemini, fake_live) -> Provider:
    """Each test that takes it runs once per model provider, against that provider's fake, and for
    openai-realtime also once per other caller format (VOICEAI_CALLER_FORMAT; slin24 is the default)."""
    if "/" in request.param:
        name, fmt = request.param.split("/")
        assert name == "openai-realtime"
        return Provider(name, fake_model, 24000, lambda fake: dict(
            OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url), caller_format=fmt)
    if request.param == "openai-live":
        def live_fake(speed: float = 1.0, **kw):   # its output is paced by the input clock: no `speed`
            return fake_live(**kw)
        return Provider("openai-live", live_fake, 24000, lambda fake: dict(
            VOICEAI_PROVIDER="openai-live", OPENAI_API_KEY=LIVE_KEY, VOICEAI_LIVE_URL=fake.url))
    if request.param == "gemini-live":
        return Provider("gemini-live", fake_gemini, 16000, lambda fake: dict(
            VOICEAI_PROVIDER="gemini-live", GEMINI_API_KEY=GEMINI_KEY, VOICEAI_GEMINI_URL=fake.url))
    return Provider("openai-realtime", fake_model, 24000, lambda fake: dict(
        OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url))


@pytest.fixture(params=["rtp", "websocket"])
def transport(request) -> dict[str, str]:
    """Each test that takes it runs once per media transport: the bot's settings for it (`**transport`). The
    caller format is the test's (the `provider` fixture's, slin24 unless it names another)."""
    return {"VOICEAI_TRANSPORT": request.param}


def pytest_collection_modifyitems(config, items):
    """A test parametrised over both transports and providers/formats is not collected for a pair the bot
    refuses at start (G.711 passthrough is RTP only: tests/test_caller_formats.py covers that refusal)."""
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        refused = params.get("transport") == "websocket" and str(params.get("provider", "")).endswith(("/ulaw", "/alaw"))
        (drop if refused else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class CallerFormat:
    """One media path for a test, "<format>" on RTP or "websocket/<format>": the bot's settings, and the
    session format the model must be told."""

    MODEL_FORMAT = {"ulaw": {"type": "audio/pcmu"}, "alaw": {"type": "audio/pcma"}}

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.transport, _, self.name = spec.rpartition("/")
        self.transport = self.transport or "rtp"
        self.model_format = self.MODEL_FORMAT.get(self.name, {"type": "audio/pcm", "rate": 24000})

    def settings(self) -> dict[str, str]:
        return {"VOICEAI_CALLER_FORMAT": self.name, "VOICEAI_TRANSPORT": self.transport}

    @property
    def websocket(self) -> bool:
        return self.transport == "websocket"

    @property
    def narrowband(self) -> bool:
        return self.name in ("ulaw", "alaw")

    def __repr__(self) -> str:
        return self.spec


@pytest.fixture(params=["slin24", "slin16", "ulaw", "websocket/slin24"])
def caller_format(request) -> CallerFormat:
    """Each test that takes it runs once per media path: caller formats on RTP, and chan_websocket (alaw and
    websocket/slin16: the tests that name them with ``@pytest.mark.parametrize("caller_format", [...],
    indirect=True)``)."""
    return CallerFormat(request.param)


ALL_FORMATS = ["slin24", "slin16", "ulaw", "alaw"]


# ------------------------------------------------------------------------------------------------ bot logs
def log_messages(bot) -> str:
    """The bot's log as one message per line: the "msg" of each JSON line (text lines as they are)."""
    out = []
    for line in bot.log().splitlines():
        try:
            rec = json.loads(line)
            out.append(rec["msg"] if isinstance(rec, dict) and "msg" in rec else line)
        except ValueError:
            out.append(line)
    return "\n".join(out)


def log_lines(bot, pattern: str) -> list[re.Match]:
    return list(re.finditer(pattern, log_messages(bot), re.M))


def ended_media_stats(bot) -> list[dict]:
    """The media stats of every "x call ended after ...; media {...}" line, in order."""
    return [ast.literal_eval(m.group(1)) for m in log_lines(bot, r"x call ended after .*?; media (\{.*\})$")]
