"""Operating the bot: the control API during a real call, metrics after it, the fallback when the model is
down, an outbound call through POST /calls (allowlisted targets only), and the offline demo made visible."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess

import aiohttp
import pytest

from . import analysis as A
from .caller import Phone, ari, place_call
from .conftest import E2E_KEY
from .test_call import no_leftovers

pytestmark = pytest.mark.e2e
TOKEN = "ctl-token-for-e2e-0123"
PORT = 18089


async def api(method: str, path: str, body: dict | None = None,
              headers: dict[str, str] | None = None, data: str | None = None) -> tuple[int, object]:
    """A control API request; a POST carries a JSON body ({} if none given) unless `data` is given."""
    if method == "POST" and body is None and data is None:
        body = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s:
        async with s.request(method, f"http://127.0.0.1:{PORT}{path}", json=body, data=data, headers=headers) as r:
            text = await r.text()
            return r.status, (json.loads(text) if "json" in r.content_type else text)


async def completed_responses(fs, n: int, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if len([r for r in fs.responses if r["status"] == "completed"]) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{n} completed responses expected: {[r['status'] for r in fs.responses]}")


async def wait_for_call(timeout: float = 10.0) -> dict:
    for _ in range(int(timeout / 0.05)):
        _, calls = await api("GET", "/calls")
        if calls["calls"]:
            return calls["calls"][0]
        await asyncio.sleep(0.05)
    raise AssertionError("no call showed up in GET /calls")


async def test_control_api_steers_a_live_call_and_metrics_count_it(make_bot, fake_model, tmp_path):
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=0.5, speed=4)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, VOICEAI_CONTROL_PORT=str(PORT),
                         VOICEAI_CONTROL_TOKEN=TOKEN, VOICEAI_GREETING="model")
    phone = Phone("g722")
    phone.play(A.silence(1.5) + A.tone(1000, 0.5, amplitude=5000))
    call = asyncio.create_task(place_call("100", phone=phone, call_seconds=15.0, workdir=tmp_path))
    summary = await wait_for_call()
    await asyncio.sleep(2.5)
    status, detail = await api("GET", f"/calls/{summary['id']}")
    assert status == 200 and detail["state"] == "talking" and detail["codec"] == "g722"
    assert detail["rtp"]["rx_packets"] > 50 and detail["rtp"]["tx_packets"] > 50
    fs = fake.sessions[0]
    assert detail["model_session_id"] == fs.id
    assert [e["event"] for e in detail["transcript"]][0] == "call_start"
    await completed_responses(fs, 2)   # greeting and the reply to the caller: the operator's line comes third
    assert (await api("POST", f"/calls/{summary['id']}/say", {"text": "Your order has shipped."}))[0] == 202
    said = await fs.wait_for("conversation.item.create")
    assert said["item"]["role"] == "system" and "Your order has shipped." in said["item"]["content"][0]["text"]
    assert (await api("POST", f"/calls/{summary['id']}/instructions", {"text": "Speak French."}))[0] == 202
    upd = [e for e in fs.events_of("session.update") if e["session"].get("instructions") == "Speak French."]
    for _ in range(40):
        if upd:
            break
        await asyncio.sleep(0.05)
        upd = [e for e in fs.events_of("session.update") if e["session"].get("instructions") == "Speak French."]
    assert upd and fs.config["instructions"] == "Speak French."
    assert (await api("POST", f"/calls/{summary['id']}/transfer", {"target": "nowhere"}))[0] == 422
    await completed_responses(fs, 3)
    await asyncio.sleep(0.6)           # the operator's line is played out
    assert (await api("POST", f"/calls/{summary['id']}/hangup"))[0] == 202
    res = await call
    assert res.got_bye, "hangup through the control API ends the call: " + res.summary()
    assert (await no_leftovers(bot)) == ([], [], [])

    _, text = await api("GET", "/metrics")
    metrics = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    scrape = "\n".join(line for line in text.splitlines() if line.startswith("voiceai_") and "bucket" not in line)
    print("\n[e2e] /metrics after the call:\n" + scrape)
    assert metrics["voiceai_calls_total"] == 1 and metrics["voiceai_calls_active"] == 0
    assert metrics["voiceai_call_setup_seconds_count"] == 1
    assert metrics['voiceai_rtp_packets_total{direction="in"}'] > 100
    assert metrics['voiceai_audio_seconds_total{direction="out"}'] >= 1.2   # greeting, reply, operator line (0.5 s each)
    assert metrics["voiceai_turn_latency_seconds_count"] >= 1
    assert metrics['voiceai_model_tokens_total{kind="audio_out"}'] > 0 and metrics["voiceai_model_cost_usd_total"] > 0
    # the shared send clock ticked all call long (~50 per second) and says how late its ticks ran
    ticks = metrics["voiceai_media_tick_lateness_seconds_count"]
    assert ticks >= 100 and metrics['voiceai_media_tick_lateness_seconds_bucket{le="+Inf"}'] == ticks
    on_time = metrics['voiceai_media_tick_lateness_seconds_bucket{le="0.005"}']
    print(f"[e2e] send clock: {ticks:.0f} ticks, {on_time:.0f} within 5 ms of their deadline, "
          f"re-anchors {metrics['voiceai_media_clock_reanchors_total']:.0f}")
    assert TOKEN not in bot.log()
    status, _ = await api("GET", "/readyz")
    assert status == 200


async def test_fallback_when_the_model_is_down_apologises_and_hangs_up(make_bot, tmp_path):
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL="ws://127.0.0.1:9/v1/realtime")
    phone = Phone("g722")
    res = await place_call("100", phone=phone, call_seconds=15.0, workdir=tmp_path)
    assert res.got_bye, res.summary()
    heard = A.sound_seconds(res.audio_16k(), 16000)
    print(f"\n[e2e] fallback: {heard * 1000:.0f} ms of apology, then BYE after "
          f"{res.sip_time('BYE', 'recv') - res.t_answered:.1f} s")
    assert heard > 1.0, "the caller heard the apology (im-sorry, please-try-again)"
    assert "fallback (hangup)" in bot.log()
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_fallback_can_hand_the_caller_to_a_human(make_bot, tmp_path):
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL="ws://127.0.0.1:9/v1/realtime",
                         VOICEAI_FALLBACK="transfer", VOICEAI_FALLBACK_TARGET="from-caller,200,1",
                         VOICEAI_FALLBACK_SOUND="")
    phone = Phone("g722")
    res = await place_call("100", phone=phone, call_seconds=4.0, workdir=tmp_path)
    assert not res.got_bye, "the caller is with extension 200 (demo-congrats), not hung up"
    assert A.sound_seconds(res.audio_16k(), 16000) > 1.5
    assert "fallback (transfer)" in bot.log()
    assert (await no_leftovers(bot)) == ([], [], [])


async def metric(name: str) -> float:
    _, text = await api("GET", "/metrics")
    [value] = [float(line.split(" ")[1]) for line in text.splitlines() if line.startswith(name + " ")]
    return value


async def our_outbound_channels() -> list[str]:
    """Asterisk's channels that dial our test's SIP listeners (5091: sipp, 5093: a silent socket) or a Local."""
    _, chans = await ari("GET", "/channels")
    return [c["name"] for c in chans if c["name"].startswith(("PJSIP/anonymous", "Local/"))]


async def test_outbound_call_through_the_control_api(make_bot, fake_model, tmp_path):
    """POST /calls dials only allowlisted targets: dial strings are refused and nothing is dialled; a ringing
    call holds the one slot (VOICEAI_MAX_CALLS=1) until Asterisk gives it up; then the "ivr" target (sipp as
    UAS) is dialled and, when it answers, the bot talks to it."""
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=0.5, speed=4)
    targets = {"ivr": "PJSIP/anonymous/sip:ivr@127.0.0.1:5091", "silent": "PJSIP/anonymous/sip:silent@127.0.0.1:5093"}
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, VOICEAI_CONTROL_PORT=str(PORT),
                         VOICEAI_CONTROL_TOKEN=TOKEN, VOICEAI_GREETING="model", VOICEAI_MAX_CALLS="1",
                         VOICEAI_ORIGINATE_TARGETS=json.dumps(targets))
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # gets INVITEs, never answers: a phone ringing
    silent.bind(("127.0.0.1", 5093))
    silent.setblocking(False)

    def invites() -> int:
        n = 0
        while True:
            try:
                n += silent.recv(65536).startswith(b"INVITE ")
            except BlockingIOError:
                return n
    uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", "5091", "-mi", "127.0.0.1",
                            "-mp", "16200", "-cp", "8931", "-m", "1", "-nostdin", "-timeout", "30s"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        await asyncio.sleep(0.5)
        # refused, and nothing is dialled: a free dial string, a dial string as a target, a cross-site page
        status, body = await api("POST", "/calls", {"endpoint": targets["silent"]})
        assert status == 422 and "free dial strings are refused" in json.dumps(body), body
        status, body = await api("POST", "/calls", {"target": "Local/300@from-caller"})
        assert status == 422 and body["error"] == "unknown target; allowed: ivr, silent", body
        status, _ = await api("POST", "/calls", data=json.dumps({"target": "silent"}),
                              headers={"Content-Type": "text/plain"})
        assert status == 415
        status, _ = await api("POST", "/calls", {"target": "silent"}, headers={"Origin": "http://evil.example"})
        assert status == 403
        await asyncio.sleep(1.0)
        assert invites() == 0 and await our_outbound_channels() == [], "a refused request dialled"

        # a ringing call holds the only slot: a second POST is refused until Asterisk gives the first up
        t0 = asyncio.get_running_loop().time()
        status, body = await api("POST", "/calls", {"target": "silent", "timeout_s": 2})
        assert status == 202 and body["id"].startswith("voiceai-out-"), body
        status, body = await api("POST", "/calls", {"target": "ivr"})
        assert status == 503 and "ringing" in body["error"], body
        assert await metric("voiceai_calls_originating") == 1
        while await metric("voiceai_calls_originating") and asyncio.get_running_loop().time() - t0 < 10:
            await asyncio.sleep(0.1)
        freed = asyncio.get_running_loop().time() - t0
        print(f"\n[e2e] unanswered outbound call (timeout 2 s): slot freed after {freed:.1f} s "
              f"(ChannelDestroyed; the fallback expiry would be 32 s)")
        assert freed < 10, "Asterisk's ChannelDestroyed of the unanswered call frees its slot"
        assert invites() >= 1, "the allowlisted target was dialled"

        status, body = await api("POST", "/calls", {"target": "ivr"})
        assert status == 202, body
        call = await wait_for_call()
        assert call["id"] == body["id"], "the answered call took over its own slot (max 1) and became a call"
        fs = await fake.wait_for_session(timeout=10)
        await fs.wait_for("response.create", timeout=10)       # the bot greets whoever answered
        for _ in range(100):
            if fs.responses:
                break
            await asyncio.sleep(0.05)
        assert fs.responses and fs.responses[0]["status"] == "completed"
        assert (await api("POST", f"/calls/{call['id']}/hangup"))[0] == 202
        assert await asyncio.to_thread(uas.wait, 15) == 0
    finally:
        silent.close()
        if uas.poll() is None:
            uas.kill()
    assert "outbound call " + body["id"] in bot.log()
    assert await metric("voiceai_calls_refused_total") == 0
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_offline_demo_is_visible(make_bot, tmp_path):
    """No OPENAI_API_KEY: /readyz names the offline demo, /metrics has its gauge, and every call logs it."""
    from voiceai_ari.cli import DEMO_CALL_WARNING
    bot = await make_bot(VOICEAI_CONTROL_PORT=str(PORT), VOICEAI_CONTROL_TOKEN=TOKEN)
    status, ready = await api("GET", "/readyz")
    assert status == 200 and ready["model"] == "offline-demo"
    assert await metric("voiceai_offline_demo") == 1
    for n in (1, 2):
        res = await place_call("100", phone=Phone("g722"), call_seconds=1.0, workdir=tmp_path)
        assert res.ok, res.summary()
        assert bot.log().count(DEMO_CALL_WARNING) == n
    assert (await no_leftovers(bot)) == ([], [], [])
