"""LiveProtocol (sans-I/O): GPT-Live server messages in, provider-neutral events and client messages out."""

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from voiceai_ari.fakes.audio_gen import silence, tone
from voiceai_ari.providers.base import (AudioDelta, AudioDone, ModelError, ResponseDone, SessionReady, ToolCall,
                                        Transcript, UsageUpdate)
from voiceai_ari.providers.openai_live.protocol import BURST_GAP_S, TEXT_GAP_S, LiveConfig, LiveProtocol


def delta(pcm):
    return json.dumps({"type": "session.output_audio.delta", "delta": base64.b64encode(pcm).decode()})


def msg(**kw):
    return json.dumps(kw)


def started(p, sid="live_1"):
    p.start_message()
    return p.receive(msg(type="session.started", session={"id": sid, "expires_at": 1}), 0.0)


def call_item(call_id, name="send_dtmf", args='{"digits":"1"}', delegation="dlg_1"):
    return msg(type="response.event", delegation_id=delegation, event={
        "type": "response.output_item.done", "item": {"type": "function_call", "call_id": call_id,
                                                      "name": name, "arguments": args}})


def test_session_start_holds_the_whole_config_at_24k():
    p = LiveProtocol(LiveConfig(model="gpt-live-1.1", instructions="hi", voice="cedar", backend_model="gpt-x",
                                tools=[{"type": "function", "name": "hangup_call", "description": "end"}]))
    m = json.loads(p.start_message())
    assert m["type"] == "session.start"
    s = m["session"]
    assert s["audio"] == {"format": {"type": "audio/pcm", "rate": 24000}, "output": {"voice": "cedar"}}
    assert s["delegation"] == {"type": "responses", "responses": {"model": "gpt-x", "tools": [
        {"type": "function", "name": "hangup_call", "description": "end",
         "parameters": {"type": "object", "properties": {}}}]}}
    assert "input" not in s
    assert json.loads(LiveProtocol.audio_message(b"\x01\x00"))["audio"] == "AQA="


def test_audible_output_is_one_burst_ended_by_a_gap_and_silence_around_it_is_dropped():
    p = LiveProtocol(LiveConfig())
    assert isinstance(started(p)[0], SessionReady)
    assert p.receive(delta(silence(0.1, 24000)), 0.0) == []          # the track between replies
    p.receive(msg(type="session.input_transcript.delta", delta="hello", start_ms=0, end_ms=300), 0.05)
    evs = p.receive(delta(tone(440, 0.1, 24000)), 0.1)
    assert [type(e) for e in evs] == [Transcript, AudioDelta]         # the caller's turn ends as the bot speaks
    assert evs[0].role == "caller" and evs[0].text == "hello"
    item = evs[1].item_id
    assert p.receive(delta(silence(0.1, 24000)), 0.2) == []          # a pause: held
    evs = p.receive(delta(tone(440, 0.1, 24000)), 0.3)
    assert len(evs[0].pcm) == 2 * 4800 and evs[0].item_id == item  # the pause, then the speech
    p.receive(msg(type="session.output_transcript.delta", delta="Hi there", start_ms=0, end_ms=1), 0.3)
    p.receive(delta(silence(0.1, 24000)), 0.4)                       # the tail: never played
    assert p.tick(0.3 + BURST_GAP_S - 0.01) == []
    assert p.deadline() == 0.3 + BURST_GAP_S
    evs = p.tick(0.3 + BURST_GAP_S)
    assert [type(e) for e in evs] == [AudioDone, Transcript, ResponseDone]
    assert evs[1].text == "Hi there" and evs[1].item_id == item and evs[2].status == "completed"
    evs = p.receive(delta(tone(440, 0.1, 24000)), 5.0)
    assert evs[0].item_id != item                                    # the next reply is a new item
    assert p.history == [("user", "hello"), ("assistant", "Hi there")]


def test_after_a_tick_the_next_deadline_is_never_in_the_past():
    """The adapter waits for the deadline: one in the past would spin without reading the socket."""
    p = LiveProtocol(LiveConfig())
    started(p)
    p.receive(delta(tone(440, 0.1, 24000)), 0.0)
    p.receive(msg(type="session.output_transcript.delta", delta="Hi"), 0.0)       # the bot text of a long reply
    for k in range(1, 30):
        now = k * 0.1
        p.receive(delta(tone(440, 0.1, 24000)), now)
        p.tick(now)
        assert p.deadline() is None or p.deadline() > now


def test_a_caller_transcript_ends_after_a_quiet_gap():
    p = LiveProtocol(LiveConfig())
    started(p)
    p.receive(msg(type="session.input_transcript.delta", delta="one "), 1.0)
    p.receive(msg(type="session.input_transcript.delta", delta="two"), 1.5)
    assert p.tick(1.5 + TEXT_GAP_S - 0.01) == []
    assert p.tick(1.5 + TEXT_GAP_S) == [Transcript("caller", "one two", None)]
    assert p.deadline() is None


def test_a_batch_of_calls_gets_every_output_then_one_response_create():
    p = LiveProtocol(LiveConfig())
    started(p)
    p.receive(delta(tone(440, 0.1, 24000)), 0.0)                     # a reply is playing
    assert p.receive(msg(type="session.delegation.created", delegation={"id": "dlg_1"}), 0.1) == []
    evs = p.receive(call_item("c1"), 0.1) + p.receive(call_item("c2", args=None), 0.1)
    assert evs == [ToolCall("c1", "send_dtmf", '{"digits":"1"}'), ToolCall("c2", "send_dtmf", "{}")]
    assert p.receive(call_item("c1"), 0.1) == []                     # once per call_id
    out = p.tool_result("c1", "ok")
    assert [json.loads(m)["type"] for m in out] == ["response.item.create"]
    p.receive(msg(type="response.event", delegation_id="dlg_1", event={"type": "response.completed"}), 0.2)
    assert p.outgoing == []                                          # c2 still unanswered
    out = p.tool_result("c2", "ok2")
    assert [json.loads(m) for m in out] == [
        {"type": "response.item.create", "item": {"type": "function_call_output", "call_id": "c2", "output": "ok2"}},
        {"type": "response.create"}]
    assert p.tool_result("c2", "again") == []


def test_a_batch_answered_before_the_backend_is_done_continues_when_it_is():
    p = LiveProtocol(LiveConfig())
    started(p)
    evs = p.receive(call_item("c1"), 0.0)
    assert isinstance(evs[1], ResponseDone) and evs[1].reason == "tool_call"    # nothing was playing
    p.tool_result("c1", "ok")
    p.receive(msg(type="response.event", delegation_id="dlg_1", event={"type": "response.completed"}), 0.2)
    assert p.outgoing == ['{"type": "response.create"}']


def test_usage_seconds_are_cumulative_and_priced_once():
    p = LiveProtocol(LiveConfig())
    started(p)
    assert p.receive(msg(type="session.usage.updated", usage={"seconds": 15}), 0.0) == [
        UsageUpdate({"live_seconds": 15.0})]
    assert p.receive(msg(type="session.usage.updated", usage={"seconds": 30}), 0.0) == [
        UsageUpdate({"live_seconds": 15.0})]
    assert p.receive(msg(type="session.usage.updated", usage={"seconds": 30}), 0.0) == []
    p.new_session()                                                  # a reconnect: the new session counts from 0
    started(p, "live_2")
    assert p.receive(msg(type="session.closed", reason="expired", usage={"seconds": 3}), 2.0) == [
        UsageUpdate({"live_seconds": 3.0})]


def test_errors_fatal_or_not_and_closed_reason():
    p = LiveProtocol(LiveConfig())
    started(p)
    [e] = p.receive(msg(type="error", error={"type": "invalid_request_error", "code": "string_above_max_length",
                                             "message": "too long", "param": "content"}), 0.0)
    assert e == ModelError("string_above_max_length", "too long (param content)", fatal=False)
    [e] = p.receive(msg(type="error", error={"code": "credit_balance_exhausted", "message": "no"}), 0.0)
    assert e.fatal
    p.receive(msg(type="session.closed", reason="expired", usage={"seconds": 5}), 0.0)
    assert p.closed_reason == "expired"


def test_a_new_session_is_seeded_with_earlier_turns_and_new_instructions():
    p = LiveProtocol(LiveConfig(instructions="old"))
    started(p)
    p.history += [("user", "hi"), ("assistant", "hello")]
    p.receive(call_item("c9"), 0.0)
    p.instructions_update("new")
    p.new_session()
    s = json.loads(p.start_message())["session"]
    assert s["instructions"] == "new"
    assert s["input"] == [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                          {"role": "assistant", "content": [{"type": "output_text", "text": "hello"}]}]
    # the old session's call cannot be answered on the new one: its result is told as text
    [m] = p.tool_result("c9", "done")
    assert json.loads(m)["type"] == "session.instructions.append"


def test_appends_are_clipped_to_the_token_limit():
    m = json.loads(LiveProtocol.append("commentary", "x" * 5000))
    assert m["type"] == "session.commentary.append" and m["delegation_id"] is None
    assert len(m["content"]) <= 2000


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200),
                 st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
                              lambda c: st.lists(c, max_size=3) | st.dictionaries(
                                  st.sampled_from(["type", "delta", "event", "item", "call_id", "name",
                                                   "arguments", "delegation_id", "session", "id", "usage",
                                                   "seconds", "error", "code", "reason", "expires_at"]),
                                  c, max_size=4), max_leaves=12).map(json.dumps),
                 st.sampled_from(["session.output_audio.delta", "response.event", "session.started", "error",
                                  "session.usage.updated", "session.closed", "session.input_transcript.delta",
                                  "response.output_item.done", "function_call"]).flatmap(
                     lambda t: st.dictionaries(st.sampled_from(["delta", "event", "session", "usage", "error",
                                                                "reason", "delegation_id"]),
                                               st.one_of(st.none(), st.integers(), st.text(max_size=8),
                                                         st.just({"type": "response.output_item.done",
                                                                  "item": {"type": "function_call"}}),
                                                         st.just({"seconds": True})), max_size=3)
                     .map(lambda d: json.dumps({"type": t, **d})))))
def test_hostile_messages_never_raise(data):
    p = LiveProtocol(LiveConfig())
    p.receive(data, 0.0)
    p.tick(10.0)
