"""GeminiProtocol (sans-I/O): setup shape, server messages to ModelEvents, tool answers, usage."""

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from voiceai_ari.providers.base import (AudioDelta, AudioDone, ResponseDone, SessionReady, SpeechStarted, ToolCall,
                                        Transcript)
from voiceai_ari.providers.gemini_live.protocol import GeminiConfig, GeminiProtocol, gemini_usage


def audio(pcm: bytes, text: bool = False) -> str:
    return json.dumps({"serverContent": {"modelTurn": {"parts": [
        {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(pcm).decode()}}]}}}, indent=2)


def test_setup_carries_model_voice_vad_tools_and_resumption():
    cfg = GeminiConfig(model="gemini-3.8-live", instructions="be brief", voice="Puck", start_sensitivity="low",
                       end_sensitivity="high", prefix_padding_ms=40, silence_ms=400,
                       tools=[{"type": "function", "name": "hangup_call", "description": "end",
                               "parameters": {"type": "object", "properties": {}}}])
    p = GeminiProtocol(cfg)
    s = json.loads(p.setup_message())["setup"]
    assert s["model"] == "models/gemini-3.8-live"
    assert s["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"] == "Puck"
    assert s["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    vad = s["realtimeInputConfig"]["automaticActivityDetection"]
    assert vad == {"disabled": False, "startOfSpeechSensitivity": "START_SENSITIVITY_LOW",
                   "endOfSpeechSensitivity": "END_SENSITIVITY_HIGH", "prefixPaddingMs": 40, "silenceDurationMs": 400}
    assert s["tools"][0]["functionDeclarations"][0]["name"] == "hangup_call"
    assert s["sessionResumption"] == {}
    assert s["contextWindowCompression"]["triggerTokens"] == 25000
    p.receive(json.dumps({"sessionResumptionUpdate": {"newHandle": "h1", "resumable": True}}))
    p.receive(json.dumps({"sessionResumptionUpdate": {"resumable": False}}))   # while generating: kept h1
    assert json.loads(p.setup_message())["setup"]["sessionResumption"] == {"handle": "h1"}


def test_a_turn_becomes_audio_transcripts_and_response_done():
    p = GeminiProtocol(GeminiConfig())
    assert p.receive(b'{\n  "setupComplete": {}\n}') == [SessionReady("gemini-0")]
    evs = p.receive(audio(b"\x01\x00" * 240))
    assert evs == [AudioDelta("gemini-turn-1", b"\x01\x00" * 240)]
    p.receive(json.dumps({"serverContent": {"inputTranscription": {"text": " hello"}}}))
    p.receive(json.dumps({"serverContent": {"outputTranscription": {"text": "Hi"}}}))
    p.receive(json.dumps({"serverContent": {"outputTranscription": {"text": " there"}}}))
    assert p.receive(json.dumps({"serverContent": {"generationComplete": True}})) == [AudioDone("gemini-turn-1")]
    evs = p.receive(json.dumps({"serverContent": {"turnComplete": True}, "usageMetadata": {
        "promptTokenCount": "100", "responseTokenCount": 50,
        "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 80}, {"modality": "TEXT", "tokenCount": 20}],
        "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 50}]}}))
    assert evs[:2] == [Transcript("caller", "hello", None), Transcript("bot", "Hi there", "gemini-turn-1")]
    done = evs[2]
    assert isinstance(done, ResponseDone) and done.status == "completed"
    assert done.usage["input_token_details"] == {"audio_tokens": 80, "text_tokens": 20}
    assert done.usage["output_token_details"] == {"audio_tokens": 50, "text_tokens": 0}
    assert p.receive(audio(b"\x00\x00" * 10))[0].item_id == "gemini-turn-2"   # the next turn is a new item


def test_one_message_with_audio_transcript_and_turn_complete_is_read_in_order():
    p = GeminiProtocol(GeminiConfig())
    msg = json.loads(audio(b"\x02\x00" * 8))
    msg["serverContent"].update(outputTranscription={"text": "ok"}, turnComplete=True)
    evs = p.receive(json.dumps(msg))
    assert [type(e) for e in evs] == [AudioDelta, Transcript, AudioDone, ResponseDone]


def test_interrupted_is_a_barge_in_and_cancels_the_turn():
    p = GeminiProtocol(GeminiConfig())
    p.receive(audio(b"\x01\x00" * 100))
    p.receive(json.dumps({"serverContent": {"outputTranscription": {"text": "Let me tell you"}}}))
    assert p.receive(json.dumps({"serverContent": {"interrupted": True}})) == [SpeechStarted("gemini-turn-1")]
    evs = p.receive(json.dumps({"serverContent": {"turnComplete": True}}))
    assert Transcript("bot", "Let me tell you…", "gemini-turn-1") in evs
    assert evs[-1] == ResponseDone("cancelled", "turn_detected")


def test_tool_calls_are_answered_once_by_id_and_never_when_cancelled():
    p = GeminiProtocol(GeminiConfig())
    evs = p.receive(json.dumps({"toolCall": {"functionCalls": [
        {"id": "function-call-1", "name": "send_dtmf", "args": {"digits": "12"}},
        {"id": "function-call-2", "name": "hangup_call", "args": {}}]}}))
    assert evs == [ToolCall("function-call-1", "send_dtmf", '{"digits": "12"}'),
                   ToolCall("function-call-2", "hangup_call", "{}"),
                   ResponseDone("completed", "tool_call")]   # no turn open: the model waits, silent
    assert p.receive(json.dumps({"toolCall": {"functionCalls": [{"id": "function-call-1", "name": "send_dtmf"}]}})) == []
    (msg,) = p.tool_result("function-call-1", '{"status": "sent"}')
    assert json.loads(msg) == {"toolResponse": {"functionResponses": [
        {"id": "function-call-1", "name": "send_dtmf", "response": {"output": {"status": "sent"}}}]}}
    assert p.tool_result("function-call-1", "{}") == []          # answered already
    p.receive(json.dumps({"toolCallCancellation": {"ids": ["function-call-2"]}}))
    assert p.tool_result("function-call-2", "{}") == []          # the server dropped it (barge-in)
    p.receive(json.dumps({"toolCall": {"functionCalls": [{"id": "c3", "name": "api_call", "args": {}}]}}))
    (err,) = p.tool_result("c3", '{"error": "not allowed"}')
    assert json.loads(err)["toolResponse"]["functionResponses"][0]["response"] == {"error": "not allowed"}


def test_a_call_inside_a_turn_leaves_the_end_of_the_turn_to_turn_complete():
    p = GeminiProtocol(GeminiConfig())
    p.receive(audio(b"\x01\x00" * 8))
    evs = p.receive(json.dumps({"toolCall": {"functionCalls": [{"id": "c1", "name": "hangup_call", "args": {}}]}}))
    assert evs == [ToolCall("c1", "hangup_call", "{}")]
    assert p.receive(json.dumps({"serverContent": {"turnComplete": True}}))[-1].status == "completed"


def test_a_call_from_a_dropped_connection_is_answered_as_text():
    p = GeminiProtocol(GeminiConfig())
    p.receive(json.dumps({"toolCall": {"functionCalls": [{"id": "old", "name": "api_call", "args": {}}]}}))
    p.new_connection()
    (msg,) = p.tool_result("old", '{"status": 200}')
    turn = json.loads(msg)["clientContent"]
    assert "api_call" in turn["turns"][0]["parts"][0]["text"] and '{"status": 200}' in turn["turns"][0]["parts"][0]["text"]


def test_go_away_is_remembered_until_the_next_setup():
    p = GeminiProtocol(GeminiConfig())
    assert p.receive(json.dumps({"goAway": {"timeLeft": "50s"}})) == []
    assert p.go_away == "50s"
    p.setup_message()
    assert p.go_away is None


def test_usage_without_modality_details_and_vertex_names():
    u = gemini_usage({"promptTokenCount": 10, "candidatesTokenCount": "7"})
    assert u["input_token_details"] == {"audio_tokens": 0, "text_tokens": 10}
    assert u["output_token_details"] == {"audio_tokens": 7, "text_tokens": 0}


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200),
                 st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
                              lambda c: st.lists(c, max_size=3) | st.dictionaries(
                                  st.sampled_from(["serverContent", "modelTurn", "parts", "inlineData", "data",
                                                   "toolCall", "functionCalls", "turnComplete", "interrupted",
                                                   "goAway", "usageMetadata", "id", "name", "args",
                                                   "sessionResumptionUpdate", "newHandle", "resumable"]),
                                  c, max_size=4), max_leaves=12).map(json.dumps)))
def test_hostile_messages_never_raise(data):
    p = GeminiProtocol(GeminiConfig())
    p.receive(data)


def test_wrongly_typed_fields_are_skipped():
    p = GeminiProtocol(GeminiConfig())
    for msg in ({"serverContent": {"modelTurn": {"parts": [{"inlineData": []}, {"inlineData": {"data": 5}}, 7]}}},
                {"serverContent": {"modelTurn": {"parts": {"x": 1}}}}, {"toolCallCancellation": {"ids": 3}},
                {"toolCall": {"functionCalls": [{"name": 3}, "x"]}}, {"serverContent": []},
                {"usageMetadata": {"promptTokensDetails": 3}, "serverContent": {"turnComplete": True}}):
        p.receive(json.dumps(msg))
    assert p.receive(audio(b"\x01\x00" * 4)) == [AudioDelta("gemini-turn-1", b"\x01\x00" * 4)]

