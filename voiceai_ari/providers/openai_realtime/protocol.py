"""OpenAI Realtime API (GA only): the conversation state, sans I/O.

`RealtimeProtocol` builds client events (JSON text) and turns server events (JSON text) into
provider-neutral `ModelEvent`s. It tracks the active response, how much audio each assistant item has
delivered (so a barge-in truncates at a point the server will accept), and the text of finished turns (so a
new session can be re-seeded after a dropped connection or the 60-minute limit). The asyncio adapter that
moves the text is `realtime_session.RealtimeSession`, like websockets' protocol/connection split.

The beta API is shut down: no `OpenAI-Beta` header, `session.type` is always sent, GA event names only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import pybase64
from pydantic import BaseModel, ConfigDict, ValidationError

from ..base import (AudioDelta, AudioDone, CallerIdle, ModelError, ModelEvent, ResponseDone, SessionReady,
                    SpeechStarted, SpeechStopped, ToolCall, Transcript)
from .session_config import SessionConfig

__all__ = ["RealtimeProtocol", "SessionConfig"]

log = logging.getLogger("voiceai.realtime")

# error codes after which the session cannot go on (the socket closes or every request will fail)
# (session_expired is not among them: the adapter rolls over to a new session)
FATAL_CODES = frozenset({"invalid_api_key", "model_not_found", "beta_api_shape_disabled",
                         "insufficient_quota", "invalid_session", "authentication_error"})
HISTORY_MAX = 40   # finished turns kept to re-seed a new session
BYTES_PER_MS = 48  # 24 kHz * 2 bytes; a G.711 session has 8 (SessionConfig.bytes_per_ms)
_DELTA_TYPE = '"response.output_audio.delta"'
OWN_METADATA = {"voiceai": "replacement"}   # marks the responses we ask for in place of the server's own
_OWN_MARK = json.dumps(OWN_METADATA)


def _json_string_field(text: str, key: str) -> str | None:
    """The value of ``"key": "value"`` where value has no escapes, found by search, else None."""
    i = text.find(key)
    if i < 0:
        return None
    i += len(key)
    n = len(text)
    while i < n and text[i] in " :\t\r\n":
        i += 1
    if i >= n or text[i] != '"':
        return None
    j = text.find('"', i + 1)
    if j < 0:
        return None
    value = text[i + 1:j]
    return None if "\\" in value else value


def _audio_delta_fields(text: str) -> tuple[str, str] | None:
    """(item_id, base64) of a ``response.output_audio.delta`` without a full JSON parse, or None.

    Most of a session's bytes are these events, and json.loads spends most of its time copying the
    base64 string out (6.4 µs of 11 for 20 ms of audio). Base64 and the model's ids never need JSON
    escapes, and the event is flat, so searching for the two keys finds what a parse would. Anything
    unusual (an escape, a missing key, another layout) returns None and takes the full parse.
    """
    if not text.startswith("{") or '"type"' not in text[:16]:
        return None
    item_id = _json_string_field(text, '"item_id"')
    b64 = _json_string_field(text, '"delta"')
    if item_id is None or b64 is None:
        return None
    return item_id, b64


class _ServerEvent(BaseModel):
    """The fields of GA server events that the protocol reads (everything else is ignored)."""
    model_config = ConfigDict(extra="ignore")
    type: str
    delta: str | None = None
    item_id: str | None = None
    response_id: str | None = None
    transcript: str | None = None
    session: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    item: dict[str, Any] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    error: dict[str, Any] | None = None
    audio_start_ms: int | None = None
    audio_end_ms: int | None = None


class RealtimeProtocol:
    """Sans-I/O GA conversation state for one session."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._bytes_per_ms = config.bytes_per_ms
        self.session_id: str | None = None
        self.response_active = False
        self.audio_ms: dict[str, int] = {}       # assistant item -> ms of audio received
        self._audio_bytes: dict[str, int] = {}
        self.done_items: set[str] = set()         # items whose audio is complete
        self.response_id: str | None = None       # the active response
        self.tool_calls_seen: set[str] = set()    # call_ids already delivered (each runs once)
        self._pending: list[str] = []             # client events held until the active response is done
        self.history: list[tuple[str, str]] = []  # ("user"|"assistant", text) of finished turns
        self._heard: dict[str, float] = {}        # interrupted item -> share of its audio the caller heard
        self.bad_events = 0
        self._seq = 0
        self._replace_next = False               # cancel the next response the server starts by itself
        self.muted: str | None = None            # a response being cancelled unheard: its output is dropped
        self._urgent: list[str] = []             # client events that go after the current server event

    def new_session(self) -> None:
        """Forget the per-session state before a new connection; the history stays."""
        self.session_id, self.response_active, self.response_id = None, False, None
        self.audio_ms.clear()
        self._audio_bytes.clear()
        self.done_items.clear()
        self._pending.clear()
        self._urgent.clear()
        self._replace_next, self.muted = False, None

    def restore_history(self) -> list[str]:
        """conversation.item.create events that re-seed a new session with the earlier turns' text."""
        out = []
        for role, text in self.history:
            kind = "input_text" if role == "user" else "output_text"
            out.append(json.dumps({"type": "conversation.item.create", "event_id": self._event_id(),
                                   "item": {"type": "message", "role": role,
                                            "content": [{"type": kind, "text": text}]}}))
        return out

    def _remember(self, role: str, text: str) -> None:
        if text:
            self.history.append((role, text))
            del self.history[:-HISTORY_MAX]

    # --- client events -----------------------------------------------------------------------------------
    def _event_id(self) -> str:
        self._seq += 1
        return f"evt_va_{self._seq}"

    def session_update(self) -> str:
        return json.dumps({"type": "session.update", "event_id": self._event_id(),
                           "session": self.config.session()})

    @staticmethod
    def append_audio(pcm: bytes) -> str:
        # a template, not json.dumps: this runs for every 20 ms of caller audio
        return '{"type":"input_audio_buffer.append","audio":"' + pybase64.b64encode_as_string(pcm) + '"}'

    def _response_create(self, instructions: str | None = None) -> str:
        ev: dict[str, Any] = {"type": "response.create", "event_id": self._event_id()}
        if instructions:
            ev["response"] = {"instructions": instructions}
        return json.dumps(ev)

    def _after_response(self, msg: str) -> list[str]:
        """response.create only once no response is active (else: conversation_already_has_active_response)."""
        if self.response_active:
            if msg not in self._pending:
                self._pending.append(msg)
            return []
        self.response_active = True  # until response.created/done confirm it
        return [msg]

    def request_response(self, instructions: str | None = None) -> list[str]:
        return self._after_response(self._response_create(instructions))

    def respond_instead(self, instructions: str) -> list[str]:
        """Speak `instructions` in place of the response the server starts by itself (idle timeout, A.4).

        The server's response is cancelled as soon as it is created (it is recognised by not carrying our
        metadata), and its audio and text are dropped; ours goes once the cancelled one is done. Returns
        what may go now."""
        ours = json.dumps({"type": "response.create", "event_id": self._event_id(),
                           "response": {"instructions": instructions, "metadata": OWN_METADATA}})
        out: list[str] = []
        if self.response_active and self.response_id is not None:   # the server's is already running
            self.muted = self.response_id
            out.append(json.dumps({"type": "response.cancel", "event_id": self._event_id(),
                                   "response_id": self.response_id}))
        else:
            self._replace_next = True
            self.response_active = True   # until the server's response has come and gone
        self._pending.append(ours)
        return out

    def no_response_to_replace(self) -> list[str]:
        """The server did not start a response after all: what `respond_instead` held may go now."""
        if not self._replace_next:
            return []
        self._replace_next = False
        if self.response_id is None:
            self.response_active = False
        return self.take_pending()

    def tool_result(self, call_id: str, output: str, respond: bool) -> list[str]:
        out = [json.dumps({"type": "conversation.item.create", "event_id": self._event_id(),
                           "item": {"type": "function_call_output", "call_id": call_id, "output": output}})]
        if respond:
            out += self._after_response('{"type":"response.create"}')
        return out

    def user_text(self, text: str, respond: bool) -> list[str]:
        out = [json.dumps({"type": "conversation.item.create", "event_id": self._event_id(),
                           "item": {"type": "message", "role": "user",
                                    "content": [{"type": "input_text", "text": text}]}})]
        if respond:
            out += self._after_response('{"type":"response.create"}')
        return out

    def say(self, text: str) -> list[str]:
        """An operator's line for the bot to speak: a system item, then a response."""
        out = [json.dumps({"type": "conversation.item.create", "event_id": self._event_id(),
                           "item": {"type": "message", "role": "system", "content": [
                               {"type": "input_text", "text": f"Tell the caller now, in your own voice: {text}"}]}})]
        return out + self._after_response('{"type":"response.create"}')

    def instructions_update(self, instructions: str) -> str:
        """A partial session.update: only the instructions change (the server keeps everything else)."""
        self.config = replace(self.config, instructions=instructions)  # a reconnect keeps them too
        return json.dumps({"type": "session.update", "event_id": self._event_id(),
                           "session": {"type": "realtime", "instructions": instructions}})

    def cancel_if_active(self, response_id: str | None) -> list[str]:
        """The fallback cancel: only if `response_id` is still the active response after a barge-in."""
        if response_id is not None and self.response_active and self.response_id == response_id:
            return [json.dumps({"type": "response.cancel", "event_id": self._event_id(),
                                "response_id": response_id})]
        return []

    def interrupt(self, item_id: str | None, played_ms: int) -> list[str]:
        """Client events for a barge-in: truncate what was not heard; cancel only if the server won't.

        audio_end_ms never exceeds what the server sent for the item (it rejects that), and nothing is
        truncated when the item was already heard in full.
        """
        out: list[str] = []
        if item_id is not None and item_id in self.audio_ms:
            end = min(max(played_ms, 0), self.audio_ms[item_id])
            if self.audio_ms[item_id]:
                self._heard[item_id] = end / self.audio_ms[item_id]
            if not (item_id in self.done_items and end >= self.audio_ms[item_id]):
                out.append(json.dumps({"type": "conversation.item.truncate", "event_id": self._event_id(),
                                       "item_id": item_id, "content_index": 0, "audio_end_ms": end}))
        if not self.config.interrupt_response:
            out += self.cancel_if_active(self.response_id)
        # with interrupt_response the server cancels by itself (A.10); the adapter checks later that it did
        return out

    # --- server events -----------------------------------------------------------------------------------
    def receive(self, text: str | bytes) -> list[ModelEvent]:
        if isinstance(text, str) and _DELTA_TYPE in text[:64]:
            if self.muted is not None and self.muted in text:
                return []    # audio of a response being cancelled unheard
            fast = _audio_delta_fields(text)
            if fast is not None:
                return self._audio_delta(*fast)
        try:
            ev = _ServerEvent.model_validate_json(text)
        except ValidationError:
            self.bad_events += 1
            log.warning("! model event not understood, skipped (%d so far)", self.bad_events)
            return []
        handler = getattr(self, "on_" + ev.type.replace(".", "_"), None)
        if handler is None:
            return []
        if self.muted is not None and ev.response_id == self.muted:
            return []        # output of a response being cancelled unheard (its response.done still counts)
        return handler(ev)

    def on_response_output_audio_delta(self, ev: _ServerEvent) -> list[ModelEvent]:
        return self._audio_delta(ev.item_id, ev.delta)

    def _audio_delta(self, item_id: str | None, b64: str | None) -> list[ModelEvent]:
        if not b64 or not item_id:
            return []
        try:
            pcm = pybase64.b64decode(b64, validate=True)
        except (ValueError, TypeError):   # binascii.Error is a ValueError; non-ASCII text too
            self.bad_events += 1
            return []
        n = self._audio_bytes.get(item_id, 0) + len(pcm)
        self._audio_bytes[item_id] = n
        self.audio_ms[item_id] = n // self._bytes_per_ms
        return [AudioDelta(item_id, pcm)]

    def on_response_output_audio_done(self, ev: _ServerEvent) -> list[ModelEvent]:
        if not ev.item_id:
            return []
        self.done_items.add(ev.item_id)
        return [AudioDone(ev.item_id)]

    def on_session_created(self, ev: _ServerEvent) -> list[ModelEvent]:
        self.session_id = str((ev.session or {}).get("id", ""))
        return []

    def on_session_updated(self, ev: _ServerEvent) -> list[ModelEvent]:
        return [SessionReady(self.session_id or "")]

    def on_input_audio_buffer_speech_started(self, ev: _ServerEvent) -> list[ModelEvent]:
        # the caller is back: a replacement for an idle answer not yet asked for is not wanted any more
        self._replace_next = False
        self._pending = [m for m in self._pending if _OWN_MARK not in m]
        return [SpeechStarted(ev.item_id)]

    def on_input_audio_buffer_speech_stopped(self, ev: _ServerEvent) -> list[ModelEvent]:
        return [SpeechStopped(ev.item_id)]

    def on_input_audio_buffer_timeout_triggered(self, ev: _ServerEvent) -> list[ModelEvent]:
        silent = (ev.audio_end_ms or 0) - (ev.audio_start_ms or 0)
        return [CallerIdle(max(silent, 0))]

    def on_response_created(self, ev: _ServerEvent) -> list[ModelEvent]:
        r = ev.response or {}
        self.response_active = True
        self.response_id = str(r.get("id") or "") or None
        if self._replace_next and r.get("metadata") != OWN_METADATA and self.response_id is not None:
            self._replace_next = False
            self.muted = self.response_id
            self._urgent.append(json.dumps({"type": "response.cancel", "event_id": self._event_id(),
                                            "response_id": self.response_id}))
        return []

    def on_response_done(self, ev: _ServerEvent) -> list[ModelEvent]:
        self.response_active = False
        self.response_id = None
        r = ev.response or {}
        details = r.get("status_details") or {}
        status = str(r.get("status", ""))
        superseded = self.muted is not None and r.get("id") == self.muted
        if superseded:
            self.muted = None
        done = ResponseDone(status, details.get("reason"), r.get("usage"), superseded)
        if status != "failed":
            return [done]
        # quota, rate limit, server error: the cause is in status_details.error {type, code} (A.7)
        err = details.get("error") or {}
        code = str(err.get("code") or err.get("type") or "unknown")
        message = str(err.get("message") or f"response failed ({err.get('type') or 'no details'})")
        return [ModelError(code, message, code in FATAL_CODES), done]

    def take_pending(self) -> list[str]:
        """Client events that may go now (called by the adapter after each server event): urgent ones
        (a cancel), then one held response.create once no response is active."""
        out, self._urgent = self._urgent, []
        if self.response_active or not self._pending:
            return out
        msg = self._pending.pop(0)
        if '"response.create"' in msg:
            self.response_active = True
        return out + [msg]

    def _tool_call(self, call_id: str | None, name: str | None, arguments: str | None) -> list[ModelEvent]:
        # both function_call_arguments.done and output_item.done carry the call: run it once (A.9)
        if not call_id or not name or call_id in self.tool_calls_seen:
            return []
        self.tool_calls_seen.add(call_id)
        return [ToolCall(call_id, name, arguments or "{}")]

    def on_response_function_call_arguments_done(self, ev: _ServerEvent) -> list[ModelEvent]:
        return self._tool_call(ev.call_id, ev.name, ev.arguments)

    def on_response_output_item_done(self, ev: _ServerEvent) -> list[ModelEvent]:
        item = ev.item or {}
        if item.get("type") != "function_call":
            return []
        return self._tool_call(item.get("call_id"), item.get("name"), item.get("arguments"))

    def on_response_output_audio_transcript_done(self, ev: _ServerEvent) -> list[ModelEvent]:
        text = ev.transcript or ""
        heard = self._heard.pop(ev.item_id or "", None)
        if heard is not None and heard < 1.0:   # the caller heard only part of it: so does the history
            text = text[:int(len(text) * heard)].rstrip() + "…"
        self._remember("assistant", text)
        return [Transcript("bot", text, ev.item_id)]

    def on_conversation_item_input_audio_transcription_completed(self, ev: _ServerEvent) -> list[ModelEvent]:
        self._remember("user", ev.transcript or "")
        return [Transcript("caller", ev.transcript or "", ev.item_id)]

    def on_error(self, ev: _ServerEvent) -> list[ModelEvent]:
        err = ev.error or {}
        code = str(err.get("code") or err.get("type") or "unknown")
        if code == "response_cancel_not_active":  # a normal race after barge-in
            log.debug("< error %s (harmless)", code)
            return []
        if code == "conversation_already_has_active_response":
            # our response.create raced one the server started itself (VAD): ask again once it is done
            log.debug("< error %s: response.create held until the active response is done", code)
            self.response_active = True
            if '{"type":"response.create"}' not in self._pending:
                self._pending.append('{"type":"response.create"}')
            return []
        return [ModelError(code, str(err.get("message", "")), code in FATAL_CODES)]
