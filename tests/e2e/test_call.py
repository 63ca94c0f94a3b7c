"""The vertical slice, end to end: sipp calls the real Asterisk sandbox, `voiceai-ari run` bridges the call
to a fake Realtime model over a real WebSocket, and the test analyses what each side actually received.

    scripts/test tests/e2e/test_call.py
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from voiceai_ari.fakes.audio_gen import dominant_frequency

from . import analysis as A
from .caller import CallResult, Phone, ari, place_call
from .conftest import ALL_FORMATS, E2E_KEY, ended_media_stats

pytestmark = pytest.mark.e2e
AMP = 5000  # -16.3 dBFS


async def no_leftovers(bot, timeout: float = 3.0) -> tuple[list, list, list[int]]:
    """Wait for teardown; return (our channels, bridges, ports still bound) - all empty when clean.

    "Ours" = in our Stasis app or an externalMedia channel: other tests' plain dialplan calls
    (echo, playback) may run on the same sandbox at the same time."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        _, chans = await ari("GET", "/channels")
        chans = [c for c in chans if (c["name"].startswith(("UnicastRTP/", "WebSocket/")) and not c["id"].startswith("voiceai-check-"))
                 or (c.get("dialplan", {}).get("app_name") == "Stasis" and c["dialplan"].get("app_data") == "voiceai")]
        _, bridges = await ari("GET", "/bridges")
        busy = []
        for port in bot.port_range():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
            finally:
                s.close()
        if (not chans and not bridges and not busy) or loop.time() > end:
            return chans, bridges, busy
        await asyncio.sleep(0.1)


def reply_coverage(res: CallResult, freq: float):
    pcm = res.audio_16k()
    cov = A.tone_segments(pcm, 16000, freq, tol_hz=30, min_dbfs=-40)
    assert cov.start_s is not None, f"the caller never heard {freq} Hz: {res.summary()}"
    return pcm, cov


@pytest.mark.parametrize("caller_format", ALL_FORMATS, indirect=True)
async def test_caller_talks_to_model_and_hears_the_reply(make_bot, fake_model, caller_format, tmp_path):
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=2.0, speed=4, seed=7)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, **caller_format.settings())
    phone = Phone("g722")
    phone.play(A.tone(1000, 1.0, amplitude=AMP))           # then the phone sends silence
    spoof = asyncio.create_task(spoof_rtp(bot.port_range()[0], A.tone(5000, 1.0, amplitude=AMP, rate=24000)))
    res = await place_call("100", phone=phone, call_seconds=5.0, workdir=tmp_path)
    assert res.ok and not res.got_bye, res.summary()
    assert await spoof == 50

    # (a) the model received audio (24 kHz PCM, or the caller's G.711 as is) whose dominant frequency is the
    # caller's 1 kHz (the fake keeps what it is sent as 24 kHz PCM, whatever the session's format)
    fs = fake.sessions[0]
    assert fs.config["type"] == "realtime"
    assert fs.config["audio"]["input"]["format"] == caller_format.model_format
    assert fs.config["audio"]["output"]["format"] == caller_format.model_format
    assert fs.events_of("input_audio_buffer.append"), "no audio reached the model"
    speech = A.tone_segments(bytes(fs.audio), 24000, 1000, tol_hz=10, min_dbfs=-30)
    assert speech.start_s is not None and abs(speech.tone_seconds - 1.0) < 0.06, speech
    assert abs(dominant_frequency(bytes(fs.audio[:speech_bytes(speech)]), 24000) - 1000) < 5
    assert [r["status"] for r in fs.responses] == ["completed"]
    # well-formed slin24 RTP from a foreign source (a 5 kHz tone) was dropped and counted, never heard
    assert A.band_share(bytes(fs.audio), 24000, 5000) < 0.001
    assert "'foreign_source': 50" in await bot.wait_for_log("x call ended")
    [media] = ended_media_stats(bot)
    assert media["caller_format"] == caller_format.name and sum(media["rx_dropped"].values()) == 50
    assert not [e for e in fs.received if e["type"] == "error"]

    # (b) the caller heard the 440 Hz reply over G.722: >= 90 % of it, no gap > 40 ms
    assert set(res.payload_types()) == {9}, res.summary()
    pcm, cov = reply_coverage(res, 440)
    print(f"\n[e2e] reply at the caller ({caller_format}): {cov}; level {A.tone_level_dbfs(pcm, 16000, 440, start=cov.start_s + 0.1, end=cov.end_s - 0.1):.1f} dBFS; "
          f"packet gaps max {A.longest_gap_ms(res.rx_times()):.1f} ms")
    assert cov.tone_seconds >= 0.9 * 2.0 and cov.tone_seconds <= 2.0 + 0.06, cov
    assert cov.coverage >= 0.9 and cov.longest_gap_ms <= 40, cov
    assert abs(A.dominant_freq(pcm, 16000, cov.start_s + 0.1, cov.end_s - 0.1) - 440) < 10
    assert abs(A.tone_level_dbfs(pcm, 16000, 440, start=cov.start_s + 0.1, end=cov.end_s - 0.1) - (-12.0)) < 2.0
    # the bot's stream is continuous: one packet per 20 ms all call long, none missing, and no arrival gap
    # beyond what Asterisk's own echo path shows on this machine (test_harness: < 60 ms; the bot's send
    # intervals themselves stay near 20 ms, the rest is Asterisk and host scheduling)
    times = res.rx_times()
    assert len(times) >= (times[-1] - times[0]) / 0.020 - 2, res.summary()
    assert A.longest_gap_ms(times) < 60, "the bot's RTP stream must be continuous"

    # (c) after the caller's BYE, nothing of the call is left: channels, bridges, UDP ports
    chans, bridges, busy = await no_leftovers(bot)
    assert (chans, bridges, busy) == ([], [], [])
    await bot.wait_for_log("x call ended")
    assert "caller hung up" in bot.log()
    # logs: JSON lines, the call's id on every line of that call, no secret anywhere (DEBUG level)
    assert E2E_KEY not in bot.log() and "voiceai-secret" not in bot.log()
    lines = [json.loads(line) for line in bot.log().splitlines()]
    of_call = [x for x in lines if x["logger"] in ("voiceai.call", "voiceai.media")]
    assert len(of_call) >= 3 and {x.get("call") for x in of_call} == {fs_call_id(lines)}


async def spoof_rtp(port: int, pcm24k_le: bytes) -> int:
    """Send valid-looking slin24 RTP (Asterisk's PT 123, big-endian) to the bot's port from a foreign socket."""
    import numpy as np
    from voiceai_ari.media.rtp import RtpSender

    await asyncio.sleep(0.5)   # the call is up by now
    sender = RtpSender(123, 480)
    be = np.frombuffer(pcm24k_le, "<i2").astype(">i2").tobytes()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        for k in range(50):
            s.sendto(sender.packet(be[k * 960:(k + 1) * 960]), ("127.0.0.1", port))
            await asyncio.sleep(0.02)
    finally:
        s.close()
    return 50


def fs_call_id(lines: list[dict]) -> str:
    [up] = [x for x in lines if "call up" in x["msg"]]
    return up["call"]


def speech_bytes(cov) -> int:
    return int(cov.end_s * 24000) * 2


async def test_offline_demo_model_echoes_the_caller(make_bot, tmp_path):
    """No OPENAI_API_KEY: `voiceai-ari run` says so and the embedded model repeats the caller."""
    bot = await make_bot()
    assert "OFFLINE DEMO MODEL" in bot.log()
    phone = Phone("g722")
    phone.play(A.tone(1000, 1.0, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=4.5, workdir=tmp_path)
    assert res.ok, res.summary()
    pcm, cov = reply_coverage(res, 1000)
    # the echo comes back after the caller stopped (VAD silence 500 ms), not as a live loop-back
    assert cov.start_s > 1.2, cov
    assert cov.tone_seconds >= 0.9, cov
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_model_drop_mid_call_resumes_and_the_next_reply_plays(make_bot, provider, transport, tmp_path):
    fake = await provider.make_fake(mode="tone", tone_hz=440, tone_seconds=0.8, speed=4)
    bot = await make_bot(**transport, **provider.bot_settings(fake))
    phone = Phone("g722")
    # two questions: the model's socket is dropped between them
    phone.play(A.tone(1000, 0.5, amplitude=AMP) + A.silence(2.5) + A.tone(1000, 0.5, amplitude=AMP))

    async def drop_after_first_reply():
        fs = await fake.wait_for_session(timeout=10)
        while not fs.responses:
            await asyncio.sleep(0.05)
        fs.drop()
    dropper = asyncio.create_task(drop_after_first_reply())
    res = await place_call("100", phone=phone, call_seconds=6.0, workdir=tmp_path)
    await dropper
    assert not res.got_bye, "the call survives the model's socket drop: " + res.summary()
    assert len(fake.sessions) == 2
    assert [r["status"] for r in fake.sessions[1].responses] == ["completed"], "the next reply came"
    pcm = res.audio_16k()
    bursts = A.tone_segments(pcm, 16000, 440, tol_hz=10, min_dbfs=-40)
    print(f"\n[e2e] model drop ({provider}): {bursts.tone_seconds:.2f} s of reply audio over two replies; {bot.log().count('resumed')} resume")
    assert bursts.tone_seconds >= 1.5, "both replies were heard (2 x 0.8 s)"
    assert "session resumed" in bot.log() or "resumed in session" in bot.log()
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_model_gone_for_good_ends_the_call_cleanly(make_bot, fake_model, tmp_path):
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=1.0)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url)
    phone = Phone("g722")

    async def stop_model_soon():
        await fake.wait_for_session(timeout=10)
        await asyncio.sleep(1.0)
        await fake.stop()
    stopping = asyncio.create_task(stop_model_soon())
    res = await place_call("100", phone=phone, call_seconds=10.0, workdir=tmp_path)
    await stopping
    assert res.got_bye, "the bot hangs up when the model cannot be reached again: " + res.summary()
    assert res.t_end - res.t_answered < 5.0
    assert "model reconnect 2/2" in bot.log()
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_narrowband_fallback_return_path(make_bot, fake_model, tmp_path):
    """VOICEAI_RETURN_CODEC=l16-8k sends PT 11 (8 kHz L16) back; Asterisk accepts it and the caller hears it."""
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=1.0, speed=4)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, VOICEAI_RETURN_CODEC="l16-8k")
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.8, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=3.5, workdir=tmp_path)
    pcm, cov = reply_coverage(res, 440)
    assert cov.tone_seconds >= 0.9 and cov.longest_gap_ms <= 40, cov
    assert "'codec': 'l16-8k'" in await bot.wait_for_log("x call ended")
    assert (await no_leftovers(bot)) == ([], [], [])


async def test_dtx_on_real_asterisk_the_reply_is_heard_and_silence_is_not_sent(make_bot, fake_model, tmp_path):
    """VOICEAI_DTX=true through the sandbox: Asterisk decodes the G.722 talkspurt after a pause (our encoder
    and its decoder stay in step), the caller hears the whole reply at full level, and while the bot is
    silent the bot sends one packet per second instead of 50."""
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=1.0, speed=4)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, VOICEAI_DTX="true")
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.8, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=4.0, workdir=tmp_path)
    assert res.ok, res.summary()
    pcm, cov = reply_coverage(res, 440)
    assert cov.tone_seconds >= 0.9 and cov.coverage >= 0.9 and cov.longest_gap_ms <= 40, cov
    level = A.tone_level_dbfs(pcm, 16000, 440, start=cov.start_s + 0.1, end=cov.end_s - 0.1)
    assert abs(level - (-12.0)) < 2.0, level
    await bot.wait_for_log("x call ended")
    [stats] = ended_media_stats(bot)
    print(f"\n[e2e] DTX: reply {cov}, level {level:.1f} dBFS; bot sent {stats['tx_packets']} packets, skipped "
          f"{stats['dtx_skipped']}; the caller received {len(res.rx_times())} from Asterisk")
    # ~4 s of call, ~1 s of it the reply: about 50 packets of speech and a few keep-alives, not ~200
    assert 45 <= stats["tx_packets"] <= 60 and stats["dtx_skipped"] >= 120, stats
    assert (await no_leftovers(bot)) == ([], [], [])
