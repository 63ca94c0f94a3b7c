"""A protocol-faithful fake of Google's Gemini Live API (BidiGenerateContent) on aiohttp.web.

Used by the tests (and usable as `voiceai-ari fake-gemini`). It follows ``shared/reference/gemini-live.md``
§12: `setup` first (camelCase or snake_case), validated, refused with the real close codes and reason texts;
`setupComplete`; every server message a binary frame of pretty-printed JSON; 16 kHz caller audio through an
energy VAD (the one the fake Realtime server uses) honouring `silenceDurationMs`; replies as `modelTurn`
audio chunks of uneven length sent faster than real time with `outputTranscription`, then
`generationComplete`, then, once the audio would have played, `turnComplete` + `usageMetadata` and a
`sessionResumptionUpdate`; barge-in as `interrupted` + `turnComplete` (+ `toolCallCancellation`);
function calls that wait for a `toolResponse` with the matching id; `goAway` then close; resumption with a
known handle; faults (1011 mid-turn, a dropped TCP connection, HTTP 429 on the upgrade).

A ``script`` gives the replies in order: ``{"audio": "tone"|"echo"|"none", "tone_hz", "tone_seconds",
"transcript", "function_call": {"name", "args"}}``; after it, ``mode`` ("tone" or "echo") applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
from typing import Any

import pybase64
from aiohttp import WSMsgType, web

from ...media.resample import StreamResampler
from .. import audio_gen
from ..serve import FakeServerBase
from ..vad import EnergyVad
from .setup import BAD_KEY, INVALID_ARGUMENT, SetupError, check_setup, normalise

log = logging.getLogger(__name__)

PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
OUT_RATE = 24000
TOKENS_PER_S = 32             # audio tokens per second of audio, both ways
_ids = itertools.count(1)


class FakeGeminiSession:
    """One accepted connection. Tests read ``setup``, ``received``, ``sent``, ``audio`` and ``tool_responses``."""

    def __init__(self, server: FakeGeminiServer, ws: web.WebSocketResponse, transport: Any, index: int) -> None:
        self.server, self._ws, self._transport = server, ws, transport
        self.setup: dict[str, Any] = {}
        self.resumed_from: str | None = None
        self.received: list[dict] = []                # client messages; audio data replaced by its length
        self.sent: list[tuple[float, dict]] = []      # (loop time, message); audio data replaced by its length
        self.audio = bytearray()                      # caller audio, 16 kHz PCM16 LE
        self.tool_responses: list[dict] = []
        self.responses: list[dict] = []               # {"status": "completed"|"cancelled"} per model turn
        self.closed = asyncio.Event()
        self._rng = random.Random(None if server.seed is None else server.seed + index)
        self._vad: EnergyVad | None = None
        self._utterance_start = 0
        self._last_utterance = b""
        self._reply: asyncio.Task[None] | None = None
        self._open_calls: dict[str, asyncio.Future[dict]] = {}
        self._script = list(server.script)
        self._send_lock = asyncio.Lock()

    # ---- test API -----------------------------------------------------------------------------------
    def received_of(self, key: str) -> list[dict]:
        return [m[key] for m in self.received if key in m]

    def sent_of(self, key: str) -> list[tuple[float, dict]]:
        return [(t, m[key]) for t, m in self.sent if key in m]

    def drop(self) -> None:
        """Abort the TCP connection with no close frame (the client sees 1006)."""
        if self._transport is not None:
            self._transport.abort()

    async def go_away(self, time_left_s: float = 0.5) -> None:
        """goAway{timeLeft}, then close 1000 once the time is up (as the ~10-minute limit does)."""
        await self._send({"goAway": {"timeLeft": f"{time_left_s:g}s"}})
        await asyncio.sleep(time_left_s)
        await self._ws.close(code=1000)

    async def fail(self) -> None:
        """Close 1011 "Internal error encountered." (mid-turn if a reply is playing)."""
        await self._ws.close(code=1011, message=b"Internal error encountered.")

    # ---- wire ---------------------------------------------------------------------------------------
    async def _send(self, msg: dict) -> None:
        if self._ws.closed:
            return
        data = json.dumps(msg, indent=2)
        async with self._send_lock:
            try:
                if self.server.text_frames:
                    await self._ws.send_str(data)
                else:
                    await self._ws.send_bytes(data.encode())
            except (ConnectionError, RuntimeError):
                return
            if self.server.keep_history:
                self.sent.append((asyncio.get_running_loop().time(), _summary(msg)))

    async def run(self, request: web.Request) -> None:
        try:
            first = await self._ws.receive(timeout=10.0)
            msg = _parse(first)
            if msg is None or set(msg) - {"setup"} or "setup" not in msg:
                raise SetupError(1007, INVALID_ARGUMENT)
            self.setup = check_setup(msg["setup"])
            handle = (self.setup.get("sessionResumption") or {}).get("handle")
            if handle:
                if handle not in self.server.handles:
                    raise SetupError(1007, INVALID_ARGUMENT)
                self.resumed_from = handle
                self._last_utterance = self.server.handles[handle]
            self._configure_vad()
            await self._send({"setupComplete": {}})
            async for frame in self._ws:
                m = _parse(frame)
                if m is None:
                    raise SetupError(1007, INVALID_ARGUMENT)
                await self._on_message(m)
        except SetupError as err:
            await self._ws.close(code=err.code, message=err.reason.encode()[:123])
        except asyncio.TimeoutError:
            await self._ws.close(code=1007, message=INVALID_ARGUMENT.encode())
        finally:
            if self._reply is not None:
                self._reply.cancel()
            self.closed.set()

    def _configure_vad(self) -> None:
        aad = (self.setup.get("realtimeInputConfig") or {}).get("automaticActivityDetection") or {}
        if aad.get("disabled"):
            return
        self._vad = EnergyVad(threshold_dbfs=self.server.vad_threshold_dbfs, rate=16000,
                              prefix_padding_ms=int(aad.get("prefixPaddingMs", 20)),
                              silence_duration_ms=int(aad.get("silenceDurationMs", 500)))

    async def _on_message(self, m: dict) -> None:
        if len(m) != 1:
            raise SetupError(1007, INVALID_ARGUMENT)   # one top-level key per client message
        key, body = next(iter(m.items()))
        body = normalise(body)
        record = {key: {**body, "audio": {"bytes": len(str((body.get("audio") or {}).get("data", ""))) * 3 // 4}}
                  if key == "realtimeInput" and "audio" in body else body}
        if self.server.keep_history:
            self.received.append(record)
        if key == "realtimeInput":
            await self._on_realtime_input(body)
        elif key == "clientContent":
            if body.get("turnComplete", True):
                await self._interrupt()          # a complete text turn interrupts the reply (§4)
                self._start_reply()
        elif key == "toolResponse":
            for fr in body.get("functionResponses") or []:
                fut = self._open_calls.pop(str(fr.get("id")), None)
                if fut is not None and not fut.done():   # no id or an unknown id: ignored (§12)
                    self.tool_responses.append(fr)
                    fut.set_result(fr)
        elif key != "setup":
            raise SetupError(1007, INVALID_ARGUMENT)

    async def _on_realtime_input(self, body: dict) -> None:
        audio = body.get("audio")
        if isinstance(audio, dict):
            mime = str(audio.get("mimeType", ""))
            if not mime.startswith("audio/pcm") or "rate=16000" not in mime.replace(" ", ""):
                raise SetupError(1007, INVALID_ARGUMENT)   # this fake only takes what we send: 16 kHz
            pcm = _b64(audio.get("data"))
            self.audio += pcm
            for kind, _ms in self._vad.feed(pcm) if self._vad is not None else []:
                if kind == "start":
                    self._utterance_start = len(self.audio) - len(pcm)
                    await self._interrupt()
                else:
                    self._last_utterance = bytes(self.audio[self._utterance_start:])
                    ms = len(self._last_utterance) // 32
                    await self._send({"serverContent": {"inputTranscription": {"text": f" (caller spoke {ms} ms)"}}})
                    self._start_reply()
        elif "text" in body:
            self._start_reply()

    # ---- replies ------------------------------------------------------------------------------------
    def _start_reply(self) -> None:
        if self._reply is None or self._reply.done():
            self._reply = asyncio.ensure_future(self._run_reply())

    async def _interrupt(self) -> None:
        """Caller speech (or a text turn) during a reply: stop, interrupted, turnComplete (§6.3, §7)."""
        if self._reply is None or self._reply.done():
            return
        self._reply.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reply
        pending = list(self._open_calls)
        for cid in pending:
            self._open_calls.pop(cid).cancel()
        if pending:
            await self._send({"toolCallCancellation": {"ids": pending}})
        await self._send({"serverContent": {"interrupted": True}})
        await self._send({"serverContent": {"turnComplete": True}})
        self.responses.append({"status": "cancelled"})

    async def _run_reply(self) -> None:
        srv = self.server
        await asyncio.sleep(srv.response_delay_s)
        while True:
            entry = self._script.pop(0) if self._script else {}
            what = entry.get("audio", srv.mode)
            if what == "tone":
                pcm = audio_gen.tone(entry.get("tone_hz", srv.tone_hz), entry.get("tone_seconds", srv.tone_seconds),
                                     OUT_RATE, dbfs=-12.0, fade_ms=5)
            elif what == "echo" and self._last_utterance:
                pcm = StreamResampler(16000, OUT_RATE).process(self._last_utterance)
            elif what == "echo":
                pcm = srv.tone_pcm
            else:
                pcm = b""
            await self._play(pcm, entry.get("transcript") or ("(echo)" if what == "echo" else "(tone)"))
            call = entry.get("function_call")
            if not call:
                break
            cid = f"function-call-{next(_ids)}{self._rng.randrange(10**6):06d}"
            fut: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
            self._open_calls[cid] = fut
            await self._send({"sessionResumptionUpdate": {"resumable": False}})
            args = call.get("args", call.get("arguments", {}))   # the Realtime fake's scripts say "arguments"
            await self._send({"toolCall": {"functionCalls": [{"id": cid, "name": call["name"], "args": args}]}})
            await fut                      # the model waits for the result, then goes on by itself (§8)
        await self._send({"sessionResumptionUpdate": {"newHandle": self._new_handle(), "resumable": True}})

    async def _play(self, pcm: bytes, transcript: str) -> None:
        """modelTurn chunks of 120-280 ms, `speed` times faster than real time; turnComplete after playback."""
        loop = asyncio.get_running_loop()
        t0, sent_ms = loop.time(), 0
        words = transcript.split()
        await self._send({"serverContent": {"outputTranscription": {"text": words.pop(0) if words else ""}}})
        i = 0
        while i < len(pcm):
            n = self._rng.randrange(120, 281) * OUT_RATE // 1000 * 2
            chunk, i = pcm[i:i + n], i + n
            await self._send({"serverContent": {"modelTurn": {"role": "model", "parts": [{"inlineData": {
                "mimeType": f"audio/pcm;rate={OUT_RATE}", "data": _b64enc(chunk)}}]}}})
            if words:
                await self._send({"serverContent": {"outputTranscription": {"text": " " + words.pop(0)}}})
            sent_ms += len(chunk) // 48
            await asyncio.sleep(max(0.0, t0 + sent_ms / 1000 / self.server.speed - loop.time()))
        if words:
            await self._send({"serverContent": {"outputTranscription": {"text": " " + " ".join(words)}}})
        await self._send({"serverContent": {"generationComplete": True}})
        await asyncio.sleep(max(0.0, t0 + sent_ms / 1000 - loop.time()))   # the server waits for playback
        prompt = len(self.audio) // 32000 * TOKENS_PER_S + 20
        out = sent_ms * TOKENS_PER_S // 1000
        await self._send({"serverContent": {"turnComplete": True}, "usageMetadata": {
            "promptTokenCount": prompt, "responseTokenCount": out, "totalTokenCount": prompt + out,
            "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": prompt - 20},
                                    {"modality": "TEXT", "tokenCount": 20}],
            "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": out}]}})
        self.responses.append({"status": "completed"})

    def _new_handle(self) -> str:
        handle = f"fake-resume-{next(_ids)}-{self._rng.randrange(10**9)}"
        self.server.handles[handle] = self._last_utterance
        return handle


class FakeGeminiServer(FakeServerBase):
    """The fake server. ``mode``: "tone" (sine at ``tone_hz`` for ``tone_seconds``, -12 dBFS) or "echo"
    (the caller's last utterance; the tone until there is one). A script's function call takes its arguments
    as "args" (or "arguments", as the Realtime fake's scripts say). ``speed``: how much faster than real time
    audio is sent. ``api_key``: the key required (None: any non-empty key). ``reject_upgrade``: answer every
    upgrade with HTTP 429 (over quota). ``text_frames``: send text frames instead of binary ones."""

    def __init__(self, *, mode: str = "echo", tone_hz: float = 440.0, tone_seconds: float = 2.0,
                 host: str = "127.0.0.1", port: int = 0, speed: float = 4.0, api_key: str | None = None,
                 vad_threshold_dbfs: float = -40.0, response_delay_s: float = 0.0, seed: int | None = None,
                 script: list[dict] | None = None, reject_upgrade: bool = False, text_frames: bool = False,
                 keep_history: bool = True) -> None:
        if mode not in ("tone", "echo"):
            raise ValueError(f"mode must be 'tone' or 'echo', not {mode!r}")
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.mode, self.tone_hz, self.tone_seconds, self.speed = mode, tone_hz, tone_seconds, speed
        super().__init__()
        self.host, self.port, self.path, self.api_key, self.seed = host, port, PATH, api_key, seed
        self.vad_threshold_dbfs, self.response_delay_s = vad_threshold_dbfs, response_delay_s
        self.script = [dict(e) for e in script or []]
        self.reject_upgrade, self.text_frames, self.keep_history = reject_upgrade, text_frames, keep_history
        self.tone_pcm = audio_gen.tone(tone_hz, tone_seconds, OUT_RATE, dbfs=-12.0, fade_ms=5)
        self.handles: dict[str, bytes] = {}    # resumption handle -> the session's last utterance

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.reject_upgrade:
            return web.json_response({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                                                "message": "Resource has been exhausted (e.g. check quota)."}},
                                     status=429)
        key = request.headers.get("x-goog-api-key") or request.query.get("key", "")
        ws = web.WebSocketResponse(compress=False, max_msg_size=16 * 2**20)
        transport = request.transport
        await ws.prepare(request)
        if not key or (self.api_key is not None and key != self.api_key):
            await ws.close(code=1007, message=BAD_KEY.encode())
            return ws
        session = FakeGeminiSession(self, ws, transport, len(self.sessions))
        await self._serve_session(session, session.run(request))
        return ws


def _parse(frame: Any) -> dict | None:
    if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        return None
    try:
        m = json.loads(frame.data)
    except (ValueError, UnicodeDecodeError):
        return None
    return m if isinstance(m, dict) else None


def _b64(data: Any) -> bytes:
    try:
        return pybase64.b64decode(data or "", validate=True)
    except (ValueError, TypeError):
        raise SetupError(1007, INVALID_ARGUMENT) from None


def _b64enc(pcm: bytes) -> str:
    return pybase64.b64encode_as_string(pcm)


def _summary(msg: dict) -> dict:
    """A sent message with its audio replaced by the byte count (history stays small)."""
    parts = ((msg.get("serverContent") or {}).get("modelTurn") or {}).get("parts")
    if not parts:
        return msg
    data = [p["inlineData"]["data"] for p in parts]
    return {"serverContent": {"modelTurn": {"audio_bytes": sum(len(d) * 3 // 4 - d.count("=") for d in data)}}}
