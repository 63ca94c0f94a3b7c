"""RealtimeSession (websockets client) against the fake Realtime server over loopback."""

import asyncio

import pytest

from tests.session_io import collect, feed
from voiceai_ari.fakes.audio_gen import dominant_frequency, silence, tone
from voiceai_ari.fakes.realtime.server import FakeRealtimeServer
from voiceai_ari.providers.base import (AudioDelta, AudioDone, ModelClosed, ModelError, ModelReconnected, ResponseDone,
                               SessionReady, SpeechStarted)
from voiceai_ari.providers.openai_realtime.protocol import SessionConfig
from voiceai_ari.providers.openai_realtime.session import RealtimeSession


@pytest.fixture
async def fake():
    server = FakeRealtimeServer(mode="tone", tone_hz=440, tone_seconds=1.0, speed=20, seed=1, api_key="sk-test")
    await server.start()
    yield server
    await server.stop()


async def test_turn_gives_paced_audio_back(fake):
    s = RealtimeSession(fake.url, "sk-test", SessionConfig(instructions="x", vad_silence_ms=300))
    await s.start()
    try:
        fs = await fake.wait_for_session()
        feed(s, tone(1000, 0.6, 24000) + silence(0.8, 24000))
        evs = await collect(s, lambda e: isinstance(e, ResponseDone))
        assert isinstance(evs[0], SessionReady) and evs[0].session_id == fs.id
        assert fs.config["instructions"] == "x"
        assert fs.config["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 300
        audio = b"".join(e.pcm for e in evs if isinstance(e, AudioDelta))
        assert len(audio) == 48000  # 1.0 s at 24 kHz, 16-bit
        assert abs(dominant_frequency(audio, 24000) - 440) < 5
        assert any(isinstance(e, AudioDone) for e in evs)
        assert evs[-1] == ResponseDone("completed", None)
        assert abs(dominant_frequency(bytes(fs.audio[:24000]), 24000) - 1000) < 5
        assert not [e for e in fs.received if e["type"] == "error"]
    finally:
        await s.close()


async def test_barge_in_truncates_what_was_played(fake):
    fake_long = FakeRealtimeServer(mode="tone", tone_hz=440, tone_seconds=8.0, speed=4, seed=2)
    await fake_long.start()
    s = RealtimeSession(fake_long.url, "k", SessionConfig(vad_silence_ms=200))
    await s.start()
    try:
        fs = await fake_long.wait_for_session()
        feed(s, tone(1000, 0.4, 24000) + silence(0.4, 24000))
        evs = await collect(s, lambda e: isinstance(e, AudioDelta) and s.proto.audio_ms[e.item_id] > 600)
        item = next(e.item_id for e in evs if isinstance(e, AudioDelta))
        feed(s, tone(800, 0.3, 24000))   # the caller talks over the bot
        evs = await collect(s, lambda e: isinstance(e, SpeechStarted))
        s.interrupt(item, 250)             # the caller heard 250 ms
        t = await fs.wait_for("conversation.item.truncate")
        assert (t["item_id"], t["content_index"], t["audio_end_ms"]) == (item, 0, 250)
        evs = await collect(s, lambda e: isinstance(e, ResponseDone))
        assert evs[-1] == ResponseDone("cancelled", "turn_detected")
        assert not fs.events_of("response.cancel")  # the server cancelled by itself
    finally:
        await s.close()
        await fake_long.stop()


async def one_turn(s, fs_audio_tone=1000):
    feed(s, tone(fs_audio_tone, 0.4, 24000) + silence(0.5, 24000))
    return await collect(s, lambda e: isinstance(e, ResponseDone))


async def test_expired_session_rolls_over_with_the_conversation(fake):
    s = RealtimeSession(fake.url, "sk-test", SessionConfig(vad_silence_ms=200, transcription_model="whisper-1"))
    await s.start()
    try:
        first = await fake.wait_for_session()
        await one_turn(s)
        assert [r for r, _ in s.proto.history] == ["user", "assistant"]
        first.expire()
        evs = await collect(s, lambda e: isinstance(e, ModelReconnected))
        assert [e.code for e in evs if isinstance(e, ModelError)] == ["session_expired"]
        assert not any(e.fatal for e in evs if isinstance(e, ModelError))
        assert "expired" in evs[-1].reason
        second = await fake.wait_for_session(2)
        assert evs[-1].session_id == second.id != first.id
        await second.wait_for("session.update")
        restored = [e["item"] for e in second.events_of("conversation.item.create")]
        assert [(i["role"], i["content"][0]["type"]) for i in restored] == [("user", "input_text"),
                                                                               ("assistant", "output_text")]
        evs = await one_turn(s)                       # the conversation goes on in the new session
        assert sum(len(e.pcm) for e in evs if isinstance(e, AudioDelta)) == 48000
        assert not [e for e in second.received if e["type"] == "error"], second.received
    finally:
        await s.close()


async def test_dropped_socket_reconnects_and_goes_on(fake):
    s = RealtimeSession(fake.url, "sk-test", SessionConfig(vad_silence_ms=200))
    await s.start()
    try:
        fs = await fake.wait_for_session()
        fs.drop()
        evs = await collect(s, lambda e: isinstance(e, (ModelReconnected, ModelClosed)))
        assert isinstance(evs[-1], ModelReconnected) and "connection lost" in evs[-1].reason
        await fake.wait_for_session(2)
        evs = await one_turn(s)
        assert evs[-1] == ResponseDone("completed", None)
        assert s.reconnects == 1
    finally:
        await s.close()


async def test_model_gone_for_good_closes_after_two_attempts(fake):
    s = RealtimeSession(fake.url, "sk-test", SessionConfig())
    await s.start()
    await fake.wait_for_session()
    await fake.stop()
    evs = await collect(s, lambda e: isinstance(e, ModelClosed))
    assert not any(isinstance(e, ModelReconnected) for e in evs)
    await s.close()


async def test_wrong_key_fails_to_start(fake):
    s = RealtimeSession(fake.url, "wrong", SessionConfig())
    with pytest.raises(Exception) as exc:
        await s.start()
    assert "401" in str(exc.value)


async def test_cancel_is_sent_when_the_server_does_not_interrupt():
    fake = FakeRealtimeServer(mode="tone", tone_hz=440, tone_seconds=8.0, speed=4, seed=5)
    await fake.start()
    s = RealtimeSession(fake.url, "k", SessionConfig(vad_silence_ms=200, interrupt_response=False))
    await s.start()
    try:
        fs = await fake.wait_for_session()
        feed(s, tone(1000, 0.4, 24000) + silence(0.4, 24000))
        evs = await collect(s, lambda e: isinstance(e, AudioDelta) and s.proto.audio_ms[e.item_id] > 300)
        item = next(e.item_id for e in evs if isinstance(e, AudioDelta))
        feed(s, tone(800, 0.3, 24000))
        await collect(s, lambda e: isinstance(e, SpeechStarted))
        s.interrupt(item, 100)
        cancel = await fs.wait_for("response.cancel")
        evs = await collect(s, lambda e: isinstance(e, ResponseDone))
        assert evs[-1] == ResponseDone("cancelled", "client_cancelled")
        assert cancel["response_id"] == fs.responses[0]["id"]
    finally:
        await s.close()
        await fake.stop()


async def test_ephemeral_secret_per_connection_with_the_config_burned_in():
    from voiceai_ari.providers.openai_realtime.credentials import EphemeralSecrets
    fake = FakeRealtimeServer(mode="tone", tone_seconds=0.3, speed=20, api_key="sk-master")
    await fake.start()
    cfg = SessionConfig(instructions="burned in", vad_silence_ms=200)
    creds = EphemeralSecrets(fake.url, "sk-master", cfg.session(), ttl_s=60)
    s = RealtimeSession(fake.url, creds, cfg)
    try:
        await s.start()
        fs = await fake.wait_for_session()
        assert creds.minted == 1 and len(fake.client_secrets) == 1
        assert fs.config["instructions"] == "burned in"     # from the secret, before any session.update
        fs.drop()                                            # a reconnect mints a fresh secret
        await collect(s, lambda e: isinstance(e, ModelReconnected))
        assert creds.minted == 2
    finally:
        await s.close()
        await fake.stop()


async def test_expired_ephemeral_secret_is_refused():
    import time as _t
    fake = FakeRealtimeServer(mode="tone", api_key="sk-master")
    await fake.start()
    fake.client_secrets["ek_old"] = (_t.time() - 1, {})
    s = RealtimeSession(fake.url, "ek_old", SessionConfig())
    with pytest.raises(Exception, match="401"):
        await s.start()
    await fake.stop()


async def test_token_service_token_is_reused_until_it_expires():
    import time as _t

    from aiohttp import web

    from voiceai_ari.providers.openai_realtime.credentials import TokenService
    fake = FakeRealtimeServer(mode="tone", api_key="sk-master")
    await fake.start()
    hits = []

    async def token(request):
        hits.append(1)
        return web.json_response({"value": "sk-master", "expires_at": _t.time() + 600})
    app = web.Application()
    app.router.add_get("/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    creds = TokenService(f"http://127.0.0.1:{port}/token")
    try:
        for _ in range(2):
            s = RealtimeSession(fake.url, creds, SessionConfig())
            await s.start()
            await s.close()
        assert len(hits) == 1 and len(fake.sessions) == 2
    finally:
        await runner.cleanup()
        await fake.stop()


async def test_audio_is_written_at_once_and_keeps_its_order_when_the_socket_backs_up(fake, monkeypatch):
    """Appends go straight to the transport; while it reports a backlog they queue, and everything reaches
    the server in the order it was sent (nothing is written directly while anything is queued)."""
    from voiceai_ari.providers import websocket as outbox

    s = RealtimeSession(fake.url, "sk-test", SessionConfig(vad_threshold=0.99))
    await s.start()
    try:
        fs = await fake.wait_for_session()
        limit = outbox.WRITE_NOW_LIMIT
        chunks = [bytes([k]) * 960 for k in range(60)]
        for c in chunks[:20]:
            s.send_audio(c)
        assert s._outbox.queued == 0                          # written inside send_audio
        monkeypatch.setattr(outbox, "WRITE_NOW_LIMIT", -1)   # "backed up" (on any loop's transport)
        for c in chunks[20:40]:
            s.send_audio(c)
        assert s._outbox.queued > 0
        monkeypatch.setattr(outbox, "WRITE_NOW_LIMIT", limit)
        for c in chunks[40:]:
            s.send_audio(c)                                 # queued behind the backlog, not written first
        async with asyncio.timeout(5):
            while len(fs.audio) < 60 * 960:
                await asyncio.sleep(0.01)
        assert bytes(fs.audio[:60 * 960]) == b"".join(chunks)
        assert s.dropped_audio == 0
    finally:
        await s.close()


async def test_idle_timeout_answer_is_replaced_by_ours():
    from voiceai_ari.providers.base import CallerIdle
    script = [{"audio": "tone", "tone_hz": 440, "tone_seconds": 1.0},    # the server's own idle answer
              {"audio": "tone", "tone_hz": 880, "tone_seconds": 0.5}]    # ours
    fake = FakeRealtimeServer(mode="tone", speed=4, seed=3, script=script)
    await fake.start()
    s = RealtimeSession(fake.url, "k", SessionConfig(idle_timeout_ms=500))
    await s.start()
    try:
        fs = await fake.wait_for_session()
        feed(s, silence(0.7, 24000))
        evs = await collect(s, lambda e: isinstance(e, CallerIdle))
        assert 500 <= evs[-1].silent_ms <= 540
        s.respond_instead("Ask whether the caller is still there.")
        evs = await collect(s, lambda e: isinstance(e, ResponseDone) and not e.superseded)
        audio = b"".join(e.pcm for e in evs if isinstance(e, AudioDelta))
        assert len(audio) == 24000 and abs(dominant_frequency(audio, 24000) - 880) < 5, "only ours is heard"
        [superseded] = [e for e in evs if isinstance(e, ResponseDone) and e.superseded]
        assert superseded.status == "cancelled"
        [cancel] = fs.events_of("response.cancel")
        assert cancel["response_id"] == fs.responses[0]["id"]
        [create] = fs.events_of("response.create")
        assert create["response"]["instructions"] == "Ask whether the caller is still there."
        assert not fs.events_of("error") and not [e for e in evs if isinstance(e, ModelError)]
    finally:
        await s.close()
        await fake.stop()


async def test_failed_response_reaches_the_call_as_a_model_error():
    fake = FakeRealtimeServer(mode="tone", tone_seconds=0.2, speed=20, fail_responses=["rate_limit_exceeded"])
    await fake.start()
    s = RealtimeSession(fake.url, "k", SessionConfig())
    await s.start()
    try:
        s.request_response("Hello.")
        evs = await collect(s, lambda e: isinstance(e, ResponseDone))
        assert evs[-2:] == [ModelError("rate_limit_exceeded", "response failed (rate_limit_exceeded)", False),
                            ResponseDone("failed", None)]
        s.request_response("Hello again.")    # the next one works
        evs = await collect(s, lambda e: isinstance(e, ResponseDone))
        assert evs[-1] == ResponseDone("completed", None) and any(isinstance(e, AudioDelta) for e in evs)
    finally:
        await s.close()
        await fake.stop()
