"""A protocol-faithful fake of OpenAI's GPT-Live WebSocket (`/v1/live/sessions`) on aiohttp.web.

Used by the tests (and usable as `voiceai-ari fake-live`). It follows ``shared/reference/openai-live.md``:
a Bearer key checked on the upgrade (HTTP 401 `invalid_api_key`); `session.start` first, validated strictly
(`schema.py`: unknown fields -> `error` `unknown_parameter` naming the param, then the socket closes);
`session.started` with id and expires_at; input audio through an energy VAD at the session's rate.

The input clock (§2.3): the session's timeline advances only with appended audio, so output is paced
against it: one ~100 ms `session.output_audio.delta` per 100 ms of input received, never ahead. A client
that stops streaming during silence hears its reply stall. Between replies the track goes on as silent
deltas (``silence_track``). Caller speech during a reply stops it (the model stops by itself; there is
no event for it). Transcripts for both sides come as deltas with `start_ms`/`end_ms`.

Tools (§2.8): a script entry's ``function_call(s)`` are asked for after its audio, as a Responses delegation:
`session.delegation.created`, then `response.event` envelopes (response.created, one
response.output_item.done per call, response.completed). `response.create` before every call of the
delegation has its `function_call_output` is refused (`error`); after it, the next script entry is spoken.

A ``script`` gives the replies in order: ``{"audio": "tone"|"echo"|"none", "tone_hz", "tone_seconds",
"transcript", "function_call": {"name", "args"}, "function_calls": [...]}``; after it, ``mode`` applies.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
from typing import Any

import pybase64
from aiohttp import WSMsgType, web

from .. import audio_gen
from ..serve import FakeServerBase
from ..vad import EnergyVad
from .schema import CLIENT_EVENTS, LiveError, check_append, check_session

log = logging.getLogger(__name__)

PATH = "/v1/live/sessions"
DELTA_MS = 100
_ids = itertools.count(1)


class FakeLiveSession:
    """One accepted connection. Tests read ``config``, ``received``, ``sent``, ``audio`` and ``tool_outputs``."""

    def __init__(self, server: FakeLiveServer, ws: web.WebSocketResponse, transport: Any, index: int) -> None:
        self.server, self._ws, self._transport = server, ws, transport
        self.id = f"live_fake{index}_{next(_ids)}"
        self.config: dict[str, Any] = {}
        self.rate = 24000
        self.received: list[dict] = []                # client messages; audio replaced by its byte count
        self.sent: list[dict] = []                    # server messages (+ "_at"); audio replaced by its byte count
        self.audio = bytearray()                      # caller audio at the session's rate
        self.tool_outputs: list[dict] = []
        self.responses: list[dict] = []               # {"status": "completed"|"cancelled"} per reply, as the other fakes
        self.stopped_at: list[float] = []             # loop times a reply stopped because the caller spoke
        self.closed = asyncio.Event()
        self._rng = random.Random(None if server.seed is None else server.seed + index)
        self._script = list(server.script)
        self._vad: EnergyVad | None = None
        self._utterance_start = 0
        self._last_utterance = b""
        self._replies: list[dict[str, Any]] = []      # queued replies; [0] is playing
        self._credit = 0                              # input bytes not yet matched by output
        self._calls: dict[str, dict[str, Any]] = {}   # delegation id -> {"pending": set, "answered": set, "next"}
        self._usage_at = 0

    # ---- test API -----------------------------------------------------------------------------------
    def received_of(self, kind: str) -> list[dict]:
        return [m for m in self.received if m.get("type") == kind]

    def sent_of(self, kind: str) -> list[dict]:
        return [m for m in self.sent if m.get("type") == kind]

    @property
    def input_ms(self) -> int:
        return len(self.audio) * 1000 // (2 * self.rate)

    def drop(self) -> None:
        """Abort the TCP connection with no close frame and no session.closed."""
        if self._transport is not None:
            self._transport.abort()

    async def end(self, reason: str = "expired") -> None:
        """session.closed {reason} (expired, content, connection_lost, ...), then close the socket."""
        await self._send({"type": "session.closed", "reason": reason, "usage": {"seconds": self.input_ms / 1000},
                          "session": {"id": self.id, "status": "closed"}})
        await self._ws.close()

    # ---- wire ---------------------------------------------------------------------------------------
    async def _send(self, msg: dict) -> None:
        if self._ws.closed:
            return
        try:
            await self._ws.send_str(json.dumps(msg))
        except (ConnectionError, RuntimeError):
            return
        if self.server.keep_history:   # audio replaced by its byte count; "_at": the loop time it went
            at = asyncio.get_running_loop().time()
            self.sent.append({**msg, "delta": len(msg["delta"]) * 3 // 4, "_at": at}
                             if msg["type"] == "session.output_audio.delta" else {**msg, "_at": at})

    async def run(self) -> None:
        try:
            first = await self._ws.receive(timeout=10.0)
            msg = _parse(first)
            if msg is None or msg.get("type") != "session.start":
                raise LiveError("invalid_request_error", "The first message must be session.start.")
            self._record(msg)
            self.config = check_session(msg.get("session"))
            fmt = (self.config.get("audio") or {}).get("format") or {"type": "audio/pcm", "rate": 24000}
            if fmt["type"] != "audio/pcm":     # fake's own limit: it speaks PCM only
                raise LiveError("unsupported_by_fake", "this fake speaks audio/pcm only", "session.audio.format.type")
            self.rate = fmt["rate"]
            self._vad = EnergyVad(threshold_dbfs=self.server.vad_threshold_dbfs, rate=self.rate,
                                  prefix_padding_ms=20, silence_duration_ms=self.server.silence_ms)
            await self._send({"type": "session.started", "client_event_id": msg.get("event_id"), "session": {
                **self.config, "id": self.id, "expires_at": int(time.time()) + 3600, "status": "active"}})
            async for frame in self._ws:
                m = _parse(frame)
                if m is None:
                    await self._send(LiveError("invalid_json", "The message could not be parsed.").event())
                    continue
                try:
                    await self._on_message(m)
                except LiveError as err:
                    await self._send(err.event(m.get("event_id")))
        except LiveError as err:     # a refused session.start: error, no session.started, closed
            await self._send(err.event())
            await self._ws.close()
        except asyncio.TimeoutError:
            await self._ws.close()
        finally:
            self.closed.set()

    def _record(self, m: dict) -> None:
        if self.server.keep_history:
            self.received.append({**m, "audio": len(str(m["audio"])) * 3 // 4}
                                 if m.get("type") == "session.input_audio.append" else m)

    async def _on_message(self, m: dict) -> None:
        kind = m.get("type")
        if kind != "session.input_audio.append":
            self._record(m)
        if kind not in CLIENT_EVENTS:
            raise LiveError("invalid_event_type", f"Unsupported event type {kind!r}; supported: "
                            + ", ".join(CLIENT_EVENTS) + ".", "type")
        if kind == "session.input_audio.append":
            await self._on_audio(m)
        elif kind in ("session.instructions.append", "session.commentary.append", "session.thinking.append"):
            check_append(m, responses_delegation=(self.config.get("delegation") or {}).get("type") == "responses")
            await self._send({"type": kind.replace(".append", ".appended"), "client_event_id": m.get("event_id")})
            if kind != "session.thinking.append":
                self._queue_reply()           # the model speaks to it (a greeting, an operator line)
        elif kind == "response.item.create":
            await self._on_item(m.get("item"))
        elif kind == "response.create":
            await self._on_response_create()
        elif kind == "session.close":
            await self.end("close_requested")
        elif kind == "session.start":
            raise LiveError("session_already_started", "session.start was already sent.")

    async def _on_audio(self, m: dict) -> None:
        try:
            pcm = pybase64.b64decode(m.get("audio") or "", validate=True)
        except (ValueError, TypeError):
            raise LiveError("invalid_value", "'audio' is not valid base64.", "audio") from None
        if len(pcm) % 2:
            raise LiveError("invalid_value", "'audio' must hold whole 16-bit samples.", "audio")
        self._record(m)
        self.audio += pcm
        assert self._vad is not None
        for kind, _ms in self._vad.feed(pcm):
            if kind == "start":
                self._utterance_start = len(self.audio) - len(pcm)
                if self._replies:               # talked over: the model stops by itself
                    self._replies.pop(0)
                    self.stopped_at.append(asyncio.get_running_loop().time())
                    self.responses.append({"status": "cancelled"})
            else:
                self._last_utterance = bytes(self.audio[self._utterance_start:])
                start_ms = self._utterance_start * 1000 // (2 * self.rate)
                await self._send({"type": "session.input_transcript.delta", "start_ms": start_ms,
                                  "end_ms": self.input_ms,
                                  "delta": f" (caller spoke {len(self._last_utterance) * 500 // self.rate} ms)"})
                self._queue_reply()
        await self._advance(len(pcm))
        if self.input_ms - self._usage_at >= self.server.usage_every_s * 1000:
            self._usage_at = self.input_ms
            await self._send({"type": "session.usage.updated", "usage": {"seconds": self.input_ms / 1000},
                              "context_window": {"usage_ratio": 0.01}})

    async def _advance(self, n: int) -> None:
        """The timeline moved by `n` input bytes: send the output due by now, ~100 ms at a time."""
        self._credit += n
        step = 2 * self.rate * DELTA_MS // 1000
        while self._credit >= step:
            self._credit -= step
            if self._replies:
                await self._play_step(self._replies[0], step)
            elif self.server.silence_track:
                await self._send({"type": "session.output_audio.delta", "delta": _b64(bytes(step))})

    async def _play_step(self, r: dict[str, Any], step: int) -> None:
        chunk, r["pos"] = r["pcm"][r["pos"]:r["pos"] + step], r["pos"] + step
        if chunk:
            await self._send({"type": "session.output_audio.delta", "delta": _b64(chunk)})
            if r["words"] and r["pos"] >= r["next_word"]:
                await self._send({"type": "session.output_transcript.delta", "delta": " " + r["words"].pop(0),
                                  "start_ms": self.input_ms - DELTA_MS, "end_ms": self.input_ms})
                r["next_word"] += max(step, len(r["pcm"]) // (len(r["words"]) + 1))
        if r["pos"] >= len(r["pcm"]):
            self._replies.pop(0)
            self.responses.append({"status": "completed"})
            if r["words"]:
                await self._send({"type": "session.output_transcript.delta", "delta": " " + " ".join(r["words"]),
                                  "start_ms": self.input_ms, "end_ms": self.input_ms})
            calls = r["entry"].get("function_calls") or ([r["entry"]["function_call"]]
                                                         if r["entry"].get("function_call") else [])
            if calls:
                await self._delegate(calls)

    # ---- replies and delegation ---------------------------------------------------------------------
    def _queue_reply(self) -> None:
        if self._replies:
            return                      # one reply at a time
        srv = self.server
        entry = self._script.pop(0) if self._script else {}
        what = entry.get("audio", srv.mode)
        if what == "tone":
            pcm = audio_gen.tone(entry.get("tone_hz", srv.tone_hz), entry.get("tone_seconds", srv.tone_seconds),
                                 self.rate, dbfs=-12.0, fade_ms=5)
        elif what == "echo" and self._last_utterance:
            pcm = self._last_utterance
        elif what == "echo":
            pcm = audio_gen.tone(srv.tone_hz, srv.tone_seconds, self.rate, dbfs=-12.0, fade_ms=5)
        else:
            pcm = b""
        words = (entry.get("transcript") or ("(echo)" if what == "echo" else "(tone)")).split()
        self._replies.append({"pcm": pcm, "pos": 0, "words": words, "next_word": 0, "entry": entry})

    async def _delegate(self, calls: list[dict[str, Any]]) -> None:
        did, rid = f"dlg_{next(_ids)}", f"resp_{next(_ids)}"
        await self._send({"type": "session.delegation.created", "offset_ms": self.input_ms, "delegation": {
            "id": did, "type": "delegation", "target": "responses", "response_id": rid}})
        await self._send({"type": "response.event", "delegation_id": did, "event": {
            "type": "response.created", "response": {"id": rid, "status": "in_progress", "output": []}}})
        pending = set()
        for call in calls:
            cid = f"call_{next(_ids)}{self._rng.randrange(10**6):06d}"
            pending.add(cid)
            await self._send({"type": "response.event", "delegation_id": did, "event": {
                "type": "response.output_item.done", "output_index": len(pending) - 1, "item": {
                    "type": "function_call", "id": f"fc_{next(_ids)}", "call_id": cid, "name": call["name"],
                    "arguments": json.dumps(call.get("args", call.get("arguments", {}))), "status": "completed"}}})
        await self._send({"type": "response.event", "delegation_id": did, "event": {
            "type": "response.completed", "response": {"id": rid, "status": "completed", "output": []}}})
        self._calls[did] = {"pending": pending, "answered": set()}

    async def _on_item(self, item: Any) -> None:
        if not isinstance(item, dict) or item.get("type") != "function_call_output":
            raise LiveError("invalid_value", "this fake takes function_call_output items only", "item.type")
        cid, output = item.get("call_id"), item.get("output")
        d = next((d for d in self._calls.values() if cid in d["pending"]), None)
        if d is None or not isinstance(output, str):
            raise LiveError("invalid_value", f"No pending function call with call_id {cid!r}.", "item.call_id")
        d["pending"].discard(cid)
        d["answered"].add(cid)
        self.tool_outputs.append(item)

    async def _on_response_create(self) -> None:
        """Continue the delegation whose batch is complete; a partial batch is refused."""
        partial = [did for did, d in self._calls.items() if d["pending"] and d["answered"]]
        if partial or not self._calls:
            # fake's own code: the reference says a partial batch is rejected, not with which code
            raise LiveError("incomplete_function_call_outputs", "Every pending function call of the delegation "
                            "needs a function_call_output before response.create.")
        done = [did for did, d in self._calls.items() if not d["pending"]]
        if not done:
            raise LiveError("incomplete_function_call_outputs", "No function_call_output was given.")
        for did in done:
            del self._calls[did]
        self._queue_reply()               # the voice model speaks the continuation


class FakeLiveServer(FakeServerBase):
    """The fake server. ``mode``: "tone" (sine at ``tone_hz`` for ``tone_seconds``, -12 dBFS) or "echo"
    (the caller's last utterance; the tone until there is one). ``api_key``: the key required (None: any
    non-empty key). ``silence_ms``: the VAD's end-of-turn silence. ``usage_every_s``: of input, between
    `session.usage.updated` events. ``silence_track``: silent deltas between replies."""

    def __init__(self, *, mode: str = "echo", tone_hz: float = 440.0, tone_seconds: float = 2.0,
                 host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                 vad_threshold_dbfs: float = -40.0, silence_ms: int = 500, usage_every_s: float = 5.0,
                 silence_track: bool = True, seed: int | None = None, script: list[dict] | None = None,
                 keep_history: bool = True) -> None:
        if mode not in ("tone", "echo"):
            raise ValueError(f"mode must be 'tone' or 'echo', not {mode!r}")
        self.mode, self.tone_hz, self.tone_seconds = mode, tone_hz, tone_seconds
        super().__init__()
        self.host, self.port, self.path, self.api_key, self.seed = host, port, PATH, api_key, seed
        self.vad_threshold_dbfs, self.silence_ms, self.usage_every_s = vad_threshold_dbfs, silence_ms, usage_every_s
        self.silence_track, self.keep_history = silence_track, keep_history
        self.script = [dict(e) for e in script or []]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        key = auth[7:] if auth.startswith("Bearer ") else ""
        if not key or (self.api_key is not None and key != self.api_key):
            return web.json_response({"error": {"type": "invalid_request_error", "code": "invalid_api_key",
                                                "message": "Incorrect API key provided.", "param": None}},
                                     status=401)
        ws = web.WebSocketResponse(compress=False, max_msg_size=16 * 2**20)
        transport = request.transport
        await ws.prepare(request)
        session = FakeLiveSession(self, ws, transport, len(self.sessions))
        await self._serve_session(session, session.run())
        return ws


def _parse(frame: Any) -> dict | None:
    if frame.type != WSMsgType.TEXT:
        return None
    try:
        m = json.loads(frame.data)
    except (ValueError, UnicodeDecodeError):
        return None
    return m if isinstance(m, dict) else None


def _b64(pcm: bytes) -> str:
    return pybase64.b64encode_as_string(pcm)
