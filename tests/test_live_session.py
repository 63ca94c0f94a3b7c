"""LiveSession (websockets client) against the fake GPT-Live server over loopback, and the fake's rules."""

import asyncio
import json

import pytest
import websockets

from tests.session_io import collect, fake_servers, feed
from voiceai_ari.fakes.audio_gen import dominant_frequency, silence, tone
from voiceai_ari.fakes.openai_live.server import FakeLiveServer
from voiceai_ari.providers.base import (AudioDelta, AudioDone, ModelClosed, ModelError, ModelReconnected,
                                        ResponseDone, SessionReady, SpeechStarted, ToolCall, Transcript,
                                        UsageUpdate)
from voiceai_ari.providers.openai_live.protocol import LiveConfig
from voiceai_ari.providers.openai_live.session import LiveSession

KEY = "sk-live-test"
TOOLS = [{"type": "function", "name": "send_dtmf", "description": "keys", "parameters": {"type": "object"}},
         {"type": "function", "name": "hangup_call", "description": "end", "parameters": {"type": "object"}}]


@pytest.fixture
async def fake():
    async for make in fake_servers(FakeLiveServer, api_key=KEY, seed=1):
        yield make


def utterance(seconds=0.6):
    return tone(1000, seconds, 24000) + silence(0.6, 24000)


async def test_a_turn_is_heard_and_answered_at_24k_paced_by_the_input_clock(fake):
    server = await fake(mode="tone", tone_hz=440, tone_seconds=1.0, usage_every_s=1.0)
    s = LiveSession(server.url, KEY, LiveConfig(instructions="be brief", voice="cedar", tools=TOOLS))
    await s.start()
    try:
        fs = await server.wait_for_session()
        cfg = fs.config
        assert cfg["model"] == "gpt-live-1.1" and cfg["instructions"] == "be brief"
        assert cfg["audio"] == {"format": {"type": "audio/pcm", "rate": 24000}, "output": {"voice": "cedar"}}
        assert cfg["delegation"]["responses"]["model"] == "gpt-5.6-terra"
        assert [t["name"] for t in cfg["delegation"]["responses"]["tools"]] == ["send_dtmf", "hangup_call"]
        feed(s, utterance())
        feed(s, silence(1.5, 24000))        # the call streams silence: the reply comes out with it
        evs = await collect(s, lambda e: isinstance(e, ResponseDone))
        assert abs(dominant_frequency(bytes(fs.audio[:24000]), 24000) - 1000) < 5
        reply = b"".join(e.pcm for e in evs if isinstance(e, AudioDelta))
        assert len(reply) == 48000 and abs(dominant_frequency(reply, 24000) - 440) < 5
        assert len({e.item_id for e in evs if isinstance(e, AudioDelta)}) == 1
        assert any(isinstance(e, AudioDone) for e in evs)
        assert not any(isinstance(e, SpeechStarted) for e in evs)
        texts = [(e.role, e.text) for e in evs if isinstance(e, Transcript)]
        assert [r for r, _ in texts] == ["caller", "bot"] and texts[1][1] == "(tone)"
        assert texts[0][1].startswith("(caller spoke ")
        assert evs[-1].status == "completed"
        usage = [e.usage["live_seconds"] for e in evs if isinstance(e, UsageUpdate)]
        assert usage and sum(usage) == fs.input_ms // 1000   # one update per second of input, priced once
    finally:
        await s.close()
    await asyncio.wait_for(fs.closed.wait(), 2)
    assert fs.received_of("session.close")


async def test_without_input_audio_the_reply_stalls(fake):
    server = await fake(mode="tone", tone_seconds=0.5)
    s = LiveSession(server.url, KEY, LiveConfig())
    await s.start()
    try:
        fs = await server.wait_for_session()
        feed(s, utterance())
        await asyncio.sleep(0.5)
        deltas = fs.sent_of("session.output_audio.delta")
        assert len(deltas) == 12      # one ~100 ms delta per 100 ms of input (1.2 s), then nothing more
        assert sum(m["delta"] for m in deltas[11:]) == 4800    # the reply has begun: 100 ms of it is out
        await asyncio.sleep(0.3)
        assert len(fs.sent_of("session.output_audio.delta")) == 12
        feed(s, silence(1.0, 24000))
        evs = await collect(s, lambda e: isinstance(e, ResponseDone))
        assert sum(len(e.pcm) for e in evs if isinstance(e, AudioDelta)) == 24000
    finally:
        await s.close()


async def test_tool_calls_are_answered_as_one_batch_then_the_model_goes_on(fake):
    server = await fake(script=[
        {"audio": "tone", "tone_seconds": 0.3, "function_calls": [
            {"name": "send_dtmf", "args": {"digits": "4"}}, {"name": "send_dtmf", "args": {"digits": "2"}}]},
        {"audio": "tone", "tone_hz": 700, "tone_seconds": 0.5}])
    s = LiveSession(server.url, KEY, LiveConfig(tools=TOOLS))
    await s.start()
    try:
        fs = await server.wait_for_session()
        feed(s, utterance() + silence(0.6, 24000))
        calls = []
        evs = await collect(s, lambda e: isinstance(e, ToolCall) and calls.append(e) is None and len(calls) == 2)
        assert [json.loads(c.arguments) for c in calls] == [{"digits": "4"}, {"digits": "2"}]
        seen = []
        later = asyncio.ensure_future(collect(s, lambda e: seen.append(e) or (isinstance(e, ResponseDone) and any(
            isinstance(x, AudioDelta) and x.item_id == "live-burst-2" for x in seen))))
        await asyncio.sleep(0.2)                            # the backend's response.completed is read
        s.send_tool_result(calls[0].call_id, '{"ok": true}')
        await asyncio.sleep(0.2)
        assert fs.received_of("response.create") == []     # half a batch: no continuation asked for yet
        s.send_tool_result(calls[1].call_id, '{"ok": true}')
        await asyncio.sleep(0.2)
        assert len(fs.received_of("response.create")) == 1
        assert [o["call_id"] for o in fs.tool_outputs] == [c.call_id for c in calls]
        feed(s, silence(1.0, 24000))
        evs = await later
        reply = b"".join(e.pcm for e in evs if isinstance(e, AudioDelta))
        assert abs(dominant_frequency(reply, 24000) - 700) < 5
        assert not [m for m in fs.sent_of("error")]
    finally:
        await s.close()


async def test_the_fake_refuses_a_partial_batch_and_unknown_config_fields(fake):
    server = await fake(script=[{"audio": "none", "function_calls": [{"name": "a"}, {"name": "b"}]}])
    async with websockets.connect(server.url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        await ws.send(json.dumps({"type": "session.start", "session": {"model": "gpt-live-1.1"}}))
        assert json.loads(await ws.recv())["type"] == "session.started"
        await ws.send(json.dumps({"type": "session.commentary.append", "content": "hi", "delegation_id": None}))
        await ws.send(json.dumps({"type": "session.input_audio.append", "audio": ""}))
        fs = await server.wait_for_session()
        await ws.send(json.dumps({"type": "session.input_audio.append",
                                  "audio": __import__("base64").b64encode(silence(0.2, 24000)).decode()}))
        calls = []
        while len(calls) < 2:
            m = json.loads(await ws.recv())
            if m["type"] == "response.event" and m["event"]["type"] == "response.output_item.done":
                calls.append(m["event"]["item"]["call_id"])
        await ws.send(json.dumps({"type": "response.item.create", "item": {
            "type": "function_call_output", "call_id": calls[0], "output": "x"}}))
        await ws.send(json.dumps({"type": "response.create"}))
        while (m := json.loads(await ws.recv()))["type"] != "error":
            pass
        assert m["error"]["code"] == "incomplete_function_call_outputs"
        assert fs.sent_of("error")
    async with websockets.connect(server.url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        await ws.send(json.dumps({"type": "session.start", "session": {
            "model": "gpt-live-1.1", "audio": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": {}}}}))
        err = json.loads(await ws.recv())
        assert err["error"]["code"] == "unknown_parameter" and err["error"]["param"] == "session.audio.turn_detection"
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()     # no session.started: the socket closes


async def test_a_refused_start_and_a_bad_key_raise_at_start(fake):
    server = await fake()
    with pytest.raises(ConnectionRefusedError, match="model_not_found"):
        await LiveSession(server.url, KEY, LiveConfig(model="gpt-live-9")).start()
    with pytest.raises(websockets.InvalidStatus):
        await LiveSession(server.url, "sk-wrong", LiveConfig()).start()


async def test_a_dropped_connection_starts_a_new_session_seeded_with_the_conversation(fake):
    server = await fake(mode="tone", tone_seconds=0.4)
    s = LiveSession(server.url, KEY, LiveConfig())
    await s.start()
    try:
        fs = await server.wait_for_session()
        feed(s, utterance() + silence(1.0, 24000))
        await collect(s, lambda e: isinstance(e, ResponseDone))
        await asyncio.sleep(0.9)                     # the bot's transcript settles
        s.update_instructions("speak French")
        await asyncio.sleep(0.1)
        fs.drop()
        evs = await collect(s, lambda e: isinstance(e, ModelReconnected))
        fs2 = await server.wait_for_session(2)
        assert fs2.config["instructions"] == "speak French"
        assert [m["role"] for m in fs2.config["input"]] == ["user", "assistant"]
        assert fs2.config["input"][1]["content"] == [{"type": "output_text", "text": "(tone)"}]
        feed(s, utterance() + silence(1.0, 24000))
        evs = await collect(s, lambda e: isinstance(e, ResponseDone))
        assert sum(len(e.pcm) for e in evs if isinstance(e, AudioDelta)) == int(0.4 * 24000) * 2
        assert s.reconnects == 1
    finally:
        await s.close()


async def test_moderation_close_is_fatal_and_expiry_reconnects(fake):
    server = await fake()
    s = LiveSession(server.url, KEY, LiveConfig())
    await s.start()
    try:
        fs = await server.wait_for_session()
        await fs.end("expired")
        await collect(s, lambda e: isinstance(e, ModelReconnected))
        fs2 = await server.wait_for_session(2)
        await fs2.end("content")
        evs = await collect(s, lambda e: isinstance(e, ModelClosed))
        errs = [e for e in evs if isinstance(e, ModelError)]
        assert errs and errs[0].fatal and errs[0].code == "content"
    finally:
        await s.close()


async def test_greeting_say_and_keys_use_the_appends_and_long_text_is_clipped(fake):
    server = await fake(mode="tone", tone_seconds=0.3)
    s = LiveSession(server.url, KEY, LiveConfig())
    await s.start()
    try:
        fs = await server.wait_for_session()
        s.request_response()
        s.say("x" * 5000)
        s.send_text("The caller pressed 5 on the keypad.")
        feed(s, silence(1.0, 24000))
        evs = await collect(s, lambda e: isinstance(e, ResponseDone))
        assert any(isinstance(e, AudioDelta) for e in evs)      # the greeting is spoken
        assert fs.received_of("session.instructions.append")[0]["delegation_id"] is None
        assert len(fs.received_of("session.commentary.append")[0]["content"]) <= 2000
        assert fs.received_of("session.thinking.append")[0]["content"].startswith("The caller pressed 5")
        assert not fs.sent_of("error")
        assert [m["type"] for m in fs.sent if m["type"].endswith(".appended")] == [
            "session.instructions.appended", "session.commentary.appended", "session.thinking.appended"]
    finally:
        await s.close()


async def test_caller_speech_stops_the_reply_without_a_speech_started(fake):
    server = await fake(mode="tone", tone_seconds=5.0, silence_ms=300)
    s = LiveSession(server.url, KEY, LiveConfig())
    await s.start()
    try:
        await server.wait_for_session()
        feed(s, tone(1000, 0.4, 24000) + silence(0.6, 24000))
        await collect(s, lambda e: isinstance(e, AudioDelta))
        feed(s, tone(800, 0.4, 24000) + silence(0.4, 24000))
        evs = await collect(s, lambda e: isinstance(e, ResponseDone))
        assert not any(isinstance(e, SpeechStarted) for e in evs)
        played = sum(len(e.pcm) for e in evs if isinstance(e, AudioDelta))
        assert played < 2 * 24000 * 2     # stopped well before its 5 s
    finally:
        await s.close()


async def test_session_ready_first(fake):
    server = await fake()
    s = LiveSession(server.url, KEY, LiveConfig())
    await s.start()
    try:
        evs = await collect(s, lambda e: True)
        assert isinstance(evs[0], SessionReady) and evs[0].session_id.startswith("live_")
    finally:
        await s.close()


async def test_a_reply_paced_at_real_time_arrives_whole_as_one_burst(fake):
    """GPT-Live streams at the pace of the input: a reply longer than the transcript gap still plays whole."""
    server = await fake(mode="tone", tone_hz=440, tone_seconds=1.5, silence_ms=300)
    s = LiveSession(server.url, KEY, LiveConfig())
    await s.start()
    loop = asyncio.get_running_loop()
    pcm = tone(1000, 0.4, 24000) + silence(2.6, 24000)

    async def real_time():
        t0 = loop.time()
        for k, i in enumerate(range(0, len(pcm), 960)):
            s.send_audio(pcm[i:i + 960])
            await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.02 - loop.time()))
    feeder = asyncio.create_task(real_time())
    try:
        evs = await collect(s, lambda e: isinstance(e, ResponseDone), timeout=6)
        reply = [e for e in evs if isinstance(e, AudioDelta)]
        assert sum(len(e.pcm) for e in reply) == 1.5 * 48000 and len({e.item_id for e in reply}) == 1
    finally:
        feeder.cancel()
        await s.close()
