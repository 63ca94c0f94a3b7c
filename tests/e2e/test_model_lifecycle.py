"""The model side going quiet or wrong, through real calls: an inactive caller is prompted, then left; a
response that fails (`response.done` status "failed") is apologised for, or, when fatal or repeated, ends in
the fallback. What the caller heard is read from the RTP the phone received."""

from __future__ import annotations

import json

import aiohttp
import pytest

from voiceai_ari.call.conversation import APOLOGY

from . import analysis as A
from .caller import CallResult, Phone, place_call
from .conftest import E2E_KEY
from .test_call import no_leftovers
from .test_conversation import frames_with_tone, transcript_lines

pytestmark = pytest.mark.e2e
AMP = 5000
CONTROL_PORT = 18090


def bursts(times: list[float], gap: float = 0.2) -> list[tuple[float, float]]:
    """(first, last) arrival time of each run of frames with no gap longer than `gap`."""
    out: list[tuple[float, float]] = []
    for t in times:
        if out and t - out[-1][1] <= gap:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


def speech_before_bye(res: CallResult) -> float:
    """Seconds of loud audio other than the model's 440/660 Hz tones (Asterisk's apology sound)."""
    ws = [w for w in A.windows(res.audio_16k(), 16000, 0.02) if w.dbfs > -40]
    return sum(0.02 for w in ws if min(abs(w.freq - 440), abs(w.freq - 660)) > 30)


async def test_silent_caller_is_prompted_then_left(make_bot, fake_model, tmp_path):
    # each idle timeout: the server's own answer (300 Hz, must never be heard), then ours
    own = {"audio": "tone", "tone_hz": 300, "tone_seconds": 1.0}
    prompt = {"audio": "tone", "tone_hz": 660, "tone_seconds": 0.6, "transcript": "Are you still there?"}
    goodbye = {"audio": "tone", "tone_hz": 880, "tone_seconds": 1.0, "transcript": "Goodbye!"}
    fake = await fake_model(mode="tone", speed=4, seed=5, script=[own, prompt, own, prompt, own, goodbye])
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url,
                         VOICEAI_IDLE_TIMEOUT_MS="1200", VOICEAI_IDLE_PROMPTS="2", VOICEAI_IDLE_PROMPT="Still there?",
                         VOICEAI_IDLE_GOODBYE="Say goodbye.")
    phone = Phone("g722")                          # the caller says nothing at all
    res = await place_call("100", phone=phone, call_seconds=15.0, workdir=tmp_path)
    assert res.got_bye, "the bot hangs up on the silent caller: " + res.summary()
    bye_at = res.sip_time("BYE", "recv")
    prompts = bursts(frames_with_tone(res, 660))
    byes = bursts(frames_with_tone(res, 880))
    own_heard = frames_with_tone(res, 300)
    gaps = [b[0] - a[1] for a, b in zip(prompts, prompts[1:] + byes[:1])]
    print(f"\n[e2e] idle caller: prompts heard at {[round(p[0] - res.t_answered, 2) for p in prompts]} s "
          f"({[round((p[1] - p[0]) * 1000 + 20) for p in prompts]} ms), goodbye at "
          f"{[round(b[0] - res.t_answered, 2) for b in byes]} s, silence between them {[round(g, 2) for g in gaps]} s, "
          f"BYE {(bye_at - byes[-1][1]) * 1000:.0f} ms after the goodbye's last packet")
    assert len(prompts) == 2, f"prompted twice: {prompts}"
    assert all(0.55 <= p[1] - p[0] + 0.02 <= 0.65 for p in prompts), "each prompt heard in full"
    assert len(byes) == 1 and byes[0][1] - byes[0][0] + 0.02 >= 0.98, "the whole goodbye was played"
    assert not own_heard, "the server's own idle answer is never heard (replaced, not doubled)"
    assert all(1.1 <= g <= 1.9 for g in gaps), f"each prompt ~1.2 s after the last words ended: {gaps}"
    assert byes[0][0] > prompts[-1][1] and 0 < bye_at - byes[0][1] < 0.5
    fs = fake.sessions[0]
    assert len(fs.sent_of("input_audio_buffer.timeout_triggered")) == 3
    creates = [e["response"]["instructions"] for e in fs.events_of("response.create")]
    assert creates == ["Still there?", "Still there?", "Say goodbye."]
    assert len(fs.events_of("response.cancel")) == 3 and not fs.events_of("error")
    log = transcript_lines(tmp_path)
    idle = [(e["count"], e["action"]) for e in log if e["event"] == "idle_timeout"]
    assert idle == [(1, "prompt"), (2, "prompt"), (3, "goodbye")]
    assert [e["text"] for e in log if e["event"] == "bot"] == ["Are you still there?"] * 2 + ["Goodbye!"]
    assert log[-1]["event"] == "call_end" and log[-1]["reason"] == "caller inactive"
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_the_count_starts_again_when_the_caller_speaks(make_bot, fake_model, tmp_path):
    own = {"audio": "tone", "tone_hz": 300, "tone_seconds": 1.0}
    prompt = {"audio": "tone", "tone_hz": 660, "tone_seconds": 0.4}
    answer = {"audio": "tone", "tone_hz": 440, "tone_seconds": 0.5}
    goodbye = {"audio": "tone", "tone_hz": 880, "tone_seconds": 0.6}
    fake = await fake_model(mode="tone", speed=4, seed=6,
                            script=[own, prompt, answer, own, prompt, own, prompt, own, goodbye])
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url,
                         VOICEAI_IDLE_TIMEOUT_MS="1200", VOICEAI_IDLE_PROMPTS="2")
    phone = Phone("g722")
    phone.play(A.silence(2.3) + A.tone(1000, 0.5, amplitude=AMP))   # answers the first prompt, then silence
    res = await place_call("100", phone=phone, call_seconds=15.0, workdir=tmp_path)
    assert res.got_bye, res.summary()
    prompts, answers = bursts(frames_with_tone(res, 660)), bursts(frames_with_tone(res, 440))
    byes = bursts(frames_with_tone(res, 880))
    t = res.t_answered
    print(f"\n[e2e] idle count reset: prompt at {round(prompts[0][0] - t, 2)} s, the caller answered, the bot at "
          f"{[round(a[0] - t, 2) for a in answers]} s, then prompts at {[round(p[0] - t, 2) for p in prompts[1:]]} s "
          f"and the goodbye at {[round(b[0] - t, 2) for b in byes]} s")
    assert len(answers) == 1 and len(prompts) == 3 and len(byes) == 1
    assert prompts[0][1] < answers[0][0] < prompts[1][0] < prompts[2][0] < byes[0][0]
    log = transcript_lines(tmp_path)
    idle = [(e["count"], e["action"]) for e in log if e["event"] == "idle_timeout"]
    assert idle == [(1, "prompt"), (1, "prompt"), (2, "prompt"), (3, "goodbye")]
    assert log[-1]["reason"] == "caller inactive"
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_a_failed_response_is_apologised_for_and_the_next_turn_works(make_bot, fake_model, tmp_path):
    apology = {"audio": "tone", "tone_hz": 660, "tone_seconds": 0.8, "transcript": "Sorry, say again?"}
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=0.6, speed=4,
                            fail_responses=["rate_limit_exceeded"], script=[apology])
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url)
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.5, amplitude=AMP) + A.silence(2.5) + A.tone(1000, 0.5, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=5.5, workdir=tmp_path)
    assert res.ok and not res.got_bye, res.summary()
    sorry, answer = bursts(frames_with_tone(res, 660)), bursts(frames_with_tone(res, 440))
    print(f"\n[e2e] failed response: apology heard at {[round(s[0] - res.t_answered, 2) for s in sorry]} s, "
          f"the next turn's answer at {[round(a[0] - res.t_answered, 2) for a in answer]} s")
    assert len(sorry) == 1 and sorry[0][1] - sorry[0][0] + 0.02 >= 0.78, "the caller heard the apology"
    assert len(answer) == 1 and answer[0][0] > sorry[0][1] + 1.0, "the next turn was answered"
    fs = fake.sessions[0]
    assert [r["status"] for r in fs.responses] == ["failed", "completed", "completed"]
    assert [e["response"]["instructions"] for e in fs.events_of("response.create")] == [APOLOGY]
    log = transcript_lines(tmp_path)
    [err] = [e for e in log if e["event"] == "error"]
    assert err["code"] == "rate_limit_exceeded"
    [failed] = [e for e in log if e["event"] == "response_failed"]
    assert failed["action"] == "apologise"
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_insufficient_quota_falls_back_at_once(make_bot, fake_model, tmp_path):
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=0.6, speed=4,
                            fail_responses=["insufficient_quota"])
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url)
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.5, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=15.0, workdir=tmp_path)
    assert res.got_bye, res.summary()
    heard = speech_before_bye(res)
    print(f"\n[e2e] insufficient_quota: {heard:.2f} s of the fallback apology, then BYE "
          f"{res.sip_time('BYE', 'recv') - res.t_answered:.1f} s after the answer")
    assert heard > 1.0, "the caller heard the fallback sound (im-sorry, please-try-again)"
    assert not frames_with_tone(res, 440), "no model audio"
    log = transcript_lines(tmp_path)
    [fb] = [e for e in log if e["event"] == "fallback"]
    assert "insufficient_quota" in fb["reason"] and fb["action"] == "hangup"
    assert "insufficient_quota" in log[-1]["reason"]
    assert len(fake.sessions[0].responses) == 1, "no retry against an exhausted quota"
    assert (await no_leftovers(bot)) == ([], [], [])


async def readyz() -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{CONTROL_PORT}/readyz") as r:
            return r.status, json.loads(await r.text())


async def test_responses_failing_in_a_row_fall_back_and_readyz_says_so(make_bot, fake_model, tmp_path):
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=0.6, speed=4,
                            fail_responses=["server_error"] * 3)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url,
                         VOICEAI_CONTROL_PORT=str(CONTROL_PORT))
    assert await readyz() == (200, {"ready": True, "ari_connected": True, "accepting_calls": True,
                                    "model_ok": True, "model": "gpt-realtime-2.1"})
    phone = Phone("g722")
    # the turn fails, the apology fails too (no second apology), the next turn fails: fallback
    phone.play(A.tone(1000, 0.5, amplitude=AMP) + A.silence(2.0) + A.tone(1000, 0.5, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=15.0, workdir=tmp_path)
    assert res.got_bye, res.summary()
    assert speech_before_bye(res) > 1.0, "the caller heard the fallback sound"
    fs = fake.sessions[0]
    assert [r["status"] for r in fs.responses] == ["failed"] * 3
    assert [e["response"]["instructions"] for e in fs.events_of("response.create")] == [APOLOGY]
    log = transcript_lines(tmp_path)
    assert [e["action"] for e in log if e["event"] == "response_failed"] == ["apologise", "none", "fallback"]
    assert "3 model responses in a row failed (server_error)" in log[-1]["reason"]
    status, body = await readyz()
    print(f"\n[e2e] 3 failed responses: fallback, BYE {res.sip_time('BYE', 'recv') - res.t_answered:.1f} s "
          f"after the answer; /readyz {status} {body}")
    assert status == 503 and body["model_ok"] is False and body["ari_connected"] is True
    assert (await no_leftovers(bot)) == ([], [], [])
