"""docker-compose.yml, proven: the project's own compose file is brought up with podman + podman-compose
(``scripts/container-stack``), sipp calls the containerised Asterisk on 127.0.0.1:5060 from the host, and the
caller must hear the containerised bot's offline demo model: its greeting beep (660 Hz), then the caller's
own 1 kHz tone echoed back. Then the stack comes down.

The stack publishes the same host ports as the Asterisk sandbox (127.0.0.1:5060/udp, 8088/tcp, the RTP range),
so the test holds the bot lock of conftest.make_bot (no other bot test runs meanwhile), stops the sandbox,
and restarts it afterwards if it was running, whatever happens.

    scripts/test tests/e2e/test_compose_stack.py -s     # -s shows the timings

Root only. The first run provisions podman and builds the base and project images (a few minutes); later
runs reuse them. Skipped with the reason where podman cannot run a container.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from . import analysis as A
from .caller import REPO, SANDBOX_SCRIPT, Phone, place_call
from .conftest import BOT_LOCK

pytestmark = pytest.mark.e2e
STACK = REPO / "scripts" / "container-stack"
AMP = 5000  # -16.3 dBFS
LEAD_S = 1.5  # the caller is silent while the greeting beep (0.3 s) plays: speech would barge in on it
TONE_S = 1.0
# the test's own settings on top of docker-compose.yml (and of a developer's .env, if any): the offline demo
# model (no key) greets with its beep
OVERRIDE = """\
services:
  voiceai:
    environment:
      OPENAI_API_KEY: ""
      VOICEAI_GREETING: model
      VOICEAI_LOG_LEVEL: DEBUG
"""


def sandbox_lock_path() -> str:
    p = run(SANDBOX_SCRIPT, "paths", timeout=30)
    m = re.search(r"^root (\S+)$", p.stdout, re.M)
    assert p.returncode == 0 and m, f"asterisk-sandbox paths: {out(p)}"
    os.makedirs(os.path.dirname(m.group(1)), exist_ok=True)
    return m.group(1) + ".lock"


def run(*args: str | Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def out(p: subprocess.CompletedProcess[str]) -> str:
    return (p.stdout + p.stderr).strip()


def stamp_ms(text: str, pattern: str) -> int | None:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else None


@pytest.fixture
async def compose_stack(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the compose stack needs root (apt-get, debootstrap, rootful podman): run the e2e tests as root")
    timings: dict[str, float | int | None] = {}
    t0 = time.monotonic()
    p = await asyncio.to_thread(run, STACK, "provision", timeout=3600)
    timings["provision_s"] = round(time.monotonic() - t0, 1)
    if p.returncode != 0 and shutil.which("podman") is None and shutil.which("apt-get") is None:
        pytest.skip("podman is not installed and there is no apt-get to install it (scripts/container-stack "
                    "provision needs a Debian-like host)")
    assert p.returncode == 0, f"scripts/container-stack provision failed:\n{out(p)[-3000:]}"
    probe = await asyncio.to_thread(run, "podman", "run", "--rm", "debian:bookworm-slim", "true", timeout=300)
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run a container here: {out(probe)[-600:]}")
    # build outside the lock (the bot tests of other runs wait on it); `up` then finds every layer cached
    t0 = time.monotonic()
    p = await asyncio.to_thread(run, STACK, "build", timeout=3600)
    timings["build_s"] = round(time.monotonic() - t0, 1)
    assert p.returncode == 0, f"scripts/container-stack build failed:\n{out(p)[-3000:]}"
    override = tmp_path / "compose.test.yml"
    override.write_text(OVERRIDE)

    lock = open(BOT_LOCK, "w")
    await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
    sandbox_lock = None
    sandbox_was_running = False
    try:
        st = await asyncio.to_thread(run, SANDBOX_SCRIPT, "status", timeout=60)
        sandbox_was_running = st.returncode == 0
        if sandbox_was_running:
            p = await asyncio.to_thread(run, SANDBOX_SCRIPT, "stop", timeout=120)
            assert p.returncode == 0, f"asterisk-sandbox stop failed:\n{out(p)}"
        # while the stack holds the ports, a `scripts/asterisk-sandbox start` of another test run waits on the
        # sandbox's own lock (<chroot>.lock, up to 600 s) instead of failing on a busy port
        sandbox_lock = open(sandbox_lock_path(), "w")
        await asyncio.to_thread(fcntl.flock, sandbox_lock, fcntl.LOCK_EX)
        t0 = time.monotonic()
        up = await asyncio.to_thread(run, STACK, "up", "-f", override, timeout=1800)
        timings["up_s"] = round(time.monotonic() - t0, 1)
        assert up.returncode == 0, f"scripts/container-stack up failed:\n{out(up)[-4000:]}"
        timings["up_build_ms"] = stamp_ms(up.stdout, r"images built in (\d+) ms")
        print("\n" + up.stdout.strip())
        timings["started_ms"] = stamp_ms(up.stdout, r"containers started in (\d+) ms")
        timings["ari_ms"] = stamp_ms(up.stdout, r"ARI answers on \S+ after (\d+) ms")
        timings["ready_ms"] = stamp_ms(up.stdout, r"connected after (\d+) ms")
        yield timings
    finally:
        t0 = time.monotonic()
        down = await asyncio.to_thread(run, STACK, "down", timeout=300)
        timings["down_s"] = round(time.monotonic() - t0, 1)
        if sandbox_lock is not None:
            sandbox_lock.close()
        restart = None
        if sandbox_was_running:
            restart = await asyncio.to_thread(run, SANDBOX_SCRIPT, "start", timeout=900)
        lock.close()
        print(f"\n[e2e] compose stack: {timings}; sandbox was running: {sandbox_was_running}")
    assert down.returncode == 0, f"scripts/container-stack down failed:\n{out(down)}"
    assert restart is None or restart.returncode == 0, f"asterisk-sandbox start failed:\n{out(restart)}"


async def test_compose_stack_answers_a_call_with_the_offline_echo_bot(compose_stack, tmp_path):
    bot_log_before = container_log("voiceai")
    assert "OFFLINE DEMO MODEL" in bot_log_before, bot_log_before[-2000:]

    phone = Phone("g722")
    phone.play(A.silence(LEAD_S) + A.tone(1000, TONE_S, amplitude=AMP))   # then the phone sends silence
    res = await place_call("100", phone=phone, call_seconds=6.0, workdir=tmp_path)
    bot_log = container_log("voiceai")
    assert res.ok and not res.got_bye, res.summary() + "\n" + bot_log[-3000:]
    # Asterisk's SDP says 127.0.0.1 and a port of the published RTP range: the container answered
    assert res.answer is not None and res.answer[0] == "127.0.0.1" and 10000 <= res.answer[1] <= 10399, res.summary()
    assert set(res.payload_types()) == {9}, res.summary()

    pcm = res.audio_16k()
    beep = A.tone_segments(pcm, 16000, 660, tol_hz=30, min_dbfs=-40)
    echo = A.tone_segments(pcm, 16000, 1000, tol_hz=30, min_dbfs=-40)
    first = res.rx_times()[0] - res.t_answered if res.rx_times() and res.t_answered else None
    print(f"\n[e2e] compose call: {len(res.voice())} G.722 packets, the first {first} s after the answer; "
          f"greeting beep {beep}; echo {echo}")
    # the greeting: the offline model's 0.3 s 660 Hz beep, before the caller says anything. Behind the
    # bridge NAT its first ~80 ms are lost: Asterisk sends to the SDP's 127.0.0.1 (its own loopback) until it
    # has taken the caller's packets from the bridge gateway as the new source (rtp_symmetric; strictrtp's
    # probation = 4 packets). On the sandbox the whole 0.32 s arrives.
    assert beep.start_s is not None, "no greeting beep: " + res.summary() + "\n" + bot_log[-3000:]
    assert 0.15 <= beep.tone_seconds <= 0.36, beep
    assert beep.end_s < LEAD_S, beep
    # the echo: the caller's 1 kHz second comes back after the caller stopped (VAD silence), not live
    assert echo.start_s is not None, "the caller never heard its echo: " + res.summary() + "\n" + bot_log[-3000:]
    assert echo.start_s > LEAD_S + TONE_S, echo
    assert 0.9 <= echo.tone_seconds <= TONE_S + 0.1, echo
    assert abs(A.dominant_freq(pcm, 16000, echo.start_s + 0.1, echo.end_s - 0.1) - 1000) < 10
    for _ in range(50):  # the bot logs the call's end once its teardown is done
        if "x call ended" in bot_log:
            break
        await asyncio.sleep(0.1)
        bot_log = container_log("voiceai")
    assert "= call up in" in bot_log and "x call ended" in bot_log, bot_log[-3000:]


def container_log(service: str) -> str:
    p = run(STACK, "logs", service, timeout=60)
    return out(p)


# ------------------------------------------------------------------------------------------------ offline checks
def test_container_stack_script_parses():
    assert os.access(STACK, os.X_OK)
    subprocess.run(["bash", "-n", str(STACK)], check=True)


def test_compose_file_stays_standard():
    """scripts/container-stack adapts the host, not the project files: nothing podman-specific in them."""
    for f in ("docker-compose.yml", "Dockerfile", "asterisk/Dockerfile", "asterisk/entrypoint.sh"):
        text = (REPO / f).read_text()
        body = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
        assert not re.search(r"podman|x-podman|localhost/|containers\.internal", body, re.I), f"{f} is podman-specific"
