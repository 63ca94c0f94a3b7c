"""Google Gemini Live (BidiGenerateContent): the conversation state, sans I/O.

`GeminiProtocol` builds client messages (JSON text) and turns server messages (JSON, text or binary frames)
into the provider-neutral `ModelEvent`s a `Call` reads, like `openai_realtime.protocol` does for OpenAI.
Facts are from ``shared/reference/gemini-live.md`` (section numbers below refer to it).

What differs from OpenAI Realtime, and how it maps:
- The configuration is the first message (`setup`) and fixed for the connection; a resumed connection may
  change everything but the model (§1, §3), so mid-call instruction changes are kept for the next `setup`
  and told to the model as a text turn meanwhile.
- Caller audio is 16 kHz PCM16 LE (§4); the model's audio is 24 kHz (§5).
- There is no speech-started event: `serverContent.interrupted` is the barge-in (§7), and there is no
  truncate, so `interrupt()` sends nothing.
- A reply ends with `generationComplete` (audio done) and then `turnComplete` (+ `usageMetadata`) (§6).
- Tool calls carry `args` as an object and are answered with `toolResponse`; the model continues by itself,
  so `respond` needs no extra message; calls in `toolCallCancellation` get no answer (§8).
- Errors are close codes, handled by the adapter (§10); `goAway` and resumption handles are kept here (§9).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import pybase64

from ..base import (AudioDelta, AudioDone, ModelEvent, ResponseDone, SessionReady, SpeechStarted, ToolCall,
                    Transcript)

log = logging.getLogger("voiceai.gemini")

INPUT_RATE = 16000     # Hz, what realtimeInput.audio carries
OUTPUT_RATE = 24000    # Hz, what modelTurn audio carries
SENSITIVITIES = ("high", "low")


@dataclass(frozen=True)
class GeminiConfig:
    """What goes into `setup`; built from Settings by the app."""
    model: str = "gemini-3.8-live"
    instructions: str = ""
    voice: str = "Kore"
    start_sensitivity: str | None = None   # "high" | "low" (None: the server's default)
    end_sensitivity: str | None = None
    prefix_padding_ms: int | None = None
    silence_ms: int | None = None
    transcription: bool = True              # input and output transcription
    compression_trigger_tokens: int | None = 25000   # context-window compression: calls of any length
    tools: list[dict[str, Any]] = field(default_factory=list)   # flat OpenAI-style function declarations
    language: str = ""                      # speechConfig.languageCode (BCP-47, "es-US"); "" = not sent

    def setup(self, resume_handle: str | None = None) -> dict[str, Any]:
        vad: dict[str, Any] = {"disabled": False}
        if self.start_sensitivity:
            vad["startOfSpeechSensitivity"] = f"START_SENSITIVITY_{self.start_sensitivity.upper()}"
        if self.end_sensitivity:
            vad["endOfSpeechSensitivity"] = f"END_SENSITIVITY_{self.end_sensitivity.upper()}"
        if self.prefix_padding_ms is not None:
            vad["prefixPaddingMs"] = self.prefix_padding_ms
        if self.silence_ms is not None:
            vad["silenceDurationMs"] = self.silence_ms
        setup: dict[str, Any] = {
            "model": self.model if self.model.startswith("models/") else f"models/{self.model}",
            "generationConfig": {"responseModalities": ["AUDIO"], "speechConfig": {
                "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": self.voice}}}},
            "realtimeInputConfig": {"automaticActivityDetection": vad,
                                    "activityHandling": "START_OF_ACTIVITY_INTERRUPTS"},
            "sessionResumption": {"handle": resume_handle} if resume_handle else {},
        }
        if self.language:
            setup["generationConfig"]["speechConfig"]["languageCode"] = self.language
        if self.instructions:
            setup["systemInstruction"] = {"parts": [{"text": self.instructions}]}
        if self.tools:
            setup["tools"] = [{"functionDeclarations": [
                {"name": t["name"], "description": t.get("description", ""),
                 "parametersJsonSchema": t.get("parameters") or {"type": "object", "properties": {}}}
                for t in self.tools]}]
        if self.transcription:
            setup["inputAudioTranscription"] = {}
            setup["outputAudioTranscription"] = {}
        if self.compression_trigger_tokens:
            setup["contextWindowCompression"] = {"slidingWindow": {},
                                                 "triggerTokens": self.compression_trigger_tokens}
        return {"setup": setup}


def gemini_usage(meta: dict[str, Any]) -> dict[str, Any]:
    """`usageMetadata` in the shape `Call` prices (OpenAI's usage: input/output token details by modality).

    Gemini counts per modality in promptTokensDetails / responseTokensDetails (Vertex: candidates*)."""
    def by_modality(details: Any) -> dict[str, int]:
        out = {"audio_tokens": 0, "text_tokens": 0}
        for d in _list(details):
            if isinstance(d, dict):
                key = "audio_tokens" if str(d.get("modality", "")).upper() == "AUDIO" else "text_tokens"
                out[key] += _int(d.get("tokenCount"))
        return out
    d_in = by_modality(meta.get("promptTokensDetails"))
    d_out = by_modality(meta.get("responseTokensDetails", meta.get("candidatesTokensDetails")))
    prompt = _int(meta.get("promptTokenCount"))
    response = _int(meta.get("responseTokenCount", meta.get("candidatesTokenCount")))
    if prompt and not any(d_in.values()):
        d_in["text_tokens"] = prompt      # no per-modality split given: count it as text
    if response and not any(d_out.values()):
        d_out["audio_tokens"] = response  # a voice agent's replies are audio
    return {"input_tokens": prompt, "output_tokens": response,
            "input_token_details": d_in, "output_token_details": d_out}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _int(v: Any) -> int:
    """Proto-JSON int64s arrive as strings (§1)."""
    try:
        return max(0, int(v))
    except (TypeError, ValueError):
        return 0


class GeminiProtocol:
    """Sans-I/O conversation state for one Gemini Live session (kept across resumed connections)."""

    def __init__(self, config: GeminiConfig) -> None:
        self.config = config
        self.session_id: str | None = None
        self.resume_handle: str | None = None   # latest handle with resumable:true
        self.go_away: str | None = None         # timeLeft of a goAway: the connection is about to end
        self.turns = 0                          # model turns begun (item ids)
        self._item: str | None = None           # the model turn whose audio is arriving
        self._item_done = False                 # its generationComplete was seen
        self._out_text: list[str] = []          # outputTranscription fragments of the turn
        self._in_text: list[str] = []           # inputTranscription fragments of the caller's turn
        self._interrupted = False
        self._usage: dict[str, Any] | None = None
        self._tool_names: dict[str, str] = {}   # call id -> function name (toolResponse needs both)
        self.cancelled_calls: set[str] = set()  # dropped by the server (barge-in): not answered
        self._stale_calls: set[str] = set()     # issued on an earlier connection: answered as text
        self._calls_seen = 0
        self.bad_messages = 0
        self.connections = 0

    # --- client messages ---------------------------------------------------------------------------------
    def setup_message(self) -> str:
        self.connections += 1
        self.go_away = None
        return json.dumps(self.config.setup(self.resume_handle))

    @staticmethod
    def audio_message(pcm16k: bytes) -> str:
        # a template, not json.dumps: this runs for every 20 ms of caller audio
        return ('{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=16000","data":"'
                + pybase64.b64encode_as_string(pcm16k) + '"}}}')

    @staticmethod
    def text_turn(text: str, turn_complete: bool = True) -> str:
        """A user text turn (clientContent). It interrupts a reply in progress (§4)."""
        return json.dumps({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}],
                                             "turnComplete": turn_complete}})

    def tool_result(self, call_id: str, output: str) -> list[str]:
        """toolResponse for one call; nothing for a call the server cancelled (§8)."""
        name = self._tool_names.pop(call_id, None)
        if call_id in self.cancelled_calls or name is None:
            self.cancelled_calls.discard(call_id)
            return []
        if call_id in self._stale_calls:
            # the resumed session ignores a response to a call it did not issue: tell it as text (§8)
            self._stale_calls.discard(call_id)
            return [self.text_turn(f"(The {name} tool you called earlier returned: {output})")]
        try:
            value: Any = json.loads(output)
        except ValueError:
            value = output
        if isinstance(value, dict) and "error" in value and len(value) == 1:
            response: dict[str, Any] = {"error": value["error"]}
        else:
            response = {"output": value}
        return [json.dumps({"toolResponse": {"functionResponses": [
            {"id": call_id, "name": name, "response": response}]}})]

    def instructions_update(self, instructions: str) -> str:
        """Kept for the next `setup` (a resumed connection); told to the model now as a text turn."""
        self.config = replace(self.config, instructions=instructions)
        return self.text_turn(f"New instructions for the rest of this call: {instructions}", turn_complete=False)

    # --- server messages ---------------------------------------------------------------------------------
    def receive(self, data: str | bytes) -> list[ModelEvent]:
        try:
            msg = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            msg = None
        if not isinstance(msg, dict):
            self.bad_messages += 1
            log.warning("! Gemini message not understood, skipped (%d so far)", self.bad_messages)
            return []
        out: list[ModelEvent] = []
        if "setupComplete" in msg:
            sc = msg["setupComplete"] if isinstance(msg["setupComplete"], dict) else {}
            self.session_id = str(sc.get("sessionId") or self.session_id or f"gemini-{self.connections}")
            out.append(SessionReady(self.session_id))
        content = msg.get("serverContent")
        if isinstance(content, dict):
            out += self._server_content(content, msg.get("usageMetadata"))
        call = msg.get("toolCall")
        if isinstance(call, dict):
            out += self._tool_calls(call.get("functionCalls"))
        cancel = msg.get("toolCallCancellation")
        if isinstance(cancel, dict):
            ids = [i for i in _list(cancel.get("ids")) if isinstance(i, str)]
            self.cancelled_calls.update(i for i in ids if i in self._tool_names)
        update = msg.get("sessionResumptionUpdate")
        if isinstance(update, dict) and update.get("resumable") and update.get("newHandle"):
            self.resume_handle = str(update["newHandle"])
        away = msg.get("goAway")
        if isinstance(away, dict):
            self.go_away = str(away.get("timeLeft") or "0s")
        return out

    def _server_content(self, c: dict[str, Any], usage: Any) -> list[ModelEvent]:
        """Every field, in order: one message may carry audio, transcripts and turnComplete (§5)."""
        out: list[ModelEvent] = []
        if c.get("interrupted"):
            # barge-in: the server has dropped the rest of the reply; the bot must stop at once (§7)
            self._interrupted = True
            out.append(SpeechStarted(self._item))
        turn = c.get("modelTurn")
        if isinstance(turn, dict):
            for part in _list(turn.get("parts")):
                inline = part.get("inlineData") if isinstance(part, dict) else None
                data = inline.get("data") if isinstance(inline, dict) else None
                if not isinstance(data, str) or not data or part.get("thought"):
                    continue
                try:
                    pcm = pybase64.b64decode(data, validate=True)
                except (ValueError, TypeError):
                    self.bad_messages += 1
                    continue
                if self._item is None:
                    self.turns += 1
                    self._item, self._item_done, self._interrupted = f"gemini-turn-{self.turns}", False, False
                out.append(AudioDelta(self._item, pcm))
        for key, buf in (("inputTranscription", self._in_text), ("outputTranscription", self._out_text)):
            t = c.get(key)
            if isinstance(t, dict) and isinstance(t.get("text"), str):
                buf.append(t["text"])
        if c.get("generationComplete") and self._item is not None and not self._item_done:
            self._item_done = True
            out.append(AudioDone(self._item))
        if isinstance(usage, dict):
            self._usage = usage           # rides with turnComplete; kept if it comes a message early
        if c.get("turnComplete"):
            out += self._turn_complete()
        return out

    def _turn_complete(self) -> list[ModelEvent]:
        out: list[ModelEvent] = []
        caller = "".join(self._in_text).strip()
        if caller:
            out.append(Transcript("caller", caller, None))
        bot = "".join(self._out_text).strip()
        if bot:
            out.append(Transcript("bot", bot + ("…" if self._interrupted else ""), self._item))
        if self._item is not None and not self._item_done:
            out.append(AudioDone(self._item))
        status = "cancelled" if self._interrupted else "completed"
        usage, self._usage = self._usage, None
        out.append(ResponseDone(status, "turn_detected" if self._interrupted else None,
                                gemini_usage(usage) if usage is not None else None))
        self._in_text.clear()
        self._out_text.clear()
        self._item, self._item_done, self._interrupted = None, False, False
        return out

    def _tool_calls(self, calls: Any) -> list[ModelEvent]:
        out: list[ModelEvent] = []
        for fc in _list(calls):
            if not isinstance(fc, dict) or not isinstance(fc.get("name"), str):
                self.bad_messages += 1
                continue
            self._calls_seen += 1
            call_id = str(fc.get("id") or f"gemini-call-{self._calls_seen}")   # Vertex may omit ids
            if call_id in self._tool_names:
                continue
            self._tool_names[call_id] = fc["name"]
            args = fc.get("args")
            out.append(ToolCall(call_id, fc["name"], json.dumps(args if isinstance(args, dict) else {})))
        if out and self._item is None:
            # a call after turnComplete: no turnComplete follows until the result is in, and the model is
            # silent meanwhile; say its reply is over, or a hangup would wait for it forever
            out.append(ResponseDone("completed", "tool_call"))
        return out

    def new_connection(self) -> None:
        """Before a reconnect: a reply in progress is gone (its tail will not come)."""
        self._item, self._item_done, self._interrupted = None, False, False
        self._out_text.clear()
        self._in_text.clear()
        # calls issued by the old connection cannot be answered on the new one with toolResponse (§8)
        self._stale_calls.update(self._tool_names)
        self._usage = None
