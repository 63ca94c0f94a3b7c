"""Conversation behaviours through a real call: barge-in, greetings, tools, keypad, transcript.

Each test runs `voiceai-ari run` against the real Asterisk sandbox and a fake Realtime model in this test's
event loop, so the fake's send times and the phone's RTP arrival times share one clock (loop.time()).
"""

from __future__ import annotations

import json

import pytest

from . import analysis as A
from .caller import CallResult, Phone, place_call
from .conftest import ALL_FORMATS, E2E_KEY, ended_media_stats
from .test_call import no_leftovers

pytestmark = pytest.mark.e2e
AMP = 5000


def frames_with_tone(res: CallResult, freq: float, tol: float = 10.0) -> list[float]:
    """Arrival times of the received 20 ms packets whose audio holds `freq` (G.722 with one decoder in order, or
    PCMA)."""
    when = {id(p): t for t, p in res.rx}
    pkts = A.in_sequence_order(res.voice())
    pcm, rate = (A.decode_g722(pkts), 16000) if res.codec == "g722" else (A.decode_pcma(pkts), 8000)
    out = []
    for k, w in enumerate(A.windows(pcm, rate, 0.02)):
        if k < len(pkts) and w.dbfs > -40 and abs(w.freq - freq) <= tol:
            out.append(when[id(pkts[k])])
    return out


def transcript_lines(tmp_path) -> list[dict]:
    [path] = (tmp_path / "transcripts").glob("*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("caller_format, phone_codec", [(f, "g722") for f in ALL_FORMATS] + [("alaw", "pcma")]
                         + [("websocket/slin24", "g722"), ("websocket/slin16", "g722")],
                         indirect=["caller_format"])
async def test_barge_in_stops_the_bot_and_truncates_what_was_heard(make_bot, fake_model, caller_format, phone_codec,
                                                                   tmp_path, **bot_settings):
    """A G.722 phone on every caller format and on chan_websocket; and an A-law phone on alaw: a PSTN-like
    call where neither Asterisk nor the bot transcodes anything."""
    # speed 3: the 6 s reply streams for 2 s, still under way when the caller barges in ~1.4 s into it (at
    # speed 4 the stream ended 60 ms after the barge-in: any hiccup made the test about nothing)
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=6.0, speed=3, seed=3)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, **caller_format.settings(),
                         **bot_settings)
    phone = Phone(phone_codec)
    # a question, then the caller talks over the long reply 2.5 s into the call
    phone.play(A.tone(1000, 0.6, amplitude=AMP) + A.silence(1.9) + A.tone(1000, 1.0, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=3.9, workdir=tmp_path)
    assert res.ok, res.summary()
    fs = fake.sessions[0]
    starts = [t for t, _ in fs.sent_of("input_audio_buffer.speech_started")]
    assert len(starts) == 2, starts
    barge = starts[1]
    tone_times = frames_with_tone(res, 440)
    assert tone_times and tone_times[0] < barge, "the reply was playing when the caller spoke"
    before = [t for t in tone_times if t < barge + 0.5]
    stop_ms = (before[-1] - barge) * 1000
    heard_ms = len(before) * 20
    [trunc] = fs.events_of("conversation.item.truncate")
    spoke = res.tx_times[int(2.5 / 0.02)]       # the phone's first packet of the talk-over
    vad_ms = (barge - spoke) * 1000
    print(f"\n[e2e] barge-in ({caller_format}, {phone_codec} phone{', ' if bot_settings else ''}"
          f"{' '.join(f'{k}={v}' for k, v in bot_settings.items())}): the model's VAD saw the caller {vad_ms:.0f} ms "
          f"after the words were sent; bot audio stopped {stop_ms:.0f} ms after that, "
          f"{(before[-1] - spoke) * 1000:.0f} ms after the caller began to speak; "
          f"caller heard {heard_ms} ms, truncate audio_end_ms={trunc['audio_end_ms']}")
    assert stop_ms <= 100
    assert not [t for t in tone_times if barge + 0.1 < t < barge + 1.0], "bot audio resumed"
    assert trunc["content_index"] == 0 and trunc["item_id"] == fs.responses[0]["output"][0]["id"]
    assert abs(trunc["audio_end_ms"] - heard_ms) <= 40
    # the transcript (and so the dashboard) records the barge-in with what the caller heard of the reply
    [cut] = [e for e in transcript_lines(tmp_path) if e["event"] == "barge_in"]
    assert cut["item_id"] == trunc["item_id"] and cut["played_ms"] == trunc["audio_end_ms"]
    if caller_format.websocket:   # chan_websocket: the cut is Asterisk's FLUSH_MEDIA, what was heard comes from its marks
        await bot.wait_for_log("x call ended")
        [stats] = ended_media_stats(bot)
        assert stats["control"] == "json" and stats["flushes"] >= 1 and stats["marks_processed"] >= 1, stats
    assert not fs.events_of("response.cancel"), "the server cancelled by itself: no response.cancel"
    assert fs.responses[0]["status"] == "cancelled"
    assert not [e for e in fs.received if e["type"] == "error"]
    assert (await no_leftovers(bot)) == ([], [], [])


@pytest.mark.parametrize("caller_format, append_ms", [("slin24", 100), ("ulaw", 200), ("websocket/slin24", 100)],
                         indirect=["caller_format"])
async def test_barge_in_with_batched_appends(make_bot, fake_model, caller_format, append_ms, tmp_path):
    """VOICEAI_APPEND_MS (and, on RTP, reading once per tick): the same barge-in, cut and truncate; the model's
    VAD only hears the caller up to a batch later (printed)."""
    await test_barge_in_stops_the_bot_and_truncates_what_was_heard(
        make_bot, fake_model, caller_format, "g722", tmp_path, VOICEAI_APPEND_MS=str(append_ms))


async def test_model_greeting_is_heard_first(make_bot, fake_model, caller_format, tmp_path):
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=1.0, speed=4)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, VOICEAI_GREETING="model",
                         VOICEAI_GREETING_INSTRUCTIONS="Say hello.", **caller_format.settings())
    phone = Phone("g722")                      # the caller says nothing
    res = await place_call("100", phone=phone, call_seconds=2.0, workdir=tmp_path)
    pcm = res.audio_16k()
    loud = [w for w in A.windows(pcm, 16000, 0.02) if w.dbfs > -40]
    assert loud and abs(loud[0].freq - 440) < 30, "the first thing the caller hears is the greeting"
    cov = A.tone_segments(pcm, 16000, 440, tol_hz=30, min_dbfs=-40)
    first_bot_ms = (res.rx_times()[int(cov.start_s / 0.02)] - res.t_answered) * 1000
    print(f"\n[e2e] model greeting ({caller_format}): 200 OK -> first greeting audio at the caller {first_bot_ms:.0f} ms")
    assert cov.tone_seconds >= 0.95 and first_bot_ms < 1000
    [create] = fs_events(fake, "response.create")
    assert create["response"]["instructions"] == "Say hello."
    assert (await no_leftovers(bot)) == ([], [], [])


def fs_events(fake, type_):
    return fake.sessions[0].events_of(type_)


async def test_sound_greeting_plays_before_the_model(make_bot, fake_model, transport, tmp_path):
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=0.6, speed=4)
    bot = await make_bot(**transport, OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, VOICEAI_GREETING="sound",
                         VOICEAI_GREETING_SOUND="sound:hello-world")
    phone = Phone("g722")
    phone.play(A.silence(2.0) + A.tone(1000, 0.5, amplitude=AMP))   # answers after the greeting
    res = await place_call("100", phone=phone, call_seconds=4.0, workdir=tmp_path)
    pcm = res.audio_16k()
    ws = A.windows(pcm, 16000, 0.02)
    loud = [k for k, w in enumerate(ws) if w.dbfs > -40]
    reply = A.tone_segments(pcm, 16000, 440, tol_hz=30, min_dbfs=-40)
    assert loud and reply.start_s is not None
    greeting = [k for k in loud if k * 0.02 < reply.start_s - 0.1]
    assert len(greeting) * 0.02 > 0.5, "Asterisk's hello-world was heard before the reply"
    assert len({round(ws[k].freq, -2) for k in greeting}) > 3, "speech, not a tone"
    assert greeting[0] * 0.02 < 0.5, "the greeting is the first thing heard"
    assert not fs_events(fake, "response.create"), "no model greeting with greeting=sound"
    assert (await no_leftovers(bot)) == ([], [], [])


def farewell(tool: str, arguments: dict, seconds: float = 1.5) -> list[dict]:
    return [{"audio": "tone", "tone_hz": 440, "tone_seconds": seconds, "transcript": "Goodbye!",
             "function_call": {"name": tool, "arguments": arguments}}]


async def test_hangup_tool_plays_the_farewell_then_hangs_up(make_bot, provider, transport, tmp_path):
    fake = await provider.make_fake(mode="tone", speed=4, script=farewell("hangup_call", {}))
    bot = await make_bot(**transport, **provider.bot_settings(fake))
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.5, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=8.0, workdir=tmp_path)
    assert res.got_bye, "the bot hangs up: " + res.summary()
    tone_times = frames_with_tone(res, 440)
    bye_at = res.sip_time("BYE", "recv")
    heard_ms = len(tone_times) * 20
    print(f"\n[e2e] hangup ({provider}): caller heard {heard_ms} ms of the 1500 ms farewell; BYE "
          f"{(bye_at - tone_times[-1]) * 1000:.0f} ms after its last packet")
    assert heard_ms >= 1480, "the whole farewell was played"
    # GPT-Live has no "reply done" event: the bot waits for 0.6 s without audio (docs/providers.md)
    assert 0 < bye_at - tone_times[-1] < (1.0 if provider.name == "openai-live" else 0.5)
    fs = fake.sessions[0]
    assert provider.tool_outputs(fs) == [], "the hangup is not answered to the model: the call is over"
    if provider.name == "openai-realtime":
        assert not fs.events_of("response.create"), "no new response after a hangup"
    assert (await no_leftovers(bot)) == ([], [], [])
    log = transcript_lines(tmp_path)
    assert [e["event"] for e in log][0] == "call_start" and log[-1]["event"] == "call_end"
    [tc] = [e for e in log if e["event"] == "tool_call"]
    assert tc["name"] == "hangup_call" and tc["ok"] is True
    assert log[-1]["reason"] == "hung up by the bot"


async def test_send_dtmf_tool_reaches_the_caller_as_rfc4733(make_bot, provider, transport, tmp_path):
    script = [{"audio": "none", "function_call": {"name": "send_dtmf", "arguments": {"digits": "12#9"}}},
              {"audio": "tone", "tone_hz": 440, "tone_seconds": 0.4}]
    fake = await provider.make_fake(mode="tone", speed=4, script=script)
    bot = await make_bot(**transport, **provider.bot_settings(fake))
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.5, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=3.5, workdir=tmp_path)
    print(f"\n[e2e] send_dtmf ({provider}): the caller received RFC 4733 digits {res.dtmf_digits()!r}")
    assert res.dtmf_digits() == "12#9"
    fs = fake.sessions[0]
    [out] = provider.tool_outputs(fs)
    assert out["digits"] == "12#9"
    # the model goes on after the result: the scripted 440 Hz line is heard after the digits
    assert frames_with_tone(res, 440), "the model's reply after the tool result was heard"
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_hostile_dtmf_arguments_are_refused_to_the_model(make_bot, fake_model, tmp_path):
    script = [{"audio": "none", "function_call": {"name": "send_dtmf", "arguments": {"digits": "1; rm -rf /"}}}]
    fake = await fake_model(mode="tone", tone_seconds=0.3, speed=4, script=script)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url)
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.5, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=2.5, workdir=tmp_path)
    assert res.dtmf_digits() == "" and res.ok
    fs = fake.sessions[0]
    [out] = [e for e in fs.events_of("conversation.item.create") if e["item"]["type"] == "function_call_output"]
    assert "error" in json.loads(out["item"]["output"])
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_transfer_tool_hands_the_caller_to_the_dialplan(make_bot, provider, transport, tmp_path):
    fake = await provider.make_fake(mode="tone", speed=4, script=farewell("transfer_call", {"target": "sales"}, 1.0))
    bot = await make_bot(**transport, **provider.bot_settings(fake), VOICEAI_TRANSFER_TARGETS='{"sales": "from-caller,200,1"}')
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.5, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=5.0, workdir=tmp_path)
    assert not res.got_bye, "the caller is still connected (to extension 200) when the caller hangs up"
    pcm = res.audio_16k()
    line = A.tone_segments(pcm, 16000, 440, tol_hz=5, min_dbfs=-40)
    assert line.start_s is not None and line.tone_seconds >= 0.98, "the line before the transfer was played out"
    # after the transfer: demo-congrats (speech) from extension 200
    t0 = line.end_s + 0.05
    after = [w for w in A.windows(pcm[int(t0 * 16000) * 2:], 16000, 0.02) if w.dbfs > -40]
    print(f"\n[e2e] transfer ({provider}): {line.tone_seconds * 1000:.0f} ms of the spoken line, then {len(after) * 20} ms "
          "of loud audio from extension 200 (demo-congrats)")
    assert len(after) * 0.02 > 1.0 and len({round(w.freq, -2) for w in after}) > 3
    assert "transferred" in await bot.wait_for_log("x call ended")
    assert (await no_leftovers(bot)) == ([], [], [])   # our externalMedia, bridge and port are gone


async def test_caller_keys_reach_the_model(make_bot, fake_model, caller_format, tmp_path):
    fake = await fake_model(mode="tone", tone_seconds=0.3, speed=4)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, **caller_format.settings())
    phone = Phone("g722")

    async def press():
        import asyncio
        await asyncio.sleep(0.8)
        phone.send_dtmf("5")                       # RFC 4733
    import asyncio
    presser = asyncio.create_task(press())
    res = await place_call("100", phone=phone, call_seconds=4.0, workdir=tmp_path, info_dtmf=[(2.2, "7")])
    await presser
    assert res.ok, res.summary()
    fs = fake.sessions[0]
    texts = [c["content"][0]["text"] for e in fs.events_of("conversation.item.create")
             for c in [e["item"]] if c["type"] == "message"]
    print(f"\n[e2e] keypad ({caller_format}): the model was told {texts}")
    assert texts == ["The caller pressed 5 on the keypad.", "The caller pressed 7 on the keypad."]
    assert len(fs.events_of("response.create")) == 2
    log = transcript_lines(tmp_path)
    assert [e["digit"] for e in log if e["event"] == "dtmf"] == ["5", "7"]
    if caller_format.websocket:   # the keys also came as chan_websocket DTMF_END; ARI's events stay the one source
        await bot.wait_for_log("x call ended")
        [stats] = ended_media_stats(bot)
        assert stats["dtmf_events"] == 2, stats
    assert (await no_leftovers(bot)) == ([], [], [])
