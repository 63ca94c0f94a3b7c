"""The fake Realtime server's 2.x session fields, over real WebSockets."""

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
