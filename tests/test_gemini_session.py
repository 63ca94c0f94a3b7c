"""GeminiSession (websockets client) against the fake Gemini Live server over loopback, and the fake's rules."""

import asyncio
import json

import pytest
import websockets

from tests.session_io import collect, fake_servers, feed
from voiceai_ari.fakes.audio_gen import dominant_frequency, silence, tone
from voiceai_ari.fakes.gemini.server import FakeGeminiServer
from voiceai_ari.providers.base import (AudioDelta, AudioDone, ModelClosed, ModelError, ModelReconnected,
                                        ResponseDone, SessionReady, SpeechStarted, ToolCall, Transcript)
from voiceai_ari.providers.gemini_live.protocol import GeminiConfig
from voiceai_ari.providers.gemini_live.session import GeminiSession

KEY = "gm-test-key"


@pytest.fixture
async def fake():
    async for make in fake_servers(FakeGeminiServer, api_key=KEY, seed=1):
        yield make


async def test_a_turn_is_heard_at_16k_and_answered_at_24k(fake):
    server = await fake(mode="tone", tone_hz=440, tone_seconds=1.0, speed=20)
    s = GeminiSession(server.url, KEY, GeminiConfig(instructions="x", silence_ms=300))
    await s.start()
    try:
        fs = await server.wait_for_session()
        feed(s, tone(1000, 0.6, 24000) + silence(0.6, 24000))
        evs = await collect(s, lambda e: isinstance(e, ResponseDone))
        assert fs.setup["systemInstruction"] == {"parts": [{"text": "x"}]}
        assert fs.setup["realtimeInputConfig"]["automaticActivityDetection"]["silenceDurationMs"] == 300
        # the caller's 24 kHz frames reached the server resampled to 16 kHz, the tone intact
        assert abs(dominant_frequency(bytes(fs.audio[:16000]), 16000) - 1000) < 5
        assert len(fs.audio) == pytest.approx(1.2 * 32000, abs=640)
        reply = b"".join(e.pcm for e in evs if isinstance(e, AudioDelta))
        assert len(reply) == 48000 and abs(dominant_frequency(reply, 24000) - 440) < 5
        assert any(isinstance(e, AudioDone) for e in evs)
        assert evs[-1].status == "completed" and evs[-1].usage["output_token_details"]["audio_tokens"] == 32
        assert [e.role for e in evs if isinstance(e, Transcript)] == ["caller", "bot"]
        # every server message came as a binary frame of pretty-printed JSON, and the client read them
        assert all(isinstance(m, dict) for _, m in fs.sent)
    finally:
        await s.close()


async def test_caller_speech_during_a_reply_interrupts_it(fake):
    server = await fake(mode="tone", tone_seconds=6.0, speed=2)
    s = GeminiSession(server.url, KEY, GeminiConfig(silence_ms=200))
    await s.start()
    try:
        fs = await server.wait_for_session()
        feed(s, tone(1000, 0.4, 24000) + silence(0.4, 24000))
        await collect(s, lambda e: isinstance(e, AudioDelta))
        feed(s, tone(800, 0.3, 24000))
        evs = await collect(s, lambda e: isinstance(e, ResponseDone))
        assert any(isinstance(e, SpeechStarted) for e in evs)
        assert evs[-1].status == "cancelled"
        assert [m for _, m in fs.sent_of("serverContent") if m.get("interrupted")]
    finally:
        await s.close()


async def test_tool_call_waits_for_the_matching_response_then_the_model_goes_on(fake):
    server = await fake(speed=20, script=[
        {"audio": "tone", "tone_seconds": 0.3, "function_call": {"name": "send_dtmf", "args": {"digits": "42"}}},
        {"audio": "tone", "tone_hz": 700, "tone_seconds": 0.5}])
    s = GeminiSession(server.url, KEY, GeminiConfig(tools=[{"name": "send_dtmf", "parameters": {"type": "object"}}]))
    await s.start()
    try:
        fs = await server.wait_for_session()
        s.request_response()
        evs = await collect(s, lambda e: isinstance(e, ToolCall))
        call = evs[-1]
        assert (call.name, json.loads(call.arguments)) == ("send_dtmf", {"digits": "42"})
        s.send_tool_result(call.call_id, '{"status": "sent"}')
        evs = await collect(s, lambda e: isinstance(e, ResponseDone) and e.status == "completed")
        reply = b"".join(e.pcm for e in evs if isinstance(e, AudioDelta))
        assert abs(dominant_frequency(reply[-12000:], 24000) - 700) < 10
        assert fs.tool_responses == [{"id": call.call_id, "name": "send_dtmf", "response": {"output": {"status": "sent"}}}]
    finally:
        await s.close()


async def until(cond, timeout=10):
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def test_go_away_resumes_with_the_handle_and_the_conversation_goes_on(fake):
    server = await fake(mode="echo", speed=20)
    s = GeminiSession(server.url, KEY, GeminiConfig(silence_ms=200))
    await s.start()
    evs: list = []
    reader = asyncio.create_task(_read_all(s, evs))   # as a call reads: all the time
    try:
        fs1 = await server.wait_for_session()
        feed(s, tone(600, 0.4, 24000) + silence(0.5, 24000))
        await until(lambda: s.proto.resume_handle is not None)   # sent after the turn
        handle = s.proto.resume_handle
        await fs1.go_away(0.5)
        await until(lambda: any(isinstance(e, ModelReconnected) for e in evs))
        assert "goAway" in next(e for e in evs if isinstance(e, ModelReconnected)).reason
        fs2 = await server.wait_for_session(2)
        assert fs2.resumed_from == handle and fs2.setup["sessionResumption"] == {"handle": handle}
        n = len(evs)
        feed(s, tone(900, 0.4, 24000) + silence(0.5, 24000))
        await until(lambda: any(isinstance(e, ResponseDone) for e in evs[n:]))
        reply = b"".join(e.pcm for e in evs[n:] if isinstance(e, AudioDelta))
        assert abs(dominant_frequency(reply, 24000) - 900) < 10   # the echo of the new turn, after resuming
        assert s.reconnects == 1
    finally:
        await s.close()
        await asyncio.gather(reader, return_exceptions=True)


async def _read_all(session, out):
    async for ev in session.events():
        out.append(ev)


async def test_dropped_connection_and_1011_are_resumed(fake):
    server = await fake(mode="tone", tone_seconds=0.3, speed=20)
    s = GeminiSession(server.url, KEY, GeminiConfig())
    await s.start()
    try:
        (await server.wait_for_session()).drop()
        evs = await collect(s, lambda e: isinstance(e, ModelReconnected))
        assert "1006" in evs[-1].reason
        asyncio.ensure_future((await server.wait_for_session(2)).fail())
        evs = await collect(s, lambda e: isinstance(e, ModelReconnected))
        assert "1011" in evs[-1].reason and s.reconnects == 2
    finally:
        await s.close()


async def test_bad_key_and_unknown_model_are_refused_with_the_reason(fake):
    server = await fake()
    with pytest.raises(ConnectionRefusedError, match="1007: API key not valid"):
        await GeminiSession(server.url, "wrong", GeminiConfig()).start()
    with pytest.raises(ConnectionRefusedError, match="1008: models/gemini-0-live is not found"):
        await GeminiSession(server.url, KEY, GeminiConfig(model="gemini-0-live")).start()
    limited = await fake(reject_upgrade=True)
    with pytest.raises(websockets.InvalidStatus):
        await GeminiSession(limited.url, KEY, GeminiConfig()).start()


async def test_fake_refuses_malformed_setup_and_messages_with_1007(fake):
    server = await fake()
    async with websockets.connect(server.url, additional_headers={"x-goog-api-key": KEY}) as ws:
        await ws.send(json.dumps({"setup": {"model": "models/gemini-3.8-live",
                                            "realtime_input_config": {"automatic_activity_detection": {
                                                "start_of_speech_sensitivity": "LOUD"}}}}))
        with pytest.raises(websockets.ConnectionClosed) as exc:
            await ws.recv()
        assert exc.value.rcvd.code == 1007 and "start_of_speech_sensitivity" not in exc.value.rcvd.reason
        assert "startOfSpeechSensitivity" in exc.value.rcvd.reason
    async with websockets.connect(server.url, additional_headers={"x-goog-api-key": KEY}) as ws:
        await ws.send(json.dumps({"realtimeInput": {"text": "hi"}}))   # setup must come first
        with pytest.raises(websockets.ConnectionClosed) as exc:
            await ws.recv()
        assert exc.value.rcvd.code == 1007
    async with websockets.connect(server.url, additional_headers={"x-goog-api-key": KEY}) as ws:
        await ws.send(json.dumps({"setup": {"model": "models/gemini-3.8-live"}}))
        assert json.loads(await ws.recv()) == {"setupComplete": {}}
        await ws.send(json.dumps({"realtimeInput": {"text": "a"}, "clientContent": {}}))   # two keys
        with pytest.raises(websockets.ConnectionClosed) as exc:
            await ws.recv()
        assert exc.value.rcvd.code == 1007


async def test_unknown_resumption_handle_is_refused(fake):
    server = await fake()
    s = GeminiSession(server.url, KEY, GeminiConfig())
    s.proto.resume_handle = "never-issued"
    with pytest.raises(ConnectionRefusedError, match="1007"):
        await s.start()


async def test_fatal_close_mid_session_ends_the_stream(fake):
    server = await fake()
    s = GeminiSession(server.url, KEY, GeminiConfig())
    await s.start()
    try:
        fs = await server.wait_for_session()
        await fs._ws.close(code=1008, message=b"Operation is not implemented, or supported, or enabled")
        evs = await collect(s, lambda e: isinstance(e, ModelClosed))
        err = next(e for e in evs if isinstance(e, ModelError))
        assert err.fatal and err.code == "1008" and "not implemented" in err.message
        assert isinstance(evs[0], SessionReady)
    finally:
        await s.close()
