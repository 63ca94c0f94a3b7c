"""Gemini Live end to end: sipp calls the real Asterisk sandbox, `voiceai-ari run` with
VOICEAI_PROVIDER=gemini-live bridges the call to the fake Gemini Live server in this test's event loop.

    scripts/test tests/e2e/test_gemini.py
"""

from __future__ import annotations

import asyncio

import pytest

from voiceai_ari.fakes.audio_gen import dominant_frequency

from . import analysis as A
from .caller import Phone, place_call
from .conftest import GEMINI_KEY as KEY
from .test_call import no_leftovers, reply_coverage
from .test_conversation import frames_with_tone

pytestmark = pytest.mark.e2e
AMP = 5000


def gemini_bot(make_bot, fake, **settings):
    return make_bot(VOICEAI_PROVIDER="gemini-live", GEMINI_API_KEY=KEY, VOICEAI_GEMINI_URL=fake.url, **settings)


async def test_caller_talks_to_gemini_and_hears_the_reply(make_bot, fake_gemini, tmp_path):
    fake = await fake_gemini(mode="tone", tone_hz=440, tone_seconds=2.0, speed=4, seed=7)
    bot = await gemini_bot(make_bot, fake)
    phone = Phone("g722")
    phone.play(A.tone(1000, 1.0, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=5.0, workdir=tmp_path)
    assert res.ok and not res.got_bye, res.summary()
    fs = fake.sessions[0]
    # the model got the caller's 1 kHz as 16 kHz PCM, and the setup named our model, voice and tools
    assert fs.setup["model"] == "models/gemini-3.8-live"
    names = [d["name"] for d in fs.setup["tools"][0]["functionDeclarations"]]
    assert "hangup_call" in names and "send_dtmf" in names
    speech = A.tone_segments(bytes(fs.audio), 16000, 1000, tol_hz=10, min_dbfs=-30)
    assert speech.start_s is not None and abs(speech.tone_seconds - 1.0) < 0.08, speech
    assert abs(dominant_frequency(bytes(fs.audio[:int(speech.end_s * 16000) * 2]), 16000) - 1000) < 5
    # the caller heard the 24 kHz reply, resampled and sent as G.722: >= 90 % of it, no gap > 40 ms
    pcm, cov = reply_coverage(res, 440)
    first_reply = next(t for t, m in fs.sent if "serverContent" in m and "modelTurn" in m["serverContent"])
    heard = frames_with_tone(res, 440)
    print(f"\n[e2e] gemini: reply at the caller {cov}; first modelTurn -> first reply packet at the caller "
          f"{(heard[0] - first_reply) * 1000:.0f} ms")
    assert cov.tone_seconds >= 0.9 * 2.0 and cov.coverage >= 0.9 and cov.longest_gap_ms <= 40, cov
    assert abs(A.tone_level_dbfs(pcm, 16000, 440, start=cov.start_s + 0.1, end=cov.end_s - 0.1) - (-12.0)) < 2.0
    assert (await no_leftovers(bot)) == ([], [], [])
    assert KEY not in bot.log()
    assert "cost_usd" in (tmp_path / "transcripts").glob("*.jsonl").__next__().read_text()


async def test_barge_in_stops_gemini_at_the_caller(make_bot, fake_gemini, tmp_path):
    fake = await fake_gemini(mode="tone", tone_hz=440, tone_seconds=6.0, speed=4, seed=3)
    bot = await gemini_bot(make_bot, fake)
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.6, amplitude=AMP) + A.silence(1.9) + A.tone(1000, 1.0, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=3.9, workdir=tmp_path)
    assert res.ok, res.summary()
    fs = fake.sessions[0]
    [barge] = [t for t, m in fs.sent if m.get("serverContent", {}).get("interrupted")]
    tone_times = frames_with_tone(res, 440)
    assert tone_times and tone_times[0] < barge, "the reply was playing when the caller spoke"
    stop_ms = ([t for t in tone_times if t < barge + 0.5][-1] - barge) * 1000
    print(f"\n[e2e] gemini barge-in: bot audio stopped {stop_ms:.0f} ms after the server's `interrupted`")
    assert stop_ms <= 100
    assert not [t for t in tone_times if barge + 0.1 < t < barge + 1.0], "bot audio resumed"
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_go_away_mid_call_resumes_and_the_next_reply_plays(make_bot, fake_gemini, tmp_path):
    fake = await fake_gemini(mode="tone", tone_hz=440, tone_seconds=0.8, speed=4)
    bot = await gemini_bot(make_bot, fake)
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.5, amplitude=AMP) + A.silence(2.5) + A.tone(1000, 0.5, amplitude=AMP))

    async def go_away_after_first_reply():
        fs = await fake.wait_for_session(timeout=10)
        while not [m for _, m in fs.sent if m.get("sessionResumptionUpdate", {}).get("resumable")]:
            await asyncio.sleep(0.05)
        await fs.go_away(0.3)
    mover = asyncio.create_task(go_away_after_first_reply())
    res = await place_call("100", phone=phone, call_seconds=6.0, workdir=tmp_path)
    await mover
    assert not res.got_bye, "the call survives the goAway: " + res.summary()
    assert len(fake.sessions) == 2 and fake.sessions[1].resumed_from, "resumed with the session's handle"
    first_ws_end = max(t for t, _ in fake.sessions[0].sent)
    resumed = fake.sessions[1].sent[0][0]
    bursts = A.tone_segments(res.audio_16k(), 16000, 440, tol_hz=10, min_dbfs=-40)
    print(f"\n[e2e] gemini goAway: resumed {(resumed - first_ws_end) * 1000:.0f} ms after the old connection's "
          f"last message; {bursts.tone_seconds:.2f} s of reply audio over two replies")
    assert bursts.tone_seconds >= 1.5, "both replies were heard (2 x 0.8 s)"
    assert "Gemini session resumed" in bot.log()
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_offline_demo_with_gemini_provider_echoes(make_bot, tmp_path):
    bot = await make_bot(VOICEAI_PROVIDER="gemini-live")
    assert "GEMINI_API_KEY is not set" in bot.log() and "OFFLINE DEMO MODEL" in bot.log()
    phone = Phone("g722")
    phone.play(A.tone(1000, 1.0, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=4.5, workdir=tmp_path)
    assert res.ok, res.summary()
    pcm, cov = reply_coverage(res, 1000)
    assert cov.start_s > 1.2 and cov.tone_seconds >= 0.9, cov
    assert (await no_leftovers(bot)) == ([], [], [])
