"""Asterisk restarts under the bot: it reconnects with backoff, cleans up, and serves the next call."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from . import analysis as A
from .caller import SANDBOX_SCRIPT, Phone, place_call
from .conftest import E2E_KEY
from .test_call import no_leftovers

pytestmark = pytest.mark.e2e


async def sandbox(cmd: str) -> str:
    done = await asyncio.to_thread(subprocess.run, [str(SANDBOX_SCRIPT), cmd], capture_output=True,
                                   text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def restart_asterisk(crash: bool = False) -> float:
    """Stop (or SIGKILL: a crash, no hangups, no events) and start the sandbox; return loop.time()
    when ARI answers again."""
    if crash:
        pidfile = [line.split()[-1] for line in (await sandbox("paths")).splitlines() if line.startswith("pidfile")][0]
        pid = int(Path(pidfile).read_text())
        os.kill(pid, signal.SIGKILL)       # the sandbox's Asterisk, which the test run started
        stat = Path(f"/proc/{pid}/stat")
        while stat.exists() and stat.read_text().split()[2] != "Z":
            await asyncio.sleep(0.02)
    else:
        await sandbox("stop")
    await sandbox("start")
    return asyncio.get_running_loop().time()


async def reconnected(bot, n: int, timeout: float = 15.0) -> float:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while bot.log().count("ARI events connected") < n:
        assert loop.time() < end, bot.log()[-2000:]
        await asyncio.sleep(0.02)
    return loop.time()


async def served(tmp_path, name: str) -> bool:
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.5, amplitude=5000))
    res = await place_call("100", phone=phone, call_seconds=2.5, workdir=tmp_path / name)
    cov = A.tone_segments(res.audio_16k(), 16000, 440, tol_hz=10, min_dbfs=-40)
    return res.ok and cov.start_s is not None and cov.tone_seconds >= 0.5


async def test_asterisk_restart_idle_and_mid_call(make_bot, fake_model, tmp_path):
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=0.6, speed=4)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url)

    # idle
    ready = await restart_asterisk()
    back = await reconnected(bot, 2)
    assert await served(tmp_path, "after-idle-restart")
    idle_ms = (back - ready) * 1000

    # with a call up, Asterisk crashes: the call dies with it; the bot must notice and free everything
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.5, amplitude=5000))
    call = asyncio.create_task(place_call("100", phone=phone, call_seconds=8.0, timeout=12.0,
                                          workdir=tmp_path / "cut"))
    await asyncio.sleep(1.5)
    assert "call up" in bot.log()
    ready = await restart_asterisk(crash=True)   # Asterisk dies: no hangup, no StasisEnd for the call
    back = await reconnected(bot, 3)
    busy_ms = (back - ready) * 1000
    await call
    await bot.wait_for_log("caller channel gone (found after ARI reconnect)")
    assert await served(tmp_path, "after-busy-restart")
    print(f"\n[e2e] Asterisk restart: bot re-registered {idle_ms:.0f} ms after ARI was back (idle restart), "
          f"{busy_ms:.0f} ms (crash with a call up); the next call was served both times")
    assert idle_ms < 3000 and busy_ms < 3000
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_sigterm_drains_then_ends_calls_and_exits_0(make_bot, fake_model, tmp_path):
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=0.6, speed=4)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, VOICEAI_DRAIN_S="3")
    loop = asyncio.get_running_loop()
    phone = Phone("g722")
    active = asyncio.create_task(place_call("100", phone=phone, call_seconds=10.0, workdir=tmp_path / "active"))
    await asyncio.sleep(1.0)
    assert "call up" in bot.log()
    t_term = loop.time()
    bot.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    late = await place_call("100", phone=Phone("g722"), call_seconds=2.0, workdir=tmp_path / "late")
    res = await active
    rc = await asyncio.to_thread(bot.proc.wait, 20)
    t_exit = loop.time()
    assert any("486" in e.line for e in late.sip_events), "a call during the drain is refused: " + late.summary()
    assert res.got_bye, "the active call is ended when the drain period is over"
    bye_after = res.sip_time("BYE", "recv") - t_term
    print(f"\n[e2e] SIGTERM: new call refused (486), active call ended {bye_after:.2f} s later (drain 3 s), "
          f"exit {rc} after {t_exit - t_term:.2f} s")
    assert 2.8 < bye_after < 4.5
    assert rc == 0
    assert (await no_leftovers(bot)) == ([], [], [])
