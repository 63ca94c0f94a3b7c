"""The fake OpenAI Realtime (GA) server, driven by real WebSocket clients over loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
import time

import pytest
import websockets
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from voiceai_ari.fakes import audio_gen
from voiceai_ari.fakes.realtime.server import FakeRealtimeServer
from voiceai_ari.fakes.vad import EnergyVad, threshold_to_dbfs

RATE = 24000
AUTH = {"Authorization": "Bearer test"}


# ---- helpers ------------------------------------------------------------------------------------
@pytest.fixture
async def make_server():
    servers: list[FakeRealtimeServer] = []

    async def make(**kw) -> FakeRealtimeServer:
        kw.setdefault("speed", 50.0)
        kw.setdefault("seed", 7)
        server = FakeRealtimeServer(**kw)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


def ws_connect(server: FakeRealtimeServer, headers: dict | None = None, query: str = "?model=gpt-realtime"):
    return connect(server.url + query, additional_headers=AUTH if headers is None else headers,
                   compression=None, max_size=None)


async def send(ws, type_: str, **fields) -> None:
    await ws.send(json.dumps({"type": type_, **fields}))


async def until(ws, type_: str, timeout: float = 5.0) -> tuple[dict, list[dict]]:
    """Read events until one of ``type_``; return it and every event read (it included)."""
    seen: list[dict] = []
    async with asyncio.timeout(timeout):
        while True:
            ev = json.loads(await ws.recv())
            seen.append(ev)
            if ev["type"] == type_:
                return ev, seen


async def opened(ws) -> dict:
    created, _ = await until(ws, "session.created")
    await until(ws, "conversation.created")
    return created


async def append_pcm(ws, pcm: bytes, chunk_ms: int = 20) -> None:
    step = RATE * 2 * chunk_ms // 1000
    for i in range(0, len(pcm), step):
        await send(ws, "input_audio_buffer.append", audio=base64.b64encode(pcm[i:i + step]).decode())


async def no_vad(ws) -> None:
    await send(ws, "session.update", session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
    await until(ws, "session.updated")


def utterance(freq: float, lead_s: float = 0.5, speech_s: float = 1.0, tail_s: float = 1.0) -> bytes:
    return (audio_gen.silence(lead_s, RATE) + audio_gen.tone(freq, speech_s, RATE, dbfs=-12.0)
            + audio_gen.silence(tail_s, RATE))


RESPONSE_ORDER = ["response.created", "rate_limits.updated", "response.output_item.added",
                  "conversation.item.added", "response.content_part.added", "response.output_audio.done",
                  "response.output_audio_transcript.done", "response.content_part.done", "conversation.item.done",
                  "response.output_item.done", "response.done"]


def response_skeleton(events: list[dict]) -> list[str]:
    """Event types of one response with the deltas removed."""
    start = next(i for i, e in enumerate(events) if e["type"] == "response.created")
    return [e["type"] for e in events[start:] if not e["type"].endswith(".delta")]


def audio_of(events: list[dict]) -> list[bytes]:
    return [base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"]


# ---- connection and session ---------------------------------------------------------------------
async def test_session_created_first_with_ga_defaults(make_server):
    server = await make_server(mode="tone")
    async with ws_connect(server) as ws:
        first = json.loads(await ws.recv())
        second = json.loads(await ws.recv())
    assert first["type"] == "session.created" and first["event_id"].startswith("event_")
    s = first["session"]
    assert s["id"].startswith("sess_") and s["object"] == "realtime.session" and s["type"] == "realtime"
    assert s["model"] == "gpt-realtime" and s["output_modalities"] == ["audio"] and s["instructions"] == ""
    assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert s["audio"]["input"]["turn_detection"] == {
        "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
        "create_response": True, "interrupt_response": True, "idle_timeout_ms": None}
    assert s["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy", "speed": 1.0}
    assert (s["tools"], s["tool_choice"], s["max_output_tokens"]) == ([], "auto", "inf")
    assert second["type"] == "conversation.created"
    assert second["conversation"]["object"] == "realtime.conversation"
    assert first["event_id"] != second["event_id"]
    session = await server.wait_for_session(1)
    assert session.id == s["id"]
    await asyncio.wait_for(session.closed.wait(), 2)


async def test_missing_model_defaults_and_custom_model(make_server):
    server = await make_server(mode="tone")
    async with ws_connect(server, query="") as ws:
        assert (await opened(ws))["session"]["model"] == "gpt-realtime"
    async with ws_connect(server, query="?model=gpt-realtime-mini") as ws:
        assert (await opened(ws))["session"]["model"] == "gpt-realtime-mini"
    assert len(server.sessions) == 2


async def test_session_update_merges_partially(make_server):
    server = await make_server(mode="tone")
    async with ws_connect(server) as ws:
        await opened(ws)
        await send(ws, "session.update", session={
            "type": "realtime", "instructions": "Be brief.",
            "audio": {"output": {"voice": "marin"}, "input": {"turn_detection": {"type": "server_vad",
                                                                                "silence_duration_ms": 300}}},
            "tools": [{"type": "function", "name": "hangup_call", "description": "end",
                       "parameters": {"type": "object", "properties": {}}}]})
        updated, _ = await until(ws, "session.updated")
        s = updated["session"]
        assert s["instructions"] == "Be brief." and s["audio"]["output"]["voice"] == "marin"
        assert s["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        td = s["audio"]["input"]["turn_detection"]
        assert td["silence_duration_ms"] == 300 and td["threshold"] == 0.5 and td["prefix_padding_ms"] == 300
        assert [t["name"] for t in s["tools"]] == ["hangup_call"]
        session = server.sessions[0]
        assert session.config == s
        assert (await session.wait_for("session.update"))["session"]["instructions"] == "Be brief."
        # a second update only touches what it names; a rejected one changes nothing
        await send(ws, "session.update", session={"type": "realtime", "instructions": ""})
        assert (await until(ws, "session.updated"))[0]["session"]["audio"]["output"]["voice"] == "marin"
        await send(ws, "session.update", session={"type": "realtime", "instructions": "x", "bogus_field": 1})
        err, _ = await until(ws, "error")
        assert err["error"] == {"type": "invalid_request_error", "code": "unknown_parameter",
                                "message": "Unknown parameter: 'session.bogus_field'.",
                                "param": "session.bogus_field", "event_id": None}
        assert session.config["instructions"] == ""
        assert len(session.events_of("session.update")) == 3


# ---- errors -------------------------------------------------------------------------------------
async def test_invalid_client_events_get_real_error_shapes(make_server):
    server = await make_server(mode="tone")
    async with ws_connect(server) as ws:
        await opened(ws)

        async def error_for(raw) -> dict:
            await ws.send(raw if isinstance(raw, (str, bytes)) else json.dumps(raw))
            ev, _ = await until(ws, "error")
            assert ev["event_id"].startswith("event_") and set(ev["error"]) == {
                "type", "code", "message", "param", "event_id"}
            return ev["error"]

        e = await error_for("{not json")
        assert (e["type"], e["code"], e["param"]) == ("invalid_request_error", "invalid_json", None)
        e = await error_for({"type": "nope", "event_id": "client-1"})
        assert (e["code"], e["param"], e["event_id"]) == ("invalid_value", "type", "client-1")
        assert e["message"].startswith("Invalid value: 'nope'. Supported values are: 'session.update'")
        e = await error_for({"event_id": "c2"})
        assert (e["code"], e["param"], e["event_id"]) == ("missing_required_parameter", "type", "c2")
        e = await error_for({"type": "session.update", "session": {"modalities": ["audio"], "voice": "alloy"}})
        assert (e["code"], e["param"]) == ("missing_required_parameter", "session.type")
        assert e["message"] == "Missing required parameter: 'session.type'."
        e = await error_for({"type": "session.update", "session": {"type": "realtime", "modalities": ["audio"]}})
        assert (e["code"], e["param"]) == ("unknown_parameter", "session.modalities")
        e = await error_for({"type": "session.update", "session": {"type": "realtime",
                                                                    "input_audio_format": "pcm16"}})
        assert (e["code"], e["param"]) == ("unknown_parameter", "session.input_audio_format")
        e = await error_for({"type": "session.update", "session": {"type": "conversation"}})
        assert (e["code"], e["param"]) == ("invalid_value", "session.type")
        e = await error_for({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 16000}}}}})
        assert (e["code"], e["param"]) == ("integer_below_min_value", "session.audio.input.format.rate")
        e = await error_for({"type": "session.update", "session": {"type": "realtime", "tools": [
            {"type": "function", "function": {"name": "x"}}]}})
        assert (e["code"], e["param"]) == ("unknown_parameter", "session.tools[0].function")
        e = await error_for({"type": "input_audio_buffer.append", "audio": "***not base64***"})
        assert (e["code"], e["param"]) == ("invalid_value", "audio")
        e = await error_for({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x00" * 3).decode()})
        assert (e["code"], e["param"]) == ("invalid_value", "audio")
        e = await error_for({"type": "conversation.item.truncate", "item_id": "item_x", "content_index": 0})
        assert (e["code"], e["param"]) == ("missing_required_parameter", "audio_end_ms")
        e = await error_for({"type": "conversation.item.truncate", "item_id": "item_x", "content_index": 0,
                             "audio_end_ms": "10"})
        assert (e["code"], e["param"]) == ("invalid_type", "audio_end_ms")
        e = await error_for({"type": "response.create", "response": {"modalities": ["text"]}})
        assert (e["code"], e["param"]) == ("unknown_parameter", "response.modalities")
        e = await error_for({"type": "conversation.item.create", "item": {"type": "message", "role": "user"}})
        assert (e["code"], e["param"]) == ("missing_required_parameter", "item.content")
        e = await error_for(b"\x00\x01")
        assert e["code"] == "invalid_event"
        e = await error_for("[1, 2]")
        assert e["code"] == "invalid_type"
        # still open and working
        await send(ws, "session.update", session={"type": "realtime", "instructions": "ok"})
        assert (await until(ws, "session.updated"))[0]["session"]["instructions"] == "ok"
    session = server.sessions[0]
    append = session.events_of("input_audio_buffer.append")
    assert len(append) == 2 and session.append_count == 2 and all("audio" not in e for e in append)


async def test_cancel_without_response(make_server):
    server = await make_server(mode="tone")
    async with ws_connect(server) as ws:
        await opened(ws)
        await ws.send(json.dumps({"type": "response.cancel", "event_id": "cx"}))
        err, _ = await until(ws, "error")
    assert err["error"] == {"type": "invalid_request_error", "code": "response_cancel_not_active",
                            "message": "Cancellation failed: no active response found", "param": None,
                            "event_id": "cx"}


async def test_handler_exception_becomes_server_error(make_server, monkeypatch, caplog):
    server = await make_server(mode="tone")

    async def boom(self, ev):
        raise RuntimeError("kaboom")

    monkeypatch.setattr("voiceai_ari.fakes.realtime.server.FakeSession._on_input_audio_buffer_clear", boom)
    async with ws_connect(server) as ws:
        await opened(ws)
        await send(ws, "input_audio_buffer.clear", event_id="e1")
        err, _ = await until(ws, "error")
        assert err["error"]["type"] == "server_error" and err["error"]["event_id"] == "e1"
        await send(ws, "session.update", session={"type": "realtime"})
        await until(ws, "session.updated")
    assert "kaboom" in caplog.text


# ---- VAD and responses --------------------------------------------------------------------------
async def test_vad_turn_and_tone_response(make_server):
    server = await make_server(mode="tone", tone_hz=440.0, tone_seconds=1.5, speed=20.0)
    async with ws_connect(server) as ws:
        await opened(ws)
        await append_pcm(ws, utterance(1000.0, lead_s=0.5, speech_s=1.0, tail_s=1.0))
        started, _ = await until(ws, "input_audio_buffer.speech_started")
        stopped, _ = await until(ws, "input_audio_buffer.speech_stopped")
        committed, after = await until(ws, "input_audio_buffer.committed")
        # onset 500 ms minus 300 ms prefix padding; end = 1500 ms + 500 ms silence duration
        assert abs(started["audio_start_ms"] - 200) <= 60
        assert abs(stopped["audio_end_ms"] - 2000) <= 60
        assert started["item_id"] == stopped["item_id"] == committed["item_id"]
        assert committed["previous_item_id"] is None
        added, _ = await until(ws, "conversation.item.done")
        assert added["item"]["role"] == "user" and added["item"]["content"] == [
            {"type": "input_audio", "transcript": None}]
        created, _ = await until(ws, "response.created")
        t0 = time.monotonic()
        done, events = await until(ws, "response.done")
        elapsed = time.monotonic() - t0
    events = [created, *events]
    assert response_skeleton(events) == RESPONSE_ORDER
    chunks = audio_of(events)
    pcm = b"".join(chunks)
    assert len(pcm) == int(1.5 * RATE) * 2  # exactly tone_seconds
    assert abs(audio_gen.dominant_frequency(pcm, RATE) - 440.0) < 2.0
    assert all(len(c) % 2 == 0 and 480 <= len(c) <= 9600 for c in chunks[:-1])
    assert len({len(c) for c in chunks}) > 1
    assert elapsed < 1.5 / 2  # at least 2x faster than real time (nominally 20x)
    deltas = [e for e in events if e["type"].endswith(".delta")]
    assert deltas[0]["type"] == "response.output_audio_transcript.delta"  # transcript leads its audio
    transcript = "".join(e["delta"] for e in deltas if e["type"] == "response.output_audio_transcript.delta")
    assert transcript == "(tone 440 Hz)"
    assert next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"] == transcript
    r = done["response"]
    assert (r["object"], r["status"], r["status_details"]) == ("realtime.response", "completed", None)
    assert r["output"][0]["role"] == "assistant" and r["output"][0]["status"] == "completed"
    assert set(r["usage"]) == {"total_tokens", "input_tokens", "output_tokens", "input_token_details",
                               "output_token_details"}
    d = next(e for e in events if e["type"] == "response.output_audio.delta")
    assert set(d) == {"type", "event_id", "response_id", "item_id", "output_index", "content_index", "delta"}
    session = server.sessions[0]
    assert session.responses == [r]
    assert len(session.audio) == len(utterance(1000.0))


async def test_echo_mode_plays_back_the_utterance(make_server):
    server = await make_server(mode="echo", speed=40.0)
    async with ws_connect(server) as ws:
        await opened(ws)
        await append_pcm(ws, utterance(600.0, lead_s=0.4, speech_s=0.8, tail_s=0.8))
        started, _ = await until(ws, "input_audio_buffer.speech_started")
        stopped, _ = await until(ws, "input_audio_buffer.speech_stopped")
        done, events = await until(ws, "response.done")
    pcm = b"".join(audio_of(events))
    session = server.sessions[0]
    assert pcm == bytes(session.audio[started["audio_start_ms"] * 48:stopped["audio_end_ms"] * 48])
    assert abs(audio_gen.dominant_frequency(pcm, RATE) - 600.0) < 2.0
    assert done["response"]["output"][0]["content"] == [{"type": "output_audio", "transcript": "(echo)"}]


async def test_tone_from_instructions_sets_the_pitch(make_server):
    """tone_from_instructions (tests tell agents apart by ear): a response's own "[tone N Hz]" first, else the
    session's; no mark: tone_hz. Off (the default), the mark is text like any other."""
    pitches = {}
    for flag in (True, False):
        server = await make_server(mode="tone", tone_hz=440, tone_seconds=0.3, tone_from_instructions=flag)
        async with ws_connect(server) as ws:
            await opened(ws)
            await send(ws, "session.update", session={"type": "realtime", "instructions": "Sales. [tone 900 Hz]"})
            heard = []
            for response in ({}, {"instructions": "Greet. [tone 600 Hz]"}):
                await send(ws, "response.create", response=response)
                _, events = await until(ws, "response.done")
                heard.append(round(audio_gen.dominant_frequency(b"".join(audio_of(events)), RATE)))
            await send(ws, "session.update", session={"type": "realtime", "instructions": "No mark."})
            await send(ws, "response.create", response={})
            _, events = await until(ws, "response.done")
            heard.append(round(audio_gen.dominant_frequency(b"".join(audio_of(events)), RATE)))
        pitches[flag] = heard
    assert pitches == {True: [900, 600, 440], False: [440, 440, 440]}


async def test_wav_mode_and_bad_wav(make_server, tmp_path):
    good = tmp_path / "ok.wav"
    audio_gen.write_wav(str(good), audio_gen.tone(300.0, 0.5, RATE), RATE)
    server = await make_server(mode="wav", wav_path=str(good))
    async with ws_connect(server) as ws:
        await opened(ws)
        await send(ws, "response.create")
        _, events = await until(ws, "response.done")
    assert b"".join(audio_of(events)) == audio_gen.tone(300.0, 0.5, RATE)
    bad = tmp_path / "16k.wav"
    audio_gen.write_wav(str(bad), audio_gen.tone(300.0, 0.1, 16000), 16000)
    with pytest.raises(ValueError, match="24000 Hz mono 16-bit"):
        await FakeRealtimeServer(mode="wav", wav_path=str(bad)).start()


async def test_text_modality_response(make_server):
    server = await make_server(mode="tone")
    async with ws_connect(server) as ws:
        await opened(ws)
        await send(ws, "response.create", response={"output_modalities": ["text"], "metadata": {"k": "v"}})
        done, events = await until(ws, "response.done")
    types = [e["type"] for e in events]
    assert "response.output_audio.delta" not in types and "response.output_text.done" in types
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "(tone 440 Hz)" and done["response"]["metadata"] == {"k": "v"}
    assert done["response"]["output"][0]["content"] == [{"type": "output_text", "text": text}]


async def test_manual_commit_clear_and_item_create(make_server):
    server = await make_server(mode="tone")
    async with ws_connect(server) as ws:
        await opened(ws)
        await no_vad(ws)
        await append_pcm(ws, audio_gen.tone(500.0, 0.05, RATE))
        await send(ws, "input_audio_buffer.commit")
        err, _ = await until(ws, "error")
        assert err["error"]["code"] == "input_audio_buffer_commit_empty"
        assert err["error"]["message"].startswith("Error committing input audio buffer: buffer too small. "
                                                  "Expected at least 100ms of audio")
        await append_pcm(ws, audio_gen.tone(500.0, 0.2, RATE))
        await send(ws, "input_audio_buffer.commit")
        committed, _ = await until(ws, "input_audio_buffer.committed")
        item, _ = await until(ws, "conversation.item.done")
        assert item["item"]["id"] == committed["item_id"]
        await append_pcm(ws, audio_gen.tone(500.0, 0.2, RATE))
        await send(ws, "input_audio_buffer.clear")
        await until(ws, "input_audio_buffer.cleared")
        await send(ws, "input_audio_buffer.commit")
        assert (await until(ws, "error"))[0]["error"]["code"] == "input_audio_buffer_commit_empty"
        await send(ws, "conversation.item.create", item={"type": "function_call_output", "call_id": "c1",
                                                         "output": "{}"})
        err, _ = await until(ws, "error")  # no function_call with that call_id yet
        assert (err["error"]["code"], err["error"]["message"]) == (
            "invalid_tool_call_id", "Tool call ID 'c1' not found in conversation.")
        await send(ws, "conversation.item.create", item={"type": "function_call", "call_id": "c1", "name": "f",
                                                         "arguments": "{}"})
        call, _ = await until(ws, "conversation.item.done")
        assert call["previous_item_id"] == committed["item_id"]
        await send(ws, "conversation.item.create", item={"type": "function_call_output", "call_id": "c1",
                                                         "output": "{}"})
        added, _ = await until(ws, "conversation.item.added")
        assert added["previous_item_id"] == call["item"]["id"] and added["item"]["call_id"] == "c1"
        await until(ws, "conversation.item.done")
        await send(ws, "conversation.item.retrieve", item_id=committed["item_id"])
        assert (await until(ws, "conversation.item.retrieved"))[0]["item"]["role"] == "user"
        await send(ws, "conversation.item.delete", item_id=committed["item_id"])
        assert (await until(ws, "conversation.item.deleted"))[0]["item_id"] == committed["item_id"]
        await send(ws, "conversation.item.delete", item_id=committed["item_id"])
        assert (await until(ws, "error"))[0]["error"]["code"] == "item_not_found"
    assert server.sessions[0].events_of("input_audio_buffer.commit")[0]["type"] == "input_audio_buffer.commit"


async def test_truncate_validation(make_server):
    server = await make_server(mode="tone", tone_seconds=1.0)
    async with ws_connect(server) as ws:
        await opened(ws)
        await no_vad(ws)
        await send(ws, "conversation.item.create", item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "hi"}]})
        user_item, _ = await until(ws, "conversation.item.done")
        await send(ws, "response.create")
        done, _ = await until(ws, "response.done")
        item_id = done["response"]["output"][0]["id"]

        async def truncate(iid, end_ms, idx=0) -> dict:
            await send(ws, "conversation.item.truncate", item_id=iid, content_index=idx, audio_end_ms=end_ms)
            while True:
                ev = json.loads(await ws.recv())
                if ev["type"] in ("error", "conversation.item.truncated"):
                    return ev

        ev = await truncate(item_id, 1500)
        assert ev["error"]["message"] == "Audio content of 1000ms is already shorter than 1500ms"
        assert (ev["error"]["code"], ev["error"]["param"]) == ("invalid_value", "audio_end_ms")
        assert (await truncate("item_nope", 10))["error"]["code"] == "item_not_found"
        assert (await truncate(user_item["item"]["id"], 10))["type"] == "error"
        ev = await truncate(item_id, 400)
        assert ev == {"type": "conversation.item.truncated", "event_id": ev["event_id"], "item_id": item_id,
                      "content_index": 0, "audio_end_ms": 400}
        ev = await truncate(item_id, 500)  # now only 400 ms remain
        assert ev["error"]["message"] == "Audio content of 400ms is already shorter than 500ms"
        # the voice is fixed once assistant audio exists
        await send(ws, "session.update", session={"type": "realtime", "audio": {"output": {"voice": "cedar"}}})
        assert (await until(ws, "error"))[0]["error"]["code"] == "cannot_update_voice"
    truncs = server.sessions[0].events_of("conversation.item.truncate")
    assert [t["audio_end_ms"] for t in truncs] == [1500, 10, 10, 400, 500]


async def test_client_cancel_and_double_create(make_server):
    server = await make_server(mode="tone", tone_seconds=5.0, speed=1.0)
    async with ws_connect(server) as ws:
        await opened(ws)
        await no_vad(ws)
        await send(ws, "response.create")
        created, _ = await until(ws, "response.output_audio.delta")
        await send(ws, "response.create")
        err, _ = await until(ws, "error")
        rid = server.sessions[0]._active.id
        assert err["error"]["code"] == "conversation_already_has_active_response"
        assert err["error"]["message"] == (f"Conversation already has an active response in progress: {rid}. "
                                           "Wait until the response is finished before creating a new one.")
        await send(ws, "response.cancel")
        done, events = await until(ws, "response.done")
    r = done["response"]
    assert r["id"] == rid and r["status"] == "cancelled"
    assert r["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert r["output"][0]["status"] == "incomplete"
    types = [e["type"] for e in events]
    for t in RESPONSE_ORDER[5:]:
        assert t in types


async def test_barge_in_cancels_the_response(make_server):
    server = await make_server(mode="tone", tone_seconds=10.0, speed=1.0)
    async with ws_connect(server) as ws:
        await opened(ws)
        await append_pcm(ws, utterance(800.0, lead_s=0.0, speech_s=0.3, tail_s=0.6))
        await until(ws, "response.output_audio.delta")
        await append_pcm(ws, audio_gen.tone(800.0, 0.2, RATE))
        started, events = await until(ws, "input_audio_buffer.speech_started")
        done, more = await until(ws, "response.done")
    events += more
    r = done["response"]
    assert r["status"] == "cancelled" and r["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    types = [e["type"] for e in events]
    assert types.index("input_audio_buffer.speech_started") < types.index("response.done")
    for t in ("response.output_audio.done", "response.output_audio_transcript.done", "response.content_part.done",
              "conversation.item.done", "response.output_item.done"):
        assert t in types
    assert started["audio_start_ms"] >= 900 - 300 - 60
    session = server.sessions[0]
    item_id = r["output"][0]["id"]
    assert session._item_audio_ms[item_id] < 10_000


# ---- sent log, scripted function calls, instructions and text items, semantic VAD ----------------
async def test_sent_log_has_loop_times_in_wire_order(make_server):
    server = await make_server(mode="tone", tone_seconds=0.5, speed=10.0)
    loop = asyncio.get_running_loop()
    t_start = loop.time()
    got: list[tuple[float, dict]] = []  # (loop time at receipt, event) on the client
    async with ws_connect(server) as ws:
        async with asyncio.timeout(5):
            while not got or got[-1][1]["type"] != "conversation.created":
                raw = await ws.recv()
                got.append((loop.time(), json.loads(raw)))
        await send(ws, "response.create")
        async with asyncio.timeout(5):
            while got[-1][1]["type"] != "response.done":
                raw = await ws.recv()
                got.append((loop.time(), json.loads(raw)))
    session = server.sessions[0]
    sent = session.sent
    assert [e["event_id"] for _, e in sent] == [e["event_id"] for _, e in got]
    assert [e["type"] for _, e in sent] == [e["type"] for _, e in got]
    times = [t for t, _ in sent]
    assert times == sorted(times) and t_start <= times[0] and times[-1] <= loop.time()
    assert all(ts <= tr for (ts, _), (tr, _) in zip(sent, got, strict=True))  # sent before received
    deltas = session.sent_of("response.output_audio.delta")
    client_deltas = [e for _, e in got if e["type"] == "response.output_audio.delta"]
    assert len(deltas) == len(client_deltas) > 1
    for (_, logged), wire in zip(deltas, client_deltas, strict=True):
        assert "delta" not in logged and logged["audio_bytes"] == len(base64.b64decode(wire["delta"]))
        assert {k: v for k, v in logged.items() if k != "audio_bytes"} == {
            k: v for k, v in wire.items() if k != "delta"}
    assert sum(e["audio_bytes"] for _, e in deltas) == int(0.5 * RATE) * 2
    # paced: the last delta goes out about 0.5 s / 10 after the first one, not all at once
    span = deltas[-1][0] - deltas[0][0]
    assert 0.01 < span < 0.5
    assert [e["type"] for _, e in session.sent_of("response.done")] == ["response.done"]
    assert session.sent_of("nothing.like.this") == []


FUNCTION_CALL_ORDER = RESPONSE_ORDER[:-1] + [
    "response.output_item.added", "conversation.item.added", "response.function_call_arguments.done",
    "conversation.item.done", "response.output_item.done", "response.done"]


async def test_scripted_function_calls(make_server):
    script = [
        {"audio": "tone", "tone_hz": 600.0, "tone_seconds": 0.4, "transcript": "Goodbye!",
         "function_call": {"name": "hangup_call", "arguments": {"reason": "done"}}},
        {"audio": "none", "function_call": {"name": "transfer_call", "arguments": '{"to":"sales"}'}},
    ]
    server = await make_server(mode="tone", tone_hz=440.0, tone_seconds=0.3, script=script)
    async with ws_connect(server) as ws:
        await opened(ws)
        await send(ws, "session.update", session={"type": "realtime", "audio": {"input": {"turn_detection": None}},
                                                  "tools": [{"type": "function", "name": "hangup_call",
                                                             "parameters": {"type": "object"}}]})
        await until(ws, "session.updated")
        await send(ws, "response.create")
        done1, ev1 = await until(ws, "response.done")
        # 1: assistant audio (output_index 0), then the function call (output_index 1), A.9 order
        assert response_skeleton(ev1) == FUNCTION_CALL_ORDER
        pcm = b"".join(audio_of(ev1))
        assert len(pcm) == int(0.4 * RATE) * 2 and abs(audio_gen.dominant_frequency(pcm, RATE) - 600.0) < 2.0
        assert next(e for e in ev1 if e["type"] == "response.output_audio_transcript.done")[
            "transcript"] == "Goodbye!"
        added = [e for e in ev1 if e["type"] == "response.output_item.added"]
        assert [a["output_index"] for a in added] == [0, 1]
        call = added[1]["item"]
        call_id, item_id, rid = call["call_id"], call["id"], done1["response"]["id"]
        assert call == {"id": item_id, "object": "realtime.item", "type": "function_call", "status": "in_progress",
                        "name": "hangup_call", "call_id": call_id, "arguments": ""}
        assert call_id.startswith("call_") and len(call_id) > 10
        arg_deltas = [e for e in ev1 if e["type"] == "response.function_call_arguments.delta"]
        assert 2 <= len(arg_deltas) <= 3
        assert "".join(d["delta"] for d in arg_deltas) == '{"reason": "done"}'
        assert all((d["response_id"], d["item_id"], d["output_index"], d["call_id"]) == (rid, item_id, 1, call_id)
                   for d in arg_deltas)
        args_done = next(e for e in ev1 if e["type"] == "response.function_call_arguments.done")
        assert {k: v for k, v in args_done.items() if k != "event_id"} == {
            "type": "response.function_call_arguments.done", "response_id": rid, "item_id": item_id,
            "output_index": 1, "call_id": call_id, "name": "hangup_call", "arguments": '{"reason": "done"}'}
        item_done = [e for e in ev1 if e["type"] == "response.output_item.done"][1]
        assert item_done["item"] == {**call, "status": "completed", "arguments": '{"reason": "done"}'}
        conv_added = [e for e in ev1 if e["type"] == "conversation.item.added"][1]
        assert conv_added["previous_item_id"] == added[0]["item"]["id"]
        r1 = done1["response"]
        assert r1["status"] == "completed"
        assert [(o["type"], o["status"]) for o in r1["output"]] == [("message", "completed"),
                                                                    ("function_call", "completed")]
        assert r1["output"][1] == item_done["item"]
        # the client answers the call; an unknown call_id is refused like the live API does
        await send(ws, "conversation.item.create", item={"type": "function_call_output", "call_id": "call_nope",
                                                         "output": "{}"}, event_id="bad-call")
        err, _ = await until(ws, "error")
        assert err["error"] == {"type": "invalid_request_error", "code": "invalid_tool_call_id",
                                "message": "Tool call ID 'call_nope' not found in conversation.", "param": None,
                                "event_id": "bad-call"}
        await send(ws, "conversation.item.create", item={"type": "function_call_output", "call_id": call_id,
                                                         "output": '{"ok": true}'})
        out_added, _ = await until(ws, "conversation.item.added")
        assert out_added["previous_item_id"] == item_id and out_added["item"]["call_id"] == call_id
        await send(ws, "response.create")
        done2, ev2 = await until(ws, "response.done")
        # 2: no audio, only a function call at output_index 0
        assert response_skeleton(ev2) == RESPONSE_ORDER[:2] + FUNCTION_CALL_ORDER[-6:]
        assert audio_of(ev2) == []
        assert [o["type"] for o in done2["response"]["output"]] == ["function_call"]
        args2 = next(e for e in ev2 if e["type"] == "response.function_call_arguments.done")
        assert (args2["output_index"], args2["name"], args2["arguments"]) == (0, "transfer_call", '{"to":"sales"}')
        assert args2["call_id"] != call_id
        # 3: the script is used up: the mode's tone again
        await send(ws, "response.create")
        done3, ev3 = await until(ws, "response.done")
        assert response_skeleton(ev3) == RESPONSE_ORDER
        assert len(b"".join(audio_of(ev3))) == int(0.3 * RATE) * 2
        assert done3["response"]["output"][0]["content"][0]["transcript"] == "(tone 440 Hz)"
    session = server.sessions[0]
    assert [e["item"]["call_id"] for e in session.events_of("conversation.item.create")] == ["call_nope", call_id]
    assert len(session.events_of("response.create")) == 3 and session._script == []
    assert [r["id"] for r in session.responses] == [rid, done2["response"]["id"], done3["response"]["id"]]
    assert len(session.sent_of("response.function_call_arguments.done")) == 2


async def test_script_drives_vad_responses_and_text(make_server):
    script = [{"audio": "tone", "tone_hz": 900.0, "tone_seconds": 0.3},
              {"text": "Scripted text.", "function_call": {"name": "noop"}},
              {"audio": "none", "text": "Only text."}]
    server = await make_server(mode="echo", script=script)
    async with ws_connect(server) as ws:
        await opened(ws)
        await append_pcm(ws, utterance(500.0, lead_s=0.2, speech_s=0.4, tail_s=0.7))
        done, events = await until(ws, "response.done")  # the VAD turn starts the first scripted response
        pcm = b"".join(audio_of(events))
        assert len(pcm) == int(0.3 * RATE) * 2 and abs(audio_gen.dominant_frequency(pcm, RATE) - 900.0) < 2.0
        assert done["response"]["output"][0]["content"][0]["transcript"] == "(tone 900 Hz)"
        await send(ws, "response.create", response={"output_modalities": ["text"]})
        done, events = await until(ws, "response.done")
        assert done["response"]["output"][0]["content"] == [{"type": "output_text", "text": "Scripted text."}]
        assert done["response"]["output"][1]["arguments"] == "{}"
        await send(ws, "response.create")
        done, events = await until(ws, "response.done")
        assert audio_of(events) == []
        assert done["response"]["output"][0]["content"] == [{"type": "output_text", "text": "Only text."}]
        await send(ws, "response.create")  # script used up: echo of the committed utterance
        done, events = await until(ws, "response.done")
        assert abs(audio_gen.dominant_frequency(b"".join(audio_of(events)), RATE) - 500.0) < 2.0
    for bad in ([{"audio": "wav"}], [{"bogus": 1}], [{"function_call": {"arguments": {}}}], ["x"],
                [{"tone_seconds": 0}], [{"function_call": {"name": "f", "arguments": 3}}]):
        with pytest.raises(ValueError):
            FakeRealtimeServer(script=bad)


async def test_response_instructions_and_user_text_item(make_server):
    server = await make_server(mode="tone", tone_seconds=0.2)
    async with ws_connect(server) as ws:
        await opened(ws)
        await no_vad(ws)
        await send(ws, "conversation.item.create", item={
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "The caller pressed 5"}]})
        added, _ = await until(ws, "conversation.item.added")
        done_item, _ = await until(ws, "conversation.item.done")
        assert added["item"]["content"] == [{"type": "input_text", "text": "The caller pressed 5"}]
        assert (added["item"]["role"], added["item"]["status"]) == ("user", "completed")
        assert done_item["item"] == added["item"]
        await send(ws, "response.create", response={"instructions": "Confirm the digit the caller pressed."})
        done, events = await until(ws, "response.done")
        assert done["response"]["status"] == "completed" and len(b"".join(audio_of(events))) == int(0.2 * RATE) * 2
        await send(ws, "response.create", response={"instructions": 5})
        err, _ = await until(ws, "error")
        assert (err["error"]["code"], err["error"]["param"]) == ("invalid_type", "response.instructions")
    session = server.sessions[0]
    assert session.events_of("response.create")[0]["response"] == {
        "instructions": "Confirm the digit the caller pressed."}
    assert session.events_of("conversation.item.create")[0]["item"]["content"][0]["text"] == "The caller pressed 5"
    assert session._items[added["item"]["id"]]["content"][0]["text"] == "The caller pressed 5"


async def test_semantic_vad(make_server):
    server = await make_server(mode="tone", tone_seconds=3.0, speed=1.0)
    td = {"type": "semantic_vad", "eagerness": "high", "create_response": True, "interrupt_response": False}
    async with ws_connect(server) as ws:
        await opened(ws)
        await send(ws, "session.update", session={"type": "realtime", "audio": {"input": {"turn_detection": td}}})
        updated, _ = await until(ws, "session.updated")
        assert updated["session"]["audio"]["input"]["turn_detection"] == td
        for bad, code in (({**td, "threshold": 0.5}, "unknown_parameter"), ({**td, "eagerness": "eager"},
                                                                             "invalid_value")):
            await send(ws, "session.update", session={"type": "realtime", "audio": {"input": {
                "turn_detection": bad}}})
            assert (await until(ws, "error"))[0]["error"]["code"] == code
        await append_pcm(ws, utterance(800.0, lead_s=0.5, speech_s=0.4, tail_s=0.4))
        stopped, _ = await until(ws, "input_audio_buffer.speech_stopped")
        assert abs(stopped["audio_end_ms"] - (900 + 250)) <= 60  # eagerness "high": 250 ms of silence
        await until(ws, "response.output_audio.delta")  # create_response: true
        # interrupt_response: false: speech does not cancel the response, the client has to
        await append_pcm(ws, audio_gen.tone(800.0, 0.2, RATE))
        await until(ws, "input_audio_buffer.speech_started")
        await send(ws, "response.cancel")
        done, _ = await until(ws, "response.done")
        assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        # create_response: false: a turn is committed but no response starts
        await send(ws, "session.update", session={"type": "realtime", "audio": {"input": {
            "turn_detection": {**td, "create_response": False}}}})
        await until(ws, "session.updated")
        await append_pcm(ws, utterance(800.0, lead_s=0.2, speech_s=0.4, tail_s=0.5))
        await until(ws, "input_audio_buffer.committed")
        await asyncio.sleep(0.1)
    session = server.sessions[0]
    assert len(session.sent_of("response.created")) == 1


# ---- auth, beta, drop, expire -------------------------------------------------------------------
async def test_auth_is_required(make_server):
    server = await make_server(mode="tone", api_key="sk-right")
    with pytest.raises(websockets.exceptions.InvalidStatus) as exc:
        async with ws_connect(server, headers={}):
            pass
    assert exc.value.response.status_code == 401
    with pytest.raises(websockets.exceptions.InvalidStatus) as exc:
        async with ws_connect(server, headers={"Authorization": "Bearer sk-wrong"}):
            pass
    assert exc.value.response.status_code == 401
    async with ws_connect(server, headers={"Authorization": "Bearer sk-right"}) as ws:
        await opened(ws)
    assert len(server.sessions) == 1


async def test_auth_failure_after_upgrade_like_the_live_api(make_server):
    server = await make_server(mode="tone", api_key="sk-right", reject_after_upgrade=True)
    async with ws_connect(server, headers={"Authorization": "Bearer sk-wrong"}) as ws:
        err = json.loads(await ws.recv())
        with pytest.raises(websockets.exceptions.ConnectionClosedError) as exc:
            await ws.recv()
    assert err["error"]["code"] == "invalid_api_key"
    assert exc.value.rcvd.code == 3000 and exc.value.rcvd.reason == "invalid_request_error.invalid_api_key"


async def test_beta_header_is_refused_with_4000(make_server):
    server = await make_server(mode="tone")
    async with ws_connect(server, headers={**AUTH, "OpenAI-Beta": "realtime=v1"}) as ws:
        err = json.loads(await ws.recv())
        with pytest.raises(websockets.exceptions.ConnectionClosedError) as exc:
            await ws.recv()
    assert err["type"] == "error"
    assert err["error"] == {"type": "invalid_request_error", "code": "beta_api_shape_disabled",
                            "message": "The Realtime Beta API is no longer supported. Please use /v1/realtime "
                                       "for the GA API.", "param": None, "event_id": None}
    assert exc.value.rcvd.code == 4000


async def test_drop_aborts_without_close_frame(make_server):
    server = await make_server(mode="tone")
    async with ws_connect(server) as ws:
        await opened(ws)
        session = await server.wait_for_session()
        session.drop()
        with pytest.raises(websockets.exceptions.ConnectionClosedError) as exc:
            await asyncio.wait_for(ws.recv(), 2)
    assert exc.value.rcvd is None
    await asyncio.wait_for(session.closed.wait(), 2)


async def test_expire_sends_session_expired_then_closes_1000(make_server):
    server = await make_server(mode="tone")
    async with ws_connect(server) as ws:
        await opened(ws)
        session = await server.wait_for_session()
        await session.expire()
        err = json.loads(await ws.recv())
        with pytest.raises(websockets.exceptions.ConnectionClosedOK) as exc:
            await ws.recv()
    assert err["error"] == {"type": "invalid_request_error", "code": "session_expired",
                            "message": "Your session hit the maximum duration of 60 minutes.", "param": None,
                            "event_id": None}
    assert exc.value.rcvd.code == 1000
    await asyncio.wait_for(session.closed.wait(), 2)


async def test_max_session_s_expires_on_its_own(make_server):
    server = await make_server(mode="tone", max_session_s=0.2)
    async with ws_connect(server) as ws:
        await opened(ws)
        err, _ = await until(ws, "error")
        assert err["error"]["code"] == "session_expired"
        with pytest.raises(websockets.exceptions.ConnectionClosedOK):
            await ws.recv()


async def test_wait_for_returns_each_event_once(make_server):
    server = await make_server(mode="tone")
    async with ws_connect(server) as ws:
        await opened(ws)
        session = await server.wait_for_session()
        await send(ws, "input_audio_buffer.clear", event_id="a")
        assert (await session.wait_for("input_audio_buffer.clear"))["event_id"] == "a"
        waiter = asyncio.ensure_future(session.wait_for("input_audio_buffer.clear"))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await send(ws, "input_audio_buffer.clear", event_id="b")
        assert (await asyncio.wait_for(waiter, 2))["event_id"] == "b"
        with pytest.raises(TimeoutError):
            await session.wait_for("response.create", timeout=0.05)
    with pytest.raises(TimeoutError):
        await server.wait_for_session(2, timeout=0.05)


async def test_server_stop_closes_sessions(make_server):
    server = await make_server(mode="tone")
    async with ws_connect(server) as ws:
        await opened(ws)
        await server.stop()
        with pytest.raises(websockets.exceptions.ConnectionClosed) as exc:
            await asyncio.wait_for(ws.recv(), 2)
    assert exc.value.rcvd is not None and exc.value.rcvd.code == 1001
    await server.stop()


def test_cli_serves_until_sigterm(tmp_path):
    async def run() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voiceai_ari.fakes.realtime.server", "--port", "0", "--mode", "tone", "--speed", "50",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ})
        try:
            url = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
            assert url.startswith("ws://127.0.0.1:") and url.endswith("/v1/realtime")
            async with connect(url + "?model=gpt-realtime", additional_headers=AUTH, compression=None) as ws:
                assert json.loads(await ws.recv())["type"] == "session.created"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0

    asyncio.run(run())


# ---- audio helpers and VAD unit tests -----------------------------------------------------------
def test_audio_gen_helpers(tmp_path):
    pcm = audio_gen.tone(1000.0, 0.5, RATE, dbfs=-12.0, fade_ms=5)
    assert len(pcm) == RATE  # 0.5 s * 24000 * 2 bytes
    x = audio_gen.samples(pcm)
    assert abs(20 * __import__("math").log10(abs(x).max() / 32767) + 12.0) < 0.1
    assert abs(x[0]) < 1 and abs(x[-1]) < 50  # faded
    assert abs(audio_gen.rms_dbfs(pcm) - (-12.0 - 3.01)) < 0.2
    assert audio_gen.rms_dbfs(audio_gen.silence(0.1, RATE)) == audio_gen.SILENCE_FLOOR_DBFS
    assert audio_gen.rms_dbfs(b"") == audio_gen.SILENCE_FLOOR_DBFS
    for f in (97.0, 440.0, 1234.5, 3000.0):
        assert abs(audio_gen.dominant_frequency(audio_gen.tone(f, 0.25, RATE), RATE) - f) < 1.0
    assert audio_gen.dominant_frequency(audio_gen.silence(0.1, RATE), RATE) == 0.0
    path = tmp_path / "s.wav"
    audio_gen.write_wav(str(path), pcm, RATE)
    assert audio_gen.read_wav_24k_mono(str(path)) == pcm
    (tmp_path / "junk.wav").write_bytes(b"not a wav at all")
    with pytest.raises(ValueError):
        audio_gen.read_wav_24k_mono(str(tmp_path / "junk.wav"))


def test_energy_vad_offsets_and_chunking_independence():
    pcm = utterance(700.0, lead_s=1.0, speech_s=0.5, tail_s=0.7)
    whole = EnergyVad(prefix_padding_ms=300, silence_duration_ms=500).feed(pcm)
    assert whole == [("start", 700), ("stop", 2000)]
    vad = EnergyVad(prefix_padding_ms=300, silence_duration_ms=500)
    odd = [ev for i in range(0, len(pcm), 334) for ev in vad.feed(pcm[i:i + 334])]
    assert odd == whole
    # the prefix padding of a quick second turn does not reach back into the committed first turn
    two = utterance(700.0, lead_s=0.5, speech_s=0.3, tail_s=0.6) + audio_gen.tone(700.0, 0.3, RATE)
    # (second onset 1400 ms - 300 ms padding = 1100 ms, clamped to the end of turn one, 1300 ms)
    assert EnergyVad(prefix_padding_ms=300, silence_duration_ms=500).feed(two) == [
        ("start", 200), ("stop", 1300), ("start", 1300)]
    # a 40 ms click is not speech (needs 60 ms)
    click = audio_gen.silence(0.2, RATE) + audio_gen.tone(700.0, 0.04, RATE) + audio_gen.silence(0.2, RATE)
    assert EnergyVad().feed(click) == []
    assert threshold_to_dbfs(0.5, -40.0) == -40.0 and threshold_to_dbfs(1.0, -40.0) == -20.0
    quiet = audio_gen.tone(700.0, 0.5, RATE, dbfs=-40.0)  # rms about -43 dBFS
    assert EnergyVad(threshold_dbfs=threshold_to_dbfs(0.5, -40.0)).feed(quiet) == []
    assert EnergyVad(threshold_dbfs=threshold_to_dbfs(0.3, -40.0)).feed(quiet)[0][0] == "start"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=40))
def test_energy_vad_is_independent_of_append_sizes(sizes):
    pcm = utterance(700.0, lead_s=0.3, speech_s=0.4, tail_s=0.6)
    expected = EnergyVad().feed(pcm)
    vad, pos, got = EnergyVad(), 0, []
    for n in sizes * (len(pcm) // (2 * sum(sizes)) + 1):
        got += vad.feed(pcm[pos:pos + 2 * n])
        pos += 2 * n
    assert got == expected == [("start", 0), ("stop", 1200)]
