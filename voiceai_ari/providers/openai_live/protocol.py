"""OpenAI GPT-Live (`/v1/live/sessions`): the conversation state, sans I/O.

`LiveProtocol` builds client messages (JSON text) and turns server messages into the provider-neutral
`ModelEvent`s a `Call` reads. Facts are from ``shared/reference/openai-live.md`` (section numbers below).

What differs from OpenAI Realtime, and how it maps:
- The configuration is `session.start`, the first message, fixed for the session (§2.2); a mid-call
  instruction change is appended (`session.instructions.append`) and kept for the next session.
- One audio format both ways: PCM16 LE at 24 kHz, what the call path carries: no resampling (§2.3).
- The model owns the turns (§2.6): no speech-started, response-done or audio-done event, no truncate or
  cancel, no item ids. Replies are inferred here from the audio itself: a *burst* starts with the first
  audible delta and ends after `BURST_GAP_S` without audible audio; each burst gets an item id, an
  `AudioDone` and a `ResponseDone`. Silent deltas between replies are dropped (the track is continuous);
  within a burst they are held and played only when speech follows (a pause, not the reply's tail).
  No `SpeechStarted` is ever emitted: the model stops by itself when talked over, and the audio arrives at
  real-time pace, so the call's playout queue holds little; flushing it on a guess (a caller transcript
  during a reply) would also mute a reply the model chose to go on with.
- Transcripts come as deltas with no turn boundary (§2.7): each side's text is emitted once it has been
  quiet for `TEXT_GAP_S` (the caller's also when a bot burst starts).
- Tools run on a Responses backend (§2.8): calls are read only from nested `response.output_item.done`
  items of type function_call; every call of a delegation is answered with `response.item.create`, then
  one `response.create` once all are answered and the backend response is over (a partial batch is refused).
- Usage is `usage.seconds`, cumulative per session (§2.11); each update becomes a `UsageUpdate` with the
  seconds not yet counted, ``{"live_seconds": s}``, priced per minute by the call. The seconds after the last
  update of a call (they come ~every 15 s) are not counted: the call has stopped reading by `session.closed`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pybase64

from ..base import (AudioDelta, AudioDone, ModelError, ModelEvent, ResponseDone, SessionReady, ToolCall, Transcript,
                    UsageUpdate)

log = logging.getLogger("voiceai.live")

RATE = 24000
BURST_GAP_S = 0.6          # no audible output for this long: the reply is over
TEXT_GAP_S = 0.8           # a transcript quiet for this long is a finished turn (LiveKit uses 0.8 s)
AUDIBLE_PEAK = 20          # |sample| above this (about -64 dBFS, LiveKit's gate) is audible
MAX_APPEND_CHARS = 1800    # appends take <= 500 tokens; ~4 characters a token, with a margin
MAX_HISTORY_MSGS = 128     # `input` seeding limits (§2.2)
MAX_HISTORY_CHARS = 24000  # ~8,192 tokens
FATAL_CODES = frozenset({"invalid_api_key", "model_not_found", "credit_balance_exhausted", "unknown_parameter",
                         "insufficient_quota"})
BACKEND_DONE = frozenset({"response.completed", "response.done", "response.failed", "response.incomplete"})


@dataclass(frozen=True)
class LiveConfig:
    """What goes into `session.start`; built from Settings by the app."""
    model: str = "gpt-live-1.1"
    instructions: str = ""
    voice: str = "marin"
    backend_model: str = "gpt-5.6-terra"
    tools: list[dict[str, Any]] = field(default_factory=list)   # flat OpenAI-style function declarations

    def session(self, history: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        s: dict[str, Any] = {
            "model": self.model, "instructions": self.instructions,
            "audio": {"format": {"type": "audio/pcm", "rate": RATE}, "output": {"voice": self.voice}},
            "delegation": {"type": "responses", "responses": {"model": self.backend_model, "tools": [
                {"type": "function", "name": t["name"], "description": t.get("description", ""),
                 "parameters": t.get("parameters") or {"type": "object", "properties": {}}}
                for t in self.tools]}},
        }
        if history:
            s["input"] = [{"role": role, "content": [
                {"type": "output_text" if role == "assistant" else "input_text", "text": text}]}
                for role, text in history]
        return s


def clip(text: str) -> str:
    return text if len(text) <= MAX_APPEND_CHARS else text[:MAX_APPEND_CHARS - 1] + "…"


def audible(pcm: bytes) -> bool:
    if len(pcm) < 2:
        return False
    a = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2)
    return int(a.max()) > AUDIBLE_PEAK or int(a.min()) < -AUDIBLE_PEAK


class LiveProtocol:
    """Sans-I/O conversation state for one call (kept across reconnected sessions). Times are loop seconds."""

    def __init__(self, config: LiveConfig) -> None:
        self.config = config
        self.session_id: str | None = None
        self.expires_at: int | None = None
        self.closed_reason: str | None = None    # from session.closed
        self.connections = 0
        self.bursts = 0
        self.bad_messages = 0
        self.history: list[tuple[str, str]] = []     # (user|assistant, text) of earlier turns, for a new session
        self._item: str | None = None             # the burst being played
        self._heard_at = 0.0                      # last audible delta of the burst
        self._held: list[bytes] = []              # silent deltas since then
        self._texts: dict[str, list[str]] = {"caller": [], "bot": []}
        self._text_at: dict[str, float] = {"caller": 0.0, "bot": 0.0}
        self._seconds = 0.0                       # usage.seconds of this session
        self._counted = 0.0                       # of which already in a UsageUpdate
        self._calls: dict[str, tuple[str, str]] = {}     # call_id -> (delegation id, name), unanswered
        self._answered: dict[str, set[str]] = {}         # delegation id -> answered call ids
        self._backend_done: set[str] = set()             # delegations whose backend response is over
        self._stale: set[str] = set()                    # calls of an earlier session
        self._seen: set[str] = set()                     # every call id delivered (once each)
        self.outgoing: list[str] = []                    # messages a server event calls for; the adapter sends them

    # --- client messages ---------------------------------------------------------------------------------
    def start_message(self) -> str:
        self.connections += 1
        self.closed_reason = None
        return json.dumps({"type": "session.start", "event_id": f"start_{self.connections}",
                           "session": self.config.session(self._seed())})

    @staticmethod
    def audio_message(pcm: bytes) -> str:
        # a template, not json.dumps: this runs for every 20 ms of caller audio
        return '{"type":"session.input_audio.append","audio":"' + pybase64.b64encode_as_string(pcm) + '"}'

    @staticmethod
    def append(kind: str, text: str) -> str:
        """session.{instructions,thinking,commentary}.append for the voice layer (delegation_id null)."""
        return json.dumps({"type": f"session.{kind}.append", "content": clip(text), "delegation_id": None})

    def tool_result(self, call_id: str, output: str) -> list[str]:
        """The output item; plus `response.create` once the delegation's whole batch is answered."""
        if call_id in self._stale:     # its delegation belonged to a session that is gone: say it as text
            self._stale.discard(call_id)
            return [self.append("instructions", f"(A tool you asked for earlier returned: {output})")]
        entry = self._calls.pop(call_id, None)
        if entry is None:
            return []
        delegation, _name = entry
        self._answered.setdefault(delegation, set()).add(call_id)
        out = [json.dumps({"type": "response.item.create", "item": {
            "type": "function_call_output", "call_id": call_id, "output": output}})]
        return out + self._maybe_continue(delegation)

    def _maybe_continue(self, delegation: str) -> list[str]:
        if delegation not in self._backend_done or any(d == delegation for d, _ in self._calls.values()):
            return []
        self._backend_done.discard(delegation)
        if not self._answered.pop(delegation, None):
            return []      # the backend asked for nothing: there is nothing to continue
        return [json.dumps({"type": "response.create"})]

    def instructions_update(self, instructions: str) -> str:
        """Kept for the next session's `session.start`; appended to this one now."""
        self.config = replace(self.config, instructions=instructions)
        return self.append("instructions", f"New instructions for the rest of this call: {instructions}")

    def _seed(self) -> list[tuple[str, str]]:
        out, size = [], 0
        for role, text in reversed(self.history):
            size += len(text)
            if len(out) >= MAX_HISTORY_MSGS or size > MAX_HISTORY_CHARS:
                break
            out.append((role, text))
        return out[::-1]

    # --- server messages ---------------------------------------------------------------------------------
    def receive(self, data: str | bytes, now: float) -> list[ModelEvent]:
        try:
            msg = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            msg = None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            self.bad_messages += 1
            log.warning("! GPT-Live message not understood, skipped (%d so far)", self.bad_messages)
            return []
        kind = msg["type"]
        out: list[ModelEvent] = []
        if kind == "session.output_audio.delta":
            out += self._audio(msg.get("delta"), now)
        elif kind in ("session.input_transcript.delta", "session.output_transcript.delta"):
            if isinstance(msg.get("delta"), str):
                side = "caller" if kind == "session.input_transcript.delta" else "bot"
                self._texts[side].append(msg["delta"])
                self._text_at[side] = now
        elif kind == "response.event":
            out += self._backend(msg.get("delegation_id"), msg.get("event"))
        elif kind in ("session.started", "session.updated"):
            s = msg.get("session") if isinstance(msg.get("session"), dict) else {}
            if kind == "session.started":
                self.session_id = str(s.get("id") or f"live-{self.connections}")
                self.expires_at = s.get("expires_at") if isinstance(s.get("expires_at"), int) else None
                self._seconds = self._counted = 0.0
                out.append(SessionReady(self.session_id))
        elif kind == "session.usage.updated":
            out += self._usage(msg.get("usage"))
        elif kind == "session.closed":
            out += self._usage(msg.get("usage"))
            self.closed_reason = str(msg.get("reason") or "unknown")
        elif kind == "error":
            err = msg.get("error") if isinstance(msg.get("error"), dict) else {}
            code = str(err.get("code") or err.get("type") or "error")
            message = str(err.get("message") or "")
            if err.get("param"):
                message += f" (param {err['param']})"
            out.append(ModelError(code, message, fatal=code in FATAL_CODES))
        return out

    def _audio(self, delta: Any, now: float) -> list[ModelEvent]:
        if not isinstance(delta, str):
            self.bad_messages += 1
            return []
        try:
            pcm = pybase64.b64decode(delta, validate=True)
        except (ValueError, TypeError):
            self.bad_messages += 1
            return []
        if len(pcm) % 2:
            pcm = pcm[:-1]
        loud = audible(pcm)
        out: list[ModelEvent] = []
        if self._item is None:
            if not loud:
                return []   # the silence between replies: nothing to play
            self.bursts += 1
            self._item = f"live-burst-{self.bursts}"
            out += self._flush("caller")         # the caller's turn is over: the bot answers
        if not loud:
            self._held.append(pcm)   # a pause, or the silence after the reply: played only if speech follows
            return out
        if self._held:
            pcm = b"".join(self._held) + pcm
            self._held.clear()
        self._heard_at = now
        out.append(AudioDelta(self._item, pcm))
        return out

    def _backend(self, delegation: Any, ev: Any) -> list[ModelEvent]:
        if not isinstance(ev, dict):
            self.bad_messages += 1
            return []
        d = str(delegation) if delegation is not None else "none"
        kind = ev.get("type")
        if kind in BACKEND_DONE:
            self._backend_done.add(d)
            self.outgoing += self._maybe_continue(d)   # the batch may be answered already
            return []
        if kind != "response.output_item.done":
            return []
        item = ev.get("item")
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return []
        call_id, name = item.get("call_id"), item.get("name")
        if not isinstance(call_id, str) or not isinstance(name, str):
            self.bad_messages += 1
            return []
        if call_id in self._seen:
            return []     # delivered once per call_id
        self._seen.add(call_id)
        self._calls[call_id] = (d, name)
        args = item.get("arguments")
        out: list[ModelEvent] = [ToolCall(call_id, name, args if isinstance(args, str) else "{}")]
        if self._item is None:
            # not during a reply: say nothing is playing, or a hangup would wait for a reply that never ends
            out.append(ResponseDone("completed", "tool_call"))
        return out

    def _usage(self, usage: Any) -> list[ModelEvent]:
        if not isinstance(usage, dict) or not isinstance(usage.get("seconds"), (int, float)) \
                or isinstance(usage["seconds"], bool):
            return []
        self._seconds = max(self._seconds, float(usage["seconds"]))   # cumulative: never added up
        seconds = max(0.0, self._seconds - self._counted)
        self._counted = self._seconds
        return [UsageUpdate({"live_seconds": seconds})] if seconds > 0 else []

    # --- time ------------------------------------------------------------------------------------------
    def deadline(self) -> float | None:
        """When `tick` has something to do (a burst or a transcript may end), or None. After `tick(now)` it is
        later than `now` (or None): the adapter waits for it."""
        times = [self._heard_at + BURST_GAP_S] if self._item is not None else []
        # the bot's text waits for its burst to end (then it goes at once): no deadline for it meanwhile
        times += [self._text_at[s] + TEXT_GAP_S for s in ("caller", "bot")
                  if self._texts[s] and (s == "caller" or self._item is None)]
        return min(times) if times else None

    def tick(self, now: float) -> list[ModelEvent]:
        out: list[ModelEvent] = []
        if self._item is not None and now >= self._heard_at + BURST_GAP_S:
            item, self._item = self._item, None
            self._held.clear()
            out.append(AudioDone(item))
            out += self._flush("bot", item)
            out.append(ResponseDone("completed", None))
        for side in ("caller", "bot"):
            if self._texts[side] and now >= self._text_at[side] + TEXT_GAP_S and \
                    (side == "caller" or self._item is None):
                out += self._flush(side)
        return out

    def _flush(self, side: str, item: str | None = None) -> list[ModelEvent]:
        text = "".join(self._texts[side]).strip()
        self._texts[side].clear()
        if not text:
            return []
        self.history.append(("user" if side == "caller" else "assistant", text))
        return [Transcript(side, text, item)]   # type: ignore[arg-type]

    def new_session(self) -> list[ModelEvent]:
        """Before a reconnect: the reply in progress is gone; its text and usage are kept."""
        out: list[ModelEvent] = []
        if self._item is not None:
            out.append(AudioDone(self._item))
            self._item = None
            self._held.clear()
        out += self._flush("caller") + self._flush("bot")
        self._seconds = self._counted = 0.0     # the next session counts from 0
        self._stale.update(self._calls)
        self._calls.clear()
        self._answered.clear()
        self._backend_done.clear()
        return out
