"""RealtimeProtocol: GA client events out, provider-neutral events in, barge-in arithmetic. No I/O."""

import base64
import json

from voiceai_ari.providers.base import (AudioDelta, AudioDone, ModelError, ResponseDone, SessionReady, SpeechStarted, ToolCall,
                               Transcript)
from voiceai_ari.providers.openai_realtime.protocol import RealtimeProtocol, SessionConfig


def proto(**kw):
    return RealtimeProtocol(SessionConfig(**kw))


def ev(**fields):
    return json.dumps(fields)


def delta(item, nbytes):
    return ev(type="response.output_audio.delta", response_id="resp_1", item_id=item, output_index=0,
              content_index=0, delta=base64.b64encode(bytes(nbytes)).decode())


def test_session_update_is_ga_shaped():
    p = proto(instructions="be brief", voice="cedar", vad_threshold=0.6, vad_prefix_padding_ms=200,
              vad_silence_ms=700, transcription_model="gpt-4o-mini-transcribe")
    msg = json.loads(p.session_update())
    assert msg["type"] == "session.update"
    s = msg["session"]
    assert s["type"] == "realtime"
    assert s["output_modalities"] == ["audio"]
    assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert s["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert s["audio"]["output"]["voice"] == "cedar"
    td = s["audio"]["input"]["turn_detection"]
    assert td == {"type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 200, "silence_duration_ms": 700,
                  "create_response": True, "interrupt_response": True}
    assert s["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    for beta in ("modalities", "input_audio_format", "voice", "turn_detection"):
        assert beta not in s


def test_append_audio_is_valid_json_with_base64():
    pcm = bytes(range(256)) * 3
    msg = json.loads(RealtimeProtocol.append_audio(pcm))
    assert msg == {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}


def test_audio_flow_and_accounting():
    p = proto()
    assert p.receive(ev(type="session.created", session={"id": "sess_1"})) == []
    assert p.receive(ev(type="session.updated", session={})) == [SessionReady("sess_1")]
    p.receive(ev(type="response.created", response={"id": "resp_1"}))
    assert p.response_active
    out = p.receive(delta("item_1", 4800))
    assert out == [AudioDelta("item_1", bytes(4800))]
    p.receive(delta("item_1", 960))
    assert p.audio_ms["item_1"] == 120
    assert p.receive(ev(type="response.output_audio.done", item_id="item_1")) == [AudioDone("item_1")]
    assert p.receive(ev(type="response.output_audio_transcript.done", item_id="item_1",
                        transcript="hello")) == [Transcript("bot", "hello", "item_1")]
    assert p.receive(ev(type="response.done", response={"status": "completed", "status_details": None})) == [
        ResponseDone("completed", None)]
    assert not p.response_active


def test_truncate_never_exceeds_received_audio():
    p = proto()
    p.receive(delta("item_1", 48 * 500))            # 500 ms received
    [msg] = p.interrupt("item_1", 800)              # claims more than was received
    t = json.loads(msg)
    assert t["type"] == "conversation.item.truncate"
    assert (t["item_id"], t["content_index"], t["audio_end_ms"]) == ("item_1", 0, 500)
    [msg] = p.interrupt("item_1", 120)
    assert json.loads(msg)["audio_end_ms"] == 120


def test_no_truncate_when_fully_heard_or_unknown():
    p = proto()
    p.receive(delta("item_1", 48 * 200))
    p.receive(ev(type="response.output_audio.done", item_id="item_1"))
    assert p.interrupt("item_1", 200) == []
    assert p.interrupt("nope", 100) == []
    assert p.interrupt(None, 0) == []


def test_errors_and_bad_input():
    p = proto()
    [e] = p.receive(ev(type="error", error={"type": "invalid_request_error", "code": "unknown_parameter",
                                            "message": "x"}))
    assert e == ModelError("unknown_parameter", "x", False)
    [e] = p.receive(ev(type="error", error={"type": "invalid_request_error", "code": "session_expired",
                                            "message": "Your session hit the maximum duration of 60 minutes."}))
    assert not e.fatal  # the adapter rolls over to a new session
    [e] = p.receive(ev(type="error", error={"type": "invalid_request_error", "code": "invalid_api_key",
                                            "message": "Incorrect API key provided"}))
    assert e.fatal
    assert p.receive(ev(type="error", error={"code": "response_cancel_not_active", "message": "m"})) == []
    assert p.receive("not json") == [] and p.receive(ev(no_type=1)) == []
    assert p.receive(ev(type="response.output_audio.delta", item_id="i", delta="@@notbase64@@")) == []
    assert p.bad_events == 3
    assert p.receive(ev(type="some.future.event", x=1)) == []


def test_speech_started():
    p = proto()
    assert p.receive(ev(type="input_audio_buffer.speech_started", audio_start_ms=10, item_id="u1")) == [
        SpeechStarted("u1")]


def test_each_tool_call_is_delivered_once():
    p = proto()
    args = '{"digits":"12"}'
    a = p.receive(ev(type="response.function_call_arguments.done", response_id="r", item_id="fc1",
                     output_index=1, call_id="call_1", name="send_dtmf", arguments=args))
    b = p.receive(ev(type="response.output_item.done", response_id="r", output_index=1,
                     item={"type": "function_call", "id": "fc1", "call_id": "call_1", "name": "send_dtmf",
                           "arguments": args, "status": "completed"}))
    assert a == [ToolCall("call_1", "send_dtmf", args)] and b == []
    # output_item.done alone (arguments.done lost) still runs it; a message item is not a tool call
    c = p.receive(ev(type="response.output_item.done", item={"type": "function_call", "call_id": "call_2",
                                                              "name": "hangup_call", "arguments": "{}"}))
    assert c == [ToolCall("call_2", "hangup_call", "{}")]
    assert p.receive(ev(type="response.output_item.done", item={"type": "message", "id": "m"})) == []


def test_response_create_waits_for_the_active_response():
    p = proto()
    p.receive(ev(type="response.created", response={"id": "resp_1"}))
    out = p.tool_result("call_1", '{"ok":true}', respond=True)
    assert [json.loads(m)["type"] for m in out] == ["conversation.item.create"]
    item = json.loads(out[0])["item"]
    assert item == {"type": "function_call_output", "call_id": "call_1", "output": '{"ok":true}'}
    assert p.user_text("The caller pressed 5 on the keypad.", respond=True)[0]  # queued, not doubled
    assert p.take_pending() == []                       # still active
    p.receive(ev(type="response.done", response={"status": "completed"}))
    [msg] = p.take_pending()
    assert json.loads(msg)["type"] == "response.create"
    assert p.take_pending() == []                       # one response.create for both


def test_greeting_request_and_user_text_shape():
    p = proto()
    [msg] = p.request_response("Greet the caller.")
    assert json.loads(msg)["response"] == {"instructions": "Greet the caller."}
    p.receive(ev(type="response.done", response={"status": "completed"}))
    out = p.user_text("The caller pressed 5 on the keypad.", respond=False)
    assert len(out) == 1
    assert json.loads(out[0])["item"] == {"type": "message", "role": "user",
                                          "content": [{"type": "input_text",
                                                       "text": "The caller pressed 5 on the keypad."}]}


def test_cancel_only_when_the_server_does_not():
    p = proto()
    p.receive(ev(type="response.created", response={"id": "resp_9"}))
    p.receive(delta("item_1", 4800))
    assert [json.loads(m)["type"] for m in p.interrupt("item_1", 50)] == ["conversation.item.truncate"]
    assert [json.loads(m)["type"] for m in p.cancel_if_active("resp_9")] == ["response.cancel"]
    p.receive(ev(type="response.done", response={"status": "cancelled"}))
    assert p.cancel_if_active("resp_9") == []           # the server cancelled in time: nothing to do
    q = proto(interrupt_response=False)                 # no auto-interrupt: cancel goes with the truncate
    q.receive(ev(type="response.created", response={"id": "resp_2"}))
    q.receive(delta("item_2", 4800))
    assert [json.loads(m)["type"] for m in q.interrupt("item_2", 50)] == [
        "conversation.item.truncate", "response.cancel"]


def test_semantic_vad_session():
    s = json.loads(proto(vad_type="semantic_vad", vad_eagerness="low").session_update())["session"]
    assert s["audio"]["input"]["turn_detection"] == {"type": "semantic_vad", "eagerness": "low",
                                                     "create_response": True, "interrupt_response": True}


def test_history_for_a_new_session_keeps_only_what_was_heard():
    p = proto()
    p.receive(ev(type="conversation.item.input_audio_transcription.completed", item_id="u1", content_index=0,
                 transcript="What are your opening hours?"))
    p.receive(delta("a1", 48 * 1000))                       # 1000 ms of reply audio
    p.interrupt("a1", 250)                                  # the caller heard a quarter of it
    p.receive(ev(type="response.output_audio_transcript.done", item_id="a1", transcript="We open at nine and close at five."))
    assert p.history == [("user", "What are your opening hours?"), ("assistant", "We open…")]
    p.new_session()
    assert not p.response_active and p.audio_ms == {}
    items = [json.loads(m)["item"] for m in p.restore_history()]
    assert items == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What are your opening hours?"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "We open…"}]}]


def test_response_create_that_raced_a_vad_response_is_asked_again():
    p = proto()
    [create] = p.user_text("The caller pressed 5 on the keypad.", respond=True)[1:]
    assert json.loads(create)["type"] == "response.create"
    # the server had just started its own response: the real API rejects ours
    assert p.receive(ev(type="error", error={"type": "invalid_request_error",
                                             "code": "conversation_already_has_active_response",
                                             "message": "Conversation already has an active response"})) == []
    assert p.take_pending() == []
    p.receive(ev(type="response.created", response={"id": "resp_vad"}))
    p.receive(ev(type="response.done", response={"status": "completed"}))
    [again] = p.take_pending()
    assert json.loads(again)["type"] == "response.create"


def test_audio_delta_fast_path_agrees_with_the_full_parse():
    """Deltas are read by key search; any layout it does not recognise falls back to the JSON parse."""
    pcm = bytes(range(256)) * 4
    b64 = base64.b64encode(pcm).decode()
    layouts = [
        delta("item_1", 960),                                         # json.dumps default (", " and ": ")
        json.dumps({"type": "response.output_audio.delta", "item_id": "item_1", "delta": b64},
                   separators=(",", ":")),                            # compact, as OpenAI sends
        json.dumps({"delta": b64, "item_id": "item_1", "type": "response.output_audio.delta"}),   # type last
        '{"type":"response.output_audio.delta","item_id":"it\\u0065m_1","delta":"' + b64 + '"}',  # an escape
        '{\n  "type" : "response.output_audio.delta",\n  "item_id" : "item_1",\n  "delta" : "' + b64 + '"\n}',
    ]
    for text in layouts:
        want = [AudioDelta("item_1", pcm if b64 in text else bytes(960))]
        assert proto().receive(text) == want, text[:80]
    p = proto()
    for bad in ('{"type":"response.output_audio.delta","item_id":"item_1","delta":"***"}',
                '{"type":"response.output_audio.delta","item_id":"item_1","delta":"QUJD\u00e9"}',
                '{"type":"response.output_audio.delta","item_id":"item_1","delta":"QUJ"}',
                '{"type":"response.output_audio.delta","item_id":"item_1","delta":'):
        assert p.receive(bad) == []
    assert p.bad_events == 4


# --- 2.x session fields, failed responses, idle timeout ---------------------------------------------------
def test_2x_session_fields_are_sent_only_when_set():
    plain = json.loads(proto().session_update())["session"]
    assert not {"reasoning", "truncation"} & set(plain)
    assert "noise_reduction" not in plain["audio"]["input"]
    assert "idle_timeout_ms" not in plain["audio"]["input"]["turn_detection"]
    s = json.loads(proto(reasoning_effort="low", truncation=0.75, noise_reduction="far_field",
                         idle_timeout_ms=6000).session_update())["session"]
    assert s["reasoning"] == {"effort": "low"}
    assert s["truncation"] == {"type": "retention_ratio", "retention_ratio": 0.75}
    assert s["audio"]["input"]["noise_reduction"] == {"type": "far_field"}
    assert s["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 6000
    assert json.loads(proto(truncation="disabled").session_update())["session"]["truncation"] == "disabled"


def test_session_config_defaults_to_the_model_that_is_not_being_retired():
    from voiceai_ari.config import Settings
    assert SessionConfig().model == "gpt-realtime-2.1" == Settings.model_fields["model"].default


def failed_done(code, type_="server_error", rid="resp_1"):
    return ev(type="response.done", response={"id": rid, "status": "failed", "output": [], "usage": None,
                                              "status_details": {"type": "failed",
                                                                 "error": {"type": type_, "code": code}}})


def test_failed_response_is_a_model_error_with_its_cause():
    p = proto()
    p.receive(ev(type="response.created", response={"id": "resp_1"}))
    out = p.receive(failed_done("rate_limit_exceeded", "rate_limit_exceeded"))
    assert out == [ModelError("rate_limit_exceeded", "response failed (rate_limit_exceeded)", False),
                   ResponseDone("failed", None)]
    assert not p.response_active
    [err, done] = p.receive(failed_done("insufficient_quota", "insufficient_quota"))
    assert err.code == "insufficient_quota" and err.fatal and done.status == "failed"
    # no code: the error type names it
    [err, _] = p.receive(failed_done(None, "server_error"))
    assert err.code == "server_error" and not err.fatal


def test_idle_timeout_is_reported_and_the_servers_own_answer_replaced():
    from voiceai_ari.providers.base import CallerIdle
    p = proto(idle_timeout_ms=1000)
    assert p.receive(ev(type="input_audio_buffer.timeout_triggered", audio_start_ms=2000, audio_end_ms=3040,
                        item_id="item_9")) == [CallerIdle(1040)]
    assert p.respond_instead("Ask if they are there.") == []     # held: the server answers by itself first
    # the server's own response starts: cancelled at once, its output dropped
    assert p.receive(ev(type="response.created", response={"id": "resp_auto", "metadata": None})) == []
    [cancel] = [json.loads(m) for m in p.take_pending()]
    assert cancel["type"] == "response.cancel" and cancel["response_id"] == "resp_auto"
    assert p.receive(delta("item_a", 960).replace("resp_1", "resp_auto")) == []
    assert p.receive(ev(type="response.output_audio_transcript.done", response_id="resp_auto", item_id="item_a",
                        transcript="hm?")) == []
    assert p.receive(ev(type="response.done", response={"id": "resp_auto", "status": "cancelled",
                                                        "status_details": {"reason": "client_cancelled"}})) \
        == [ResponseDone("cancelled", "client_cancelled", None, superseded=True)]
    # then ours goes, with its instructions, and is heard
    [ours] = [json.loads(m) for m in p.take_pending()]
    assert ours["type"] == "response.create"
    assert ours["response"]["instructions"] == "Ask if they are there."
    p.receive(ev(type="response.created", response={"id": "resp_2", "metadata": ours["response"]["metadata"]}))
    assert p.take_pending() == []
    assert p.receive(delta("item_b", 960).replace("resp_1", "resp_2")) == [AudioDelta("item_b", bytes(960))]
    assert p.history == []


def test_replacement_goes_anyway_when_the_server_does_not_answer():
    p = proto(idle_timeout_ms=1000)
    p.receive(ev(type="input_audio_buffer.timeout_triggered", audio_start_ms=0, audio_end_ms=1000, item_id="i"))
    p.respond_instead("Still there?")
    assert p.take_pending() == []
    [ours] = [json.loads(m) for m in p.no_response_to_replace()]
    assert ours["response"]["instructions"] == "Still there?"
    assert p.no_response_to_replace() == []


def test_replacement_cancels_a_server_response_already_running():
    p = proto()
    p.receive(ev(type="response.created", response={"id": "resp_auto"}))
    [cancel] = [json.loads(m) for m in p.respond_instead("Goodbye.")]
    assert cancel == {"type": "response.cancel", "event_id": cancel["event_id"], "response_id": "resp_auto"}
    done = p.receive(ev(type="response.done", response={"id": "resp_auto", "status": "cancelled"}))
    assert done[0].superseded
    [ours] = [json.loads(m) for m in p.take_pending()]
    assert ours["response"]["instructions"] == "Goodbye."


def test_caller_speaking_up_withdraws_a_replacement_not_yet_sent():
    p = proto(idle_timeout_ms=1000)
    p.receive(ev(type="input_audio_buffer.timeout_triggered", audio_start_ms=0, audio_end_ms=1000, item_id="i"))
    p.respond_instead("Still there?")
    assert p.receive(ev(type="input_audio_buffer.speech_started", audio_start_ms=1100, item_id="item_u")) \
        == [SpeechStarted("item_u")]
    # the answer to what the caller said is not cancelled, and no idle prompt follows it
    p.receive(ev(type="response.created", response={"id": "resp_turn", "metadata": None}))
    assert p.take_pending() == []
    p.receive(ev(type="response.done", response={"id": "resp_turn", "status": "completed"}))
    assert p.take_pending() == []


def test_a_retiring_model_is_named_with_its_successor():
    from voiceai_ari.providers.openai_realtime.session_config import retirement_notice
    assert retirement_notice("gpt-realtime") == ("VOICEAI_MODEL=gpt-realtime is deprecated 2026-07-20, shuts down "
                                                 "2027-01-20: set VOICEAI_MODEL=gpt-realtime-2.1")
    assert "gpt-realtime-2.1-mini" in retirement_notice("gpt-realtime-mini")
    assert retirement_notice("gpt-realtime-2.1") is None and retirement_notice("gpt-realtime-2.1-mini") is None
