"""VOICEAI_CALLER_FORMAT: slin16 resampled in, G.711 (ulaw/alaw) passed through both ways, and the settings
that refuse the combinations that cannot work.

The media tests run `RtpMedia` over real loopback UDP with a test socket playing Asterisk (as test_media.py);
the fake-server tests talk to `FakeRealtimeServer` over a real WebSocket (as test_fake_realtime.py).
"""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest

from voiceai_ari.config import ConfigError, load_settings
from voiceai_ari.fakes import audio_gen
from voiceai_ari.media.codec import ALAW_SILENCE, ULAW_SILENCE, g711_decode, g711_encode
from voiceai_ari.media.choice import media_factory
from voiceai_ari.media.playout import Playout
from voiceai_ari.media.rtp import RtpSender
from voiceai_ari.media.transport import PortPool, RtpMedia
from voiceai_ari.providers.openai_realtime.protocol import RealtimeProtocol, SessionConfig

from test_fake_realtime import make_server, opened, send, until, ws_connect  # noqa: F401 (fixture)
from test_media import HOST, Endpoint, free_port_range
from test_media import until as until_true

LAWS = {"ulaw": (0, ULAW_SILENCE), "alaw": (8, ALAW_SILENCE)}


# ---- settings --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env, message", [
    ({"caller_format": "ulaw", "provider": "gemini-live"},
     "invalid VOICEAI_CALLER_FORMAT: ulaw is passed through to the model as G.711, and gemini-live takes PCM only"),
    ({"caller_format": "alaw", "provider": "openai-live"},
     "invalid VOICEAI_CALLER_FORMAT: alaw passthrough is built for openai-realtime only"),
    ({"caller_format": "ulaw", "transport": "websocket"},
     "invalid VOICEAI_CALLER_FORMAT: ulaw over VOICEAI_TRANSPORT=websocket is not supported"),
    ({"caller_format": "alaw", "return_codec": "l16-8k"},
     "invalid VOICEAI_RETURN_CODEC: l16-8k cannot be used with VOICEAI_CALLER_FORMAT=alaw"),
    ({"caller_format": "slin8"}, "invalid VOICEAI_CALLER_FORMAT: Input should be 'slin24', 'slin16', 'ulaw' or"),
    ({"transport": "udp"}, "invalid VOICEAI_TRANSPORT: Input should be 'rtp' or 'websocket'"),
])
def test_combinations_that_cannot_work_are_refused_in_one_line(clean_env, monkeypatch, env, message):
    for k, v in env.items():
        monkeypatch.setenv("VOICEAI_" + k.upper(), v)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("env", [
    {}, {"caller_format": "slin16"}, {"caller_format": "ulaw"}, {"caller_format": "alaw", "return_codec": "g722"},
    {"caller_format": "slin16", "provider": "gemini-live"}, {"caller_format": "slin24", "transport": "websocket"},
    {"caller_format": "slin16", "transport": "websocket"},
])
def test_combinations_that_work_are_accepted(clean_env, monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv("VOICEAI_" + k.upper(), v)
    s = load_settings()
    assert (s.transport, s.caller_format) == (env.get("transport", "rtp"), env.get("caller_format", "slin24"))


async def test_each_transport_makes_its_own_media_path(clean_env, monkeypatch):
    from voiceai_ari.media.ports import PortPool
    from voiceai_ari.media.transport import RtpMedia
    from voiceai_ari.media.websocket_channel import WebSocketMedia
    pool = PortPool(range(47950, 47952))
    monkeypatch.setenv("VOICEAI_CALLER_FORMAT", "slin16")
    assert isinstance(media_factory(load_settings())(pool), RtpMedia)
    monkeypatch.setenv("VOICEAI_TRANSPORT", "websocket")
    media = media_factory(load_settings())(pool)
    assert isinstance(media, WebSocketMedia) and len(pool._free) == 2   # no RTP port taken


def test_g711_session_config_both_ways(clean_env, monkeypatch):
    monkeypatch.setenv("VOICEAI_CALLER_FORMAT", "ulaw")
    session = SessionConfig.from_settings(load_settings(), []).session()
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    monkeypatch.setenv("VOICEAI_CALLER_FORMAT", "slin16")   # our resampler makes 24 kHz for the model
    assert SessionConfig.from_settings(load_settings(), []).session()["audio"]["input"]["format"] == {
        "type": "audio/pcm", "rate": 24000}


def test_truncate_audio_end_ms_counts_g711_bytes():
    """1 byte is 1 sample at 8 kHz: 4000 bytes received are 500 ms, and audio_end_ms is capped there."""
    proto = RealtimeProtocol(SessionConfig(audio_format="pcma"))
    delta = json.dumps({"type": "response.output_audio.delta", "item_id": "item_1", "response_id": "r",
                        "output_index": 0, "content_index": 0, "delta": base64.b64encode(bytes(4000)).decode()})
    proto.receive(delta)
    assert proto.audio_ms["item_1"] == 500
    out = [json.loads(e) for e in proto.interrupt("item_1", 900)]
    assert [e["audio_end_ms"] for e in out if e["type"] == "conversation.item.truncate"] == [500]


# ---- G.711 codec (fake model and tests only) ------------------------------------------------------------
@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_round_trip_keeps_a_tone(law):
    pcm = audio_gen.tone(1000.0, 0.2, 8000, dbfs=-12.0)
    back = g711_decode(g711_encode(pcm, law), law)
    x, y = np.frombuffer(pcm, "<i2").astype(float), np.frombuffer(back, "<i2").astype(float)
    snr = 10 * np.log10(np.sum(x * x) / np.sum((x - y) ** 2))
    assert snr > 30   # G.711 gives ~38 dB on a loud tone
    assert g711_encode(bytes(2), law)[0] == LAWS[law][1]   # silence is the law's zero code


# ---- Playout in G.711 frames -----------------------------------------------------------------------------
def test_playout_g711_frames_and_padding():
    p = Playout(8000, sample_bytes=1, pad=ULAW_SILENCE)
    p.push(b"\x10" * 250, "a")          # 31.25 ms: one frame and 90 bytes
    p.end_item()
    first, second = p.pop(), p.pop()
    assert first == (b"\x10" * 160, True)
    assert second[0] == b"\x10" * 90 + bytes([ULAW_SILENCE]) * 70   # padded with silence, not 0x00 (loud)
    assert p.played_ms("a") == 31   # 250 bytes / 8 per ms


def test_playout_g711_clear_reports_ms_from_bytes():
    p = Playout(8000, sample_bytes=1, pad=ULAW_SILENCE)
    p.push(bytes(8000), "a")            # 1 s
    for _ in range(7):
        p.pop()
    assert p.queued_ms == 860
    assert p.clear() == ("a", 140)      # 7 frames of 160 bytes


# ---- RtpMedia per format, over loopback UDP --------------------------------------------------------------
async def _rig(fmt: str):
    media = RtpMedia(bind_host=HOST, advertise_host=HOST, pool=PortPool(free_port_range(2)), caller_format=fmt)
    await media.open()
    ast = await Endpoint.open()
    return media, ast


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
async def test_g711_passes_through_untouched_both_ways(law):
    pt, silence = LAWS[law]
    media, ast = await _rig(law)
    try:
        assert media.external_format == law
        got: list[bytes] = []
        media.on_audio = got.append
        media.set_remote(*ast.addr)
        caller = g711_encode(audio_gen.tone(700.0, 0.4, 8000, dbfs=-10.0), law)
        sender = RtpSender(pt, 160)
        for k in range(20):
            ast.send(sender.packet(caller[k * 160:(k + 1) * 160]), media.port)
        await until_true(lambda: media.filter.accepted == 20)
        assert b"".join(c for c in got if c != bytes([silence]) * 160) == caller   # the caller's bytes, as sent
        assert sum(media.filter.drops.values()) == 0
        # the model's G.711 (uneven deltas) goes out as it came: PT 0/8, 160 bytes, timestamp +160
        bot = g711_encode(audio_gen.tone(440.0, 0.5, 8000, dbfs=-6.0), law)
        for a in range(0, len(bot), 333):
            media.play(bot[a:a + 333], "item_1")
        media.end_item()
        n0 = len(ast.rx)
        await until_true(lambda: not media.busy)
        await ast.wait_packets(n0 + 26)
        voiced = [r for r in ast.rx if r.payload != bytes([silence]) * 160]
        assert all(r.pt == pt and len(r.payload) == 160 for r in ast.rx)
        assert b"".join(r.payload for r in voiced) == bot
        assert voiced[0].marker and not any(r.marker for r in voiced[1:])
        assert all((b.ts - a.ts) % 2**32 == 160 for a, b in zip(ast.rx, ast.rx[1:]))
    finally:
        await media.close()
        ast.close()


async def test_g711_barge_in_truncates_at_what_was_sent():
    media, ast = await _rig("ulaw")
    try:
        media.set_remote(*ast.addr)
        media.play(bytes([0x20]) * 8000, "item_1")    # 1 s of the model's μ-law
        await until_true(lambda: len([r for r in ast.rx if r.payload[0] == 0x20]) >= 10)
        item, ms = media.interrupt()
        sent = sum(len(r.payload) for r in ast.rx if r.payload[0] == 0x20)
        assert item == "item_1" and ms == sent // 8
        media.play(bytes([0x20]) * 800, "item_1")     # late deltas of the cut-off item never play
        n = len(ast.rx)
        await ast.wait_packets(n + 5)
        assert all(r.payload == bytes([ULAW_SILENCE]) * 160 for r in ast.rx[n:])
    finally:
        await media.close()
        ast.close()


async def test_slin16_is_resampled_to_24k_for_the_model():
    media, ast = await _rig("slin16")
    try:
        assert media.external_format == "slin16"
        got: list[bytes] = []
        media.on_audio = got.append
        media.set_remote(*ast.addr)
        pcm = audio_gen.tone(1000.0, 1.0, 16000, dbfs=-12.0)
        be = np.frombuffer(pcm, "<i2").astype(">i2").tobytes()
        sender = RtpSender(118, 320)
        for k in range(50):
            ast.send(sender.packet(be[k * 640:(k + 1) * 640]), media.port)
        await until_true(lambda: media.filter.accepted == 50)
        assert media.filter.payload_type == 118 and sum(media.filter.drops.values()) == 0
        voice = b"".join(c for c in got if c != bytes(960))
        assert abs(len(voice) - 48000) <= 2 * 960 and len(voice) % 960 == 0   # 24 kHz, 20 ms in 20 ms out
        assert abs(audio_gen.dominant_frequency(voice, 24000) - 1000.0) < 3
        assert abs(audio_gen.rms_dbfs(voice[4800:-4800]) - audio_gen.rms_dbfs(pcm)) < 0.5
    finally:
        await media.close()
        ast.close()


# ---- the fake Realtime server speaks G.711 as the real one does ------------------------------------------
@pytest.mark.parametrize("law, kind", [("ulaw", "audio/pcmu"), ("alaw", "audio/pcma")])
async def test_fake_realtime_takes_and_answers_g711(make_server, law, kind):  # noqa: F811
    server = await make_server(mode="tone", tone_hz=440.0, tone_seconds=1.0, speed=20.0)
    async with ws_connect(server) as ws:
        await opened(ws)
        await send(ws, "session.update", session={"type": "realtime", "audio": {
            "input": {"format": {"type": kind}}, "output": {"format": {"type": kind}}}})
        updated, _ = await until(ws, "session.updated")
        assert updated["session"]["audio"]["input"]["format"] == {"type": kind}
        speech = (audio_gen.silence(0.5, 8000) + audio_gen.tone(900.0, 0.8, 8000, dbfs=-12.0)
                  + audio_gen.silence(1.0, 8000))
        g711 = g711_encode(speech, law)
        for a in range(0, len(g711), 160):   # the VAD works on the decoded G.711
            await send(ws, "input_audio_buffer.append", audio=base64.b64encode(g711[a:a + 160]).decode())
        started, _ = await until(ws, "input_audio_buffer.speech_started")
        stopped, _ = await until(ws, "input_audio_buffer.speech_stopped")
        assert abs(started["audio_start_ms"] - 200) <= 60 and abs(stopped["audio_end_ms"] - 1800) <= 60
        done, events = await until(ws, "response.done")
    audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
    assert len(audio) == 8000                                    # 1 s of 8 kHz G.711, a byte a sample
    pcm = g711_decode(audio, law)
    assert abs(audio_gen.dominant_frequency(pcm, 8000) - 440.0) < 3
    tone = audio_gen.tone(440.0, 1.0, 8000, dbfs=-12.0)
    assert abs(audio_gen.rms_dbfs(pcm[1600:-1600]) - audio_gen.rms_dbfs(tone)) < 1.0
    assert done["response"]["audio"]["output"]["format"] == {"type": kind}


async def test_fake_realtime_rejects_bad_g711_formats_like_the_real_api(make_server):  # noqa: F811
    server = await make_server(mode="tone")
    async with ws_connect(server) as ws:
        await opened(ws)
        for fmt, code, param in [({"type": "audio/pcmu", "rate": 8000}, "unknown_parameter",
                                  "session.audio.input.format.rate"),
                                 ({"type": "audio/g729"}, "invalid_value", "session.audio.input.format.type")]:
            await send(ws, "session.update", session={"type": "realtime", "audio": {"input": {"format": fmt}}})
            ev, _ = await until(ws, "error")
            assert (ev["error"]["code"], ev["error"]["param"]) == (code, param)
            assert ev["error"]["type"] == "invalid_request_error"
        await asyncio.sleep(0)


async def test_fake_g711_reply_does_not_hold_the_event_loop(make_server):  # noqa: F811
    """The fake runs in the same process as an e2e test's phone: converting a long reply to G.711 in one go
    held the loop (and froze the phone's RTP) for tens of ms. Converted delta by delta, no step holds it long."""
    server = await make_server(mode="tone", tone_hz=440, tone_seconds=20.0, speed=50.0)
    loop = asyncio.get_running_loop()
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            t = loop.time()
            await asyncio.sleep(0.001)
            lags.append(loop.time() - t - 0.001)
    async with ws_connect(server) as ws:
        await opened(ws)
        await send(ws, "session.update", session={"type": "realtime", "audio": {
            "output": {"format": {"type": "audio/pcmu"}}}})
        await until(ws, "session.updated")
        tick = asyncio.create_task(ticker())
        await send(ws, "response.create")
        done, events = await until(ws, "response.done", timeout=10)
        tick.cancel()
    audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
    assert len(audio) == 20 * 8000 and done["response"]["status"] == "completed"
    assert max(lags) < 0.015, f"the loop was held {max(lags) * 1000:.1f} ms"


@pytest.mark.parametrize("env, var", [
    ({"VOICEAI_TRANSPORT": "websocket", "VOICEAI_CALLER_FORMAT": "alaw"}, "VOICEAI_CALLER_FORMAT"),
    ({"VOICEAI_CALLER_FORMAT": "ulaw", "VOICEAI_PROVIDER": "gemini-live"}, "VOICEAI_CALLER_FORMAT"),
])
def test_run_refuses_what_it_cannot_serve_with_one_line_and_exit_2(tmp_path, env, var):
    """`voiceai-ari run` itself: one line naming the variable, exit status 2, before any call."""
    import os
    import subprocess
    import sys
    full = {k: v for k, v in os.environ.items() if not k.startswith("VOICEAI_") and k != "OPENAI_API_KEY"}
    full.update(env, VOICEAI_ARI_URL="http://127.0.0.1:9", VOICEAI_CONTROL_PORT="0")
    p = subprocess.run([sys.executable, "-m", "voiceai_ari", "run"], env=full, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    [line] = [ln for ln in p.stderr.strip().splitlines() if ln.startswith("voiceai-ari:")]
    assert line.startswith(f"voiceai-ari: invalid {var}: ")


async def test_g711_dtx_keepalive_is_the_laws_silence():
    """VOICEAI_DTX with G.711: while the bot is quiet, one packet a second, and it is silence (0xFF), not the
    0x00 that μ-law decodes as full-scale noise."""
    media = RtpMedia(bind_host=HOST, advertise_host=HOST, pool=PortPool(free_port_range(2)), caller_format="ulaw",
                     dtx=True)
    await media.open()
    ast = await Endpoint.open()
    try:
        media.set_remote(*ast.addr)
        await asyncio.sleep(1.1)
        assert 1 <= len(ast.rx) <= 2 and media.dtx_skipped >= 45
        assert all(r.pt == 0 and r.payload == bytes([ULAW_SILENCE]) * 160 for r in ast.rx)
    finally:
        await media.close()
        ast.close()
