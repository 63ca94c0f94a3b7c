"""Transfers that fail, through real calls: the caller stays with the bot and keeps hearing it, the model is
told why, the keypad works afterwards, and the control API answers with the outcome.

The failing endpoint is the caller's own device refusing the SIP REFER of an ARI redirect (sipp answers it
405, as a trunk without transfer support does); the failing dialplan location is an extension that does
not exist (Asterisk would hang the caller up after a `continue` there).
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from . import analysis as A
from .caller import CallResult, Phone, place_call
from .conftest import E2E_KEY, ended_media_stats
from .test_call import no_leftovers

pytestmark = pytest.mark.e2e
AMP = 5000
PORT = 18093   # control API


async def api(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, f"http://127.0.0.1:{PORT}{path}", json=body,
                             timeout=aiohttp.ClientTimeout(total=30)) as r:
            return r.status, await r.json(content_type=None)


async def the_call(timeout: float = 10.0) -> dict:
    for _ in range(int(timeout / 0.05)):
        _, calls = await api("GET", "/calls")
        if calls["calls"]:
            return calls["calls"][0]
        await asyncio.sleep(0.05)
    raise AssertionError("no call in GET /calls")


def loud_frames(res: CallResult) -> list[tuple[float, float]]:
    """(arrival time, dominant frequency) of every received 20 ms packet with audio above -40 dBFS."""
    pkts = A.in_sequence_order(res.voice())
    when = {id(p): t for t, p in res.rx}
    out = []
    for k, w in enumerate(A.windows(A.decode_g722(pkts), 16000, 0.02)):
        if k < len(pkts) and w.dbfs > -40:
            out.append((when[id(pkts[k])], w.freq))
    return out


def tone_times(frames: list[tuple[float, float]], hz: float) -> list[float]:
    return [t for t, f in frames if abs(f - hz) <= 10]


def transcript_events(tmp_path, event: str) -> list[dict]:
    [path] = (tmp_path / "transcripts").glob("*.jsonl")
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["event"] == event]


async def test_refused_redirect_keeps_the_caller_talking_to_the_bot(make_bot, fake_model, tmp_path):
    script = [{"audio": "tone", "tone_hz": 440, "tone_seconds": 1.0, "transcript": "Let me put you through.",
               "function_call": {"name": "transfer_call", "arguments": {"target": "desk"}}},
              {"audio": "tone", "tone_hz": 660, "tone_seconds": 1.0, "transcript": "Sorry, that did not work."},
              {"audio": "tone", "tone_hz": 880, "tone_seconds": 0.6, "transcript": "You pressed five."}]
    fake = await fake_model(mode="tone", speed=4, script=script)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, VOICEAI_CONTROL_PORT=str(PORT),
                         VOICEAI_TRANSFER_TARGETS='{"desk": "PJSIP/nosuch"}')
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.5, amplitude=AMP))
    loop = asyncio.get_running_loop()
    call = asyncio.create_task(place_call("100", phone=phone, call_seconds=9.0, workdir=tmp_path, refer_status=405))
    summary = await the_call()
    while not fake.sessions:
        await asyncio.sleep(0.02)
    fs = fake.sessions[0]
    out = await fs.wait_for("conversation.item.create", timeout=15)   # the tool's result
    t_verdict = loop.time()
    status, detail = await api("GET", f"/calls/{summary['id']}")
    assert status == 200 and detail["state"] == "talking", detail["state"]
    await asyncio.sleep(1.5)                       # the model's reply to the failure is heard, then a key
    phone.send_dtmf("5")
    res = await call

    assert res.ok and not res.got_bye, "the caller is still connected to the bot: " + res.summary()
    assert res.sip_time("REFER", "recv") is not None and res.sip_time("SIP/2.0 405", "sent") is not None
    assert out["item"]["type"] == "function_call_output"
    error = json.loads(out["item"]["output"])["error"]
    assert "desk refused the transfer" in error and "still on the line" in error
    [t_tool, _] = fs.sent_of("response.function_call_arguments.done")[0]
    texts = [e["item"]["content"][0]["text"] for e in fs.events_of("conversation.item.create")
             if e["item"]["type"] == "message"]
    assert texts == ["The caller pressed 5 on the keypad."], "the keypad works after the failed transfer"

    frames = loud_frames(res)
    farewell, sorry, pressed = (tone_times(frames, hz) for hz in (440, 660, 880))
    assert len(farewell) * 20 >= 980, "the line before the transfer was played out"
    assert len(sorry) * 20 >= 980 and sorry[0] > farewell[-1], "the reply to the failure was heard"
    assert len(pressed) * 20 >= 580 and pressed[0] > sorry[-1], "the reply to the key was heard"
    gaps = [b - a for (a, _), (b, _) in zip(frames, frames[1:])]
    longest = max(gaps)
    # the caller's audio reached the bot at the full rate after the failure (a redirect inside the bridge
    # leaves Asterisk's Stasis thread reading half of the caller's frames for the rest of the call)
    await bot.wait_for_log("x call ended")
    [stats] = ended_media_stats(bot)
    talk_s = res.sip_time("BYE", "sent") - res.t_answered
    print(f"\n[e2e] refused redirect: tool call -> failure verdict at the model {(t_verdict - t_tool) * 1000:.0f} ms "
          f"(incl. the 1 s farewell at 4x); farewell end -> reply to the failure {(sorry[0] - farewell[-1]) * 1000:.0f} ms; "
          f"longest silence {longest * 1000:.0f} ms; caller->bot {stats['rx_accepted']} packets in {talk_s:.1f} s")
    assert longest < 2.0, "the caller never sat in silence for long"
    assert stats["rx_accepted"] >= 0.9 * talk_s / 0.02
    [tr] = transcript_events(tmp_path, "transfer")
    print(f"[e2e] refused redirect: transfer request -> verdict {tr['ms']} ms")
    assert tr["ok"] is False and tr["target"] == "desk" and tr["ms"] < 2000
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_control_api_transfer_to_a_missing_extension_fails_and_the_call_goes_on(make_bot, fake_model,
                                                                                        tmp_path):
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=0.5, speed=4)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, VOICEAI_CONTROL_PORT=str(PORT),
                         VOICEAI_TRANSFER_TARGETS='{"nowhere": "from-caller,999,1"}')
    phone = Phone("g722")
    phone.play(A.silence(3.0) + A.tone(1000, 0.5, amplitude=AMP))   # speaks after the failed transfer
    loop = asyncio.get_running_loop()
    call = asyncio.create_task(place_call("100", phone=phone, call_seconds=6.0, workdir=tmp_path))
    summary = await the_call()
    await asyncio.sleep(1.0)
    t0 = loop.time()
    status, body = await api("POST", f"/calls/{summary['id']}/transfer", {"target": "nowhere"})
    took = loop.time() - t0
    print(f"\n[e2e] control API transfer to a missing extension: {status} {body} after {took * 1000:.0f} ms")
    assert status == 502 and "from-caller,999,1 does not exist" in body["error"] and took < 1.0
    assert (await api("GET", f"/calls/{summary['id']}"))[1]["state"] == "talking"
    res = await call
    assert res.ok and not res.got_bye, "Asterisk did not hang the caller up: " + res.summary()
    reply = [t for t, f in loud_frames(res) if abs(f - 440) <= 10 and t > t0]
    assert len(reply) * 20 >= 480, "the bot answered the caller after the failed transfer"
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_redirect_the_far_end_takes_ends_the_call_as_a_transfer(make_bot, fake_model, tmp_path):
    """The other side of the verdict: Asterisk puts the caller back into the bridge when the REFER's
    outcome comes, success or not; a StasisEnd right after it is a transfer, not a refusal."""
    fake = await fake_model(mode="tone", speed=4, script=[
        {"audio": "tone", "tone_hz": 440, "tone_seconds": 1.0, "transcript": "Putting you through.",
         "function_call": {"name": "transfer_call", "arguments": {"target": "desk"}}}])
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url,
                         VOICEAI_TRANSFER_TARGETS='{"desk": "PJSIP/desk"}')
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.5, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=9.0, workdir=tmp_path, refer_status=202)
    assert res.ok, res.summary()
    assert res.sip_time("REFER", "recv") is not None and res.sip_time("NOTIFY", "sent") is not None
    assert "transferred to desk" in await bot.wait_for_log("x call ended")
    [tr] = transcript_events(tmp_path, "transfer")
    print(f"\n[e2e] accepted redirect: caller gone {tr['ms']} ms after the transfer request")
    assert tr["ok"] is True and tr["ms"] < 1000
    outputs = [e for e in fake.sessions[0].events_of("conversation.item.create")
               if e["item"]["type"] == "function_call_output"]
    assert outputs == [], "a transfer that happened ends the conversation: no tool result, no new response"
    assert (await no_leftovers(bot)) == ([], [], [])
