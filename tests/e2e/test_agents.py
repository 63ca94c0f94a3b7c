"""Agents per extension through the real sandbox: the dialplan picks the agent, the caller hears it.

Extensions (asterisk/extensions.conf): 102 = Stasis(voiceai,agent=support), 103 = Set(VOICEAI_AGENT=sales) +
Stasis(voiceai), 104 = Stasis(voiceai,agent=no-such-agent). The fake model answers in tones, and with
`tone_from_instructions` an agent's instructions set the pitch ("[tone 600 Hz]"): what the caller's RTP
carried tells which agent served the call. The default agent's instructions have no mark: 440 Hz.
"""

from __future__ import annotations

import asyncio
import json
import signal
import textwrap

import aiohttp
import pytest

from . import analysis as A
from .caller import CallResult, Phone, place_call
from .conftest import E2E_KEY, log_lines, log_messages

pytestmark = pytest.mark.e2e
CONTROL_PORT = 18091
DEFAULT_HZ, SUPPORT_HZ, SALES_HZ, SUPPORT_NEW_HZ = 440, 600, 900, 750
AMP = 5000

AGENTS = f"""
[agents.support]
instructions = "You are the support line. [tone {SUPPORT_HZ} Hz]"
voice = "cedar"

[agents.sales]
instructions = "You are sales. [tone {SALES_HZ} Hz]"
voice = "ash"
"""


def heard(res: CallResult, min_ms: int = 100) -> list[tuple[int, float, int]]:
    """What the caller heard: (tone Hz rounded to 10, start in s after the 200 OK, length in ms) per tone of at
    least `min_ms`, in order, from the decoded RTP the phone received."""
    pcm, times = res.audio_16k(), res.rx_times()
    out: list[tuple[int, float, int]] = []
    run: list[tuple[int, float]] = []
    for k, w in enumerate([*A.windows(pcm, 16000, 0.02), None]):
        hz = int(round(w.freq, -1)) if w is not None and w.dbfs > -40 else 0
        if run and (hz == 0 or abs(hz - run[0][0]) > 20):
            if len(run) * 20 >= min_ms:
                freqs = sorted(f for f, _ in run)
                out.append((freqs[len(freqs) // 2], round(run[0][1] - res.t_answered, 2), len(run) * 20))
            run = []
        if hz and k < len(times):
            run.append((hz, times[k]))
    return out


def tones(res: CallResult) -> set[int]:
    return {hz for hz, _, _ in heard(res)}


def near(hz: int, target: int) -> bool:
    return abs(hz - target) <= 20


def write_agents(path, text: str) -> None:
    path.write_text(textwrap.dedent(text))


async def control(method: str, path: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.request(
            method, f"http://127.0.0.1:{CONTROL_PORT}{path}", json={} if method == "POST" else None) as r:
        return r.status, await r.json(content_type=None)


async def test_two_extensions_two_agents_at_once_and_an_unknown_agent_gets_default(make_bot, fake_model, tmp_path):
    fake = await fake_model(mode="tone", tone_hz=DEFAULT_HZ, tone_seconds=1.0, speed=4, tone_from_instructions=True)
    agents = tmp_path / "agents.toml"
    write_agents(agents, AGENTS)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, VOICEAI_GREETING="model",
                         VOICEAI_AGENTS_FILE=str(agents), VOICEAI_CONTROL_PORT=str(CONTROL_PORT))
    calls = {ext: asyncio.create_task(place_call(ext, phone=Phone("g722"), call_seconds=3.0,
                                                 workdir=tmp_path / ext))
             for ext in ("102", "103", "104")}
    await bot.wait_for_log("= call up in", count=3)
    status, listed = await control("GET", "/calls")                  # all three up at once
    results = {ext: await task for ext, task in calls.items()}
    for ext, res in results.items():
        assert res.ok, (ext, res.summary())
        print(f"\n[e2e] agents: {ext} heard {heard(res)} (Hz, s after 200 OK, ms)")
    first = {ext: heard(res)[0] for ext, res in results.items()}
    assert near(first["102"][0], SUPPORT_HZ), first      # Stasis(voiceai,agent=support)
    assert near(first["103"][0], SALES_HZ), first        # Set(VOICEAI_AGENT=sales)
    assert near(first["104"][0], DEFAULT_HZ), first      # an unknown name: the default agent
    assert status == 200 and sorted(c["agent"] for c in listed["calls"]) == ["default", "sales", "support"]
    others = {"102": (SALES_HZ, DEFAULT_HZ), "103": (SUPPORT_HZ, DEFAULT_HZ), "104": (SUPPORT_HZ, SALES_HZ)}
    for ext, res in results.items():
        assert not [hz for hz in tones(res) for o in others[ext] if near(hz, o)], (ext, heard(res))
    # what the model was told: each session got its agent's instructions and voice
    sessions = {s.config["audio"]["output"]["voice"]: s.config["instructions"] for s in fake.sessions}
    assert sessions["cedar"].endswith(f"[tone {SUPPORT_HZ} Hz]") and sessions["ash"].endswith(f"[tone {SALES_HZ} Hz]")
    msgs = log_messages(bot)
    chosen = [float(m.group(1)) for m in log_lines(bot, r"agent \S+ chosen in ([\d.]+) ms")]
    up = [int(m.group(1)) for m in log_lines(bot, r"= call up in (\d+) ms")]
    print(f"[e2e] agents: agent chosen in {chosen} ms (channel variables read over ARI); call up in {up} ms")
    assert ("! unknown agent 'no-such-agent' (Stasis argument); configured: default, support, sales: the call "
            "gets the default agent") in msgs
    for agent in ("support", "sales", "default"):
        assert f"-> agent {agent}, RTP" in msgs
    lines = [json.loads(x) for x in bot.log().splitlines() if x.startswith("{")]
    up_agents = {rec.get("agent") for rec in lines if rec["msg"].startswith("= call up in")}
    assert up_agents == {"support", "sales", "default"}
    await bot.wait_for_log("x call ended", count=3)
    starts = {}
    for path in (tmp_path / "transcripts").glob("*.jsonl"):
        start = json.loads(path.read_text().splitlines()[0])
        starts[start["agent"]] = start
    assert set(starts) == {"support", "sales", "default"}
    assert starts["default"]["agent_refused"].startswith("unknown agent 'no-such-agent'")
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{CONTROL_PORT}/metrics") as r:
        metrics = await r.text()
    for agent in ("support", "sales", "default"):
        assert f'voiceai_agent_calls_total{{agent="{agent}"}} 1.0' in metrics


async def test_reload_changes_the_next_call_not_the_live_one_and_a_bad_file_is_refused(make_bot, fake_model,
                                                                                         tmp_path):
    fake = await fake_model(mode="tone", tone_hz=DEFAULT_HZ, tone_seconds=0.8, speed=4, tone_from_instructions=True)
    agents = tmp_path / "agents.toml"
    write_agents(agents, AGENTS)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, VOICEAI_GREETING="model",
                         VOICEAI_AGENTS_FILE=str(agents), VOICEAI_CONTROL_PORT=str(CONTROL_PORT))
    # call A: the greeting; then, after the reload, the caller speaks and the bot answers (a second reply)
    phone_a = Phone("g722")
    phone_a.play(A.silence(3.0) + A.tone(1000, 0.6, amplitude=AMP))
    call_a = asyncio.create_task(place_call("102", phone=phone_a, call_seconds=6.0, workdir=tmp_path / "a"))
    await bot.wait_for_log("= call up in", count=1)
    await asyncio.sleep(0.5)
    write_agents(agents, AGENTS.replace(f"[tone {SUPPORT_HZ} Hz]", f"[tone {SUPPORT_NEW_HZ} Hz]"))
    bot.proc.send_signal(signal.SIGHUP)
    await bot.wait_for_log("= agents reloaded from")
    # call B, while A is still up, to the same extension: the new support agent
    res_b = await place_call("102", phone=Phone("g722"), call_seconds=2.0, workdir=tmp_path / "b")
    # a bad file: refused over SIGHUP and over the control API; the agents in use stay
    write_agents(agents, '[agents.support]\nvad_threshold = 7\n')
    bot.proc.send_signal(signal.SIGHUP)
    await bot.wait_for_log("! agents not reloaded, the previous ones stay")
    status, body = await control("POST", "/agents/reload")
    res_c = await place_call("102", phone=Phone("g722"), call_seconds=2.0, workdir=tmp_path / "c")
    res_a = await call_a
    for name, res in (("A (up across the reload)", res_a), ("B (after the reload)", res_b),
                      ("C (after the bad file)", res_c)):
        assert res.ok, (name, res.summary())
        print(f"\n[e2e] agents reload: call {name} heard {heard(res)} (Hz, s after 200 OK, ms)")
    a = heard(res_a)
    assert len(a) >= 2 and all(near(hz, SUPPORT_HZ) for hz, _, _ in a), a   # greeting and the reply after it
    assert a[-1][1] > 3.0, "the second reply came after the caller spoke, after the reload"
    assert near(heard(res_b)[0][0], SUPPORT_NEW_HZ) and not [h for h in tones(res_b) if near(h, SUPPORT_HZ)]
    assert near(heard(res_c)[0][0], SUPPORT_NEW_HZ), heard(res_c)
    assert status == 422 and "agent 'support': vad_threshold: Input should be less than or equal to 1" in body["error"]
    error_lines = [m for m in log_messages(bot).splitlines() if m.startswith("! agents not reloaded")]
    assert error_lines[0] == (f"! agents not reloaded, the previous ones stay: invalid VOICEAI_AGENTS_FILE: {agents}: "
                              "agent 'support': vad_threshold: Input should be less than or equal to 1")
