"""The fake Realtime server's 2.x session fields, idle timeout and failing responses, over real WebSockets."""

from __future__ import annotations

import json

from voiceai_ari.fakes import audio_gen

from tests.test_fake_realtime import RATE, append_pcm, make_server, opened, send, until, ws_connect  # noqa: F401


def update(**session):
    return {"type": "session.update", "session": {"type": "realtime", **session}}


async def test_2x_fields_are_validated_like_the_live_api(make_server):
    server = await make_server(mode="tone")
    async with ws_connect(server) as ws:
        await opened(ws)

        async def error_for(event: dict) -> dict:
            await ws.send(json.dumps(event))
            ev, _ = await until(ws, "error")
            assert set(ev["error"]) == {"type", "code", "message", "param", "event_id"}
            assert ev["error"]["type"] == "invalid_request_error"
            return ev["error"]

        e = await error_for(update(reasoning={"effort": "extreme"}))
        assert (e["code"], e["param"]) == ("invalid_value", "session.reasoning.effort")
        assert e["message"] == ("Invalid value: 'extreme'. Supported values are: 'minimal', 'low', 'medium', "
                                "'high', and 'xhigh'.")
        e = await error_for(update(truncation="sometimes"))
        assert (e["code"], e["param"]) == ("invalid_value", "session.truncation")
        e = await error_for(update(truncation={"type": "retention_ratio", "retention_ratio": 1.5}))
        assert (e["code"], e["param"]) == ("invalid_value", "session.truncation.retention_ratio")
        e = await error_for(update(truncation={"type": "retention_ratio"}))
        assert (e["code"], e["param"]) == ("missing_required_parameter", "session.truncation.retention_ratio")
        e = await error_for(update(audio={"input": {"noise_reduction": {"type": "studio"}}}))
        assert (e["code"], e["param"]) == ("invalid_value", "session.audio.input.noise_reduction.type")
        e = await error_for(update(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                       "idle_timeout_ms": "soon"}}}))
        assert (e["code"], e["param"]) == ("invalid_type", "session.audio.input.turn_detection.idle_timeout_ms")
        e = await error_for(update(audio={"input": {"turn_detection": {"type": "semantic_vad",
                                                                       "idle_timeout_ms": 5000}}}))
        assert (e["code"], e["param"]) == ("unknown_parameter", "session.audio.input.turn_detection.idle_timeout_ms")
        # the good values are taken
        await ws.send(json.dumps(update(reasoning={"effort": "low"}, truncation={"type": "retention_ratio",
                                                                         "retention_ratio": 0.8},
                                audio={"input": {"noise_reduction": {"type": "far_field"},
                                                 "turn_detection": {"type": "server_vad", "idle_timeout_ms": 6000}}})))
        s = (await until(ws, "session.updated"))[0]["session"]
        assert s["reasoning"] == {"effort": "low"} and s["truncation"]["retention_ratio"] == 0.8
        assert s["audio"]["input"]["noise_reduction"] == {"type": "far_field"}
        assert s["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 6000


async def test_idle_timeout_after_the_last_response_was_heard(make_server):
    server = await make_server(mode="tone", tone_seconds=0.5)
    async with ws_connect(server) as ws:
        await opened(ws)
        await ws.send(json.dumps(update(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                             "idle_timeout_ms": 1000}}})))
        await until(ws, "session.updated")
        # a turn and its 0.5 s answer; the timer starts once the answer has been heard
        await append_pcm(ws, audio_gen.tone(1000, 0.5, RATE) + audio_gen.silence(0.6, RATE))
        await until(ws, "response.done")
        heard_from = len(server.sessions[0].audio) / 48 + 500
        await append_pcm(ws, audio_gen.silence(1.4, RATE))      # 0.5 s playback + 0.9 s: not yet
        await append_pcm(ws, audio_gen.silence(0.2, RATE))      # now past 1000 ms of silence
        ev, seen = await until(ws, "input_audio_buffer.timeout_triggered")
        assert ev["audio_start_ms"] == int(heard_from)
        assert 1000 <= ev["audio_end_ms"] - ev["audio_start_ms"] <= 1040
        assert ev["item_id"].startswith("item_")
        # the silent audio becomes an item, and the server answers by itself (A.7)
        committed, after = await until(ws, "input_audio_buffer.committed")
        assert committed["item_id"] == ev["item_id"]
        created, _ = await until(ws, "response.created")
        await until(ws, "response.done")
        # speech resets it: no second timeout while the caller talks
        await append_pcm(ws, audio_gen.tone(1000, 0.5, RATE) + audio_gen.silence(0.6, RATE))
        await until(ws, "response.done")
    fs = server.sessions[0]
    assert len(fs.sent_of("input_audio_buffer.timeout_triggered")) == 1


async def test_idle_timeout_is_off_by_default(make_server):
    server = await make_server(mode="tone", tone_seconds=0.2)
    async with ws_connect(server) as ws:
        await opened(ws)
        await append_pcm(ws, audio_gen.silence(3.0, RATE))
        await send(ws, "session.update", session={"type": "realtime", "instructions": "x"})
        await until(ws, "session.updated")
    assert not server.sessions[0].sent_of("input_audio_buffer.timeout_triggered")


async def test_fail_responses_fail_like_the_live_api(make_server):
    server = await make_server(mode="tone", tone_seconds=0.2, fail_responses=["insufficient_quota",
                                                                              "rate_limit_exceeded"])
    async with ws_connect(server) as ws:
        await opened(ws)
        for code in ("insufficient_quota", "rate_limit_exceeded", None):
            await send(ws, "response.create")
            created, _ = await until(ws, "response.created")
            done, seen = await until(ws, "response.done")
            r = done["response"]
            assert r["id"] == created["response"]["id"]
            if code is None:
                assert r["status"] == "completed"
                continue
            assert r["status"] == "failed" and r["output"] == []
            assert r["status_details"] == {"type": "failed", "error": {"type": code, "code": code}}
            assert [e["type"] for e in seen] == ["response.done"], "nothing between created and done"
