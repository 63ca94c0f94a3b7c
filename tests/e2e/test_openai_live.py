"""OpenAI GPT-Live end to end: sipp calls the real Asterisk sandbox, `voiceai-ari run` with
VOICEAI_PROVIDER=openai-live bridges the call to the fake GPT-Live server in this test's event loop.

The fake paces its replies against the input audio it receives (GPT-Live's session timeline moves only while
audio streams): these calls are heard only because the call feeds the model silence while the caller is quiet.

    scripts/test tests/e2e/test_openai_live.py
"""

from __future__ import annotations

import asyncio
import json

import pytest

from voiceai_ari.fakes.audio_gen import dominant_frequency

from . import analysis as A
from .caller import Phone, place_call
from .conftest import LIVE_KEY as KEY
from .test_call import no_leftovers, reply_coverage
from .test_conversation import frames_with_tone

pytestmark = pytest.mark.e2e
AMP = 5000

def live_bot(make_bot, fake, **settings):
    return make_bot(VOICEAI_PROVIDER="openai-live", OPENAI_API_KEY=KEY, VOICEAI_LIVE_URL=fake.url, **settings)

async def test_caller_talks_to_gpt_live_and_hears_the_reply(make_bot, fake_live, tmp_path):
    fake = await fake_live(mode="tone", tone_hz=440, tone_seconds=2.0, seed=7)
    bot = await live_bot(make_bot, fake)
    phone = Phone("g722")
    phone.play(A.tone(1000, 1.0, amplitude=AMP))        # then the phone sends silence (or nothing)
    res = await place_call("100", phone=phone, call_seconds=5.5, workdir=tmp_path)
    assert res.ok and not res.got_bye, res.summary()
    fs = fake.sessions[0]
    # session.start named our model, the 24 kHz format both ways, our voice, and the tools on the backend
    assert fs.config["model"] == "gpt-live-1.1"
    assert fs.config["audio"]["format"] == {"type": "audio/pcm", "rate": 24000}
    names = [t["name"] for t in fs.config["delegation"]["responses"]["tools"]]
    assert "hangup_call" in names and "send_dtmf" in names
    # the model heard the caller's 1 kHz at 24 kHz, and the input kept streaming through the caller's silence
    speech = A.tone_segments(bytes(fs.audio), 24000, 1000, tol_hz=10, min_dbfs=-30)
    assert speech.start_s is not None and abs(speech.tone_seconds - 1.0) < 0.08, speech
    assert abs(dominant_frequency(bytes(fs.audio[:int(speech.end_s * 24000) * 2]), 24000) - 1000) < 5
    assert fs.input_ms >= 4500, f"the call streamed {fs.input_ms} ms of input over a 5.5 s call"
    pcm, cov = reply_coverage(res, 440)
    first = next(m["_at"] for m in fs.sent if m["type"] == "session.output_transcript.delta")
    heard = frames_with_tone(res, 440)
    print(f"\n[e2e] gpt-live: reply at the caller {cov}; first reply delta -> first reply packet at the caller "
          f"{(heard[0] - first) * 1000:.0f} ms; input streamed {fs.input_ms} ms")
    assert cov.tone_seconds >= 0.9 * 2.0 and cov.coverage >= 0.9 and cov.longest_gap_ms <= 40, cov
    assert (await no_leftovers(bot)) == ([], [], [])
    assert KEY not in bot.log()
    # GPT-Live bills session time: the call priced the seconds the model reported, at $0.05 a minute
    lines = [json.loads(x) for x in next((tmp_path / "transcripts").glob("*.jsonl")).read_text().splitlines()]
    [end] = [x for x in lines if x["event"] == "call_end"]
    reported = max(m["usage"]["seconds"] for m in fs.sent if m["type"] == "session.usage.updated")
    print(f"[e2e] gpt-live cost: {end['usage']} -> {end['cost_usd']} USD")
    assert end["usage"]["live_seconds"] == reported and end["cost_usd"] == round(reported / 60 * 0.05, 6)

async def test_gpt_live_drop_mid_call_keeps_the_call_and_the_next_reply_plays(make_bot, fake_live, tmp_path):
    fake = await fake_live(mode="tone", tone_hz=440, tone_seconds=0.8)
    bot = await live_bot(make_bot, fake)
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.5, amplitude=AMP) + A.silence(2.5) + A.tone(1000, 0.5, amplitude=AMP))

    async def drop_after_first_reply():
        fs = await fake.wait_for_session(timeout=10)
        while not fs.sent_of("session.output_transcript.delta"):
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.2)          # the reply has played out
        fs.drop()
    mover = asyncio.create_task(drop_after_first_reply())
    res = await place_call("100", phone=phone, call_seconds=7.0, workdir=tmp_path)
    await mover
    assert not res.got_bye, "the call survives the drop: " + res.summary()
    assert len(fake.sessions) == 2, "a new session after the drop"
    seeded = fake.sessions[1].config.get("input") or []
    gap = fake.sessions[1].sent[0]["_at"] - fake.sessions[0].sent[-1]["_at"]
    bursts = A.tone_segments(res.audio_16k(), 16000, 440, tol_hz=10, min_dbfs=-40)
    print(f"\n[e2e] gpt-live drop: new session {gap * 1000:.0f} ms after the old one's last message, seeded with "
          f"{len(seeded)} earlier turns; {bursts.tone_seconds:.2f} s of reply audio over two replies")
    assert [m["role"] for m in seeded] == ["user", "assistant"]
    assert bursts.tone_seconds >= 1.5, "both replies were heard (2 x 0.8 s)"
    assert "GPT-Live session resumed" in bot.log()
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_gpt_live_barge_in_the_model_stops_and_the_caller_hears_it_stop(make_bot, fake_live, tmp_path):
    """No speech-started event and no flush: the bot goes quiet because the model stops sending. What the caller
    still hears after speaking up is the model's reaction time (the fake's VAD onset) plus our queue depth."""
    fake = await fake_live(mode="tone", tone_hz=440, tone_seconds=6.0)
    bot = await live_bot(make_bot, fake)
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.6, amplitude=AMP) + A.silence(1.9) + A.tone(1000, 1.0, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=4.5, workdir=tmp_path)
    assert res.ok, res.summary()
    fs = fake.sessions[0]
    [stopped] = fs.stopped_at
    next_reply = fs.sent_of("session.output_transcript.delta")[1]["_at"]    # after the caller's second turn
    tone_times = [t for t in frames_with_tone(res, 440) if t < next_reply]
    assert tone_times and tone_times[0] < stopped, "the reply was playing when the caller spoke"
    tail_ms = (tone_times[-1] - stopped) * 1000
    print(f"\n[e2e] gpt-live barge-in: the caller heard {len(tone_times) * 20} ms of the 6 s reply; its last packet "
          f"{tail_ms:.0f} ms after the model stopped (no flush: what was queued played out)")
    assert tail_ms <= 150, "at most one ~100 ms delta was queued at the caller's side"
    assert not [t for t in tone_times if stopped + 0.2 < t], "bot audio did not resume"
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_offline_demo_with_openai_live_provider_echoes(make_bot, tmp_path):
    bot = await make_bot(VOICEAI_PROVIDER="openai-live")
    assert "OPENAI_API_KEY is not set" in bot.log() and "OFFLINE DEMO MODEL" in bot.log()
    phone = Phone("g722")
    phone.play(A.tone(1000, 1.0, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=4.5, workdir=tmp_path)
    assert res.ok, res.summary()
    pcm, cov = reply_coverage(res, 1000)
    print(f"\n[e2e] gpt-live offline demo: the caller heard their 1 s tone back: {cov}")
    assert cov.start_s > 1.2 and cov.tone_seconds >= 0.9, cov
    assert (await no_leftovers(bot)) == ([], [], [])
