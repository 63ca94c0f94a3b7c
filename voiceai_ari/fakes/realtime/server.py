"""A protocol-faithful fake of the OpenAI Realtime API (GA) on aiohttp.web: the tests' model and the
offline demo. It speaks part A of the reference: ``session.created`` first, validated client events with
real-looking ``error`` events (``schema.py``), an energy VAD with ``idle_timeout_ms`` (``input.py``),
responses in the A.7.1 event order whose audio is a tone, an echo or a WAV file, streamed in uneven chunks
faster than real time, barge-in, cancel, truncate, scripted audio and function calls, failing responses
(``conversation.py``), and hooks to drop or expire a session. Every event sent is logged with its loop time.

CLI: ``python -m voiceai_ari.fakes.realtime.server --port 8765 --mode tone`` (also ``voiceai-ari fake-realtime``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import contextlib
import copy
import json
import logging
import random
import sys

from aiohttp import WSMsgType, web

from .. import audio_gen
from .conversation import RATE, ConversationMixin, _Response
from .input import InputAudioMixin
from .schema import (
    CLIENT_EVENTS,
    SERVER_ERROR_MESSAGE,
    RealtimeError,
    bad_type,
    bad_value,
    check_script,
    default_session,
    merge_session,
    need,
    new_id,
)
from ..serve import serve_until_signal
from ..vad import EnergyVad

log = logging.getLogger(__name__)

class FakeSession(InputAudioMixin, ConversationMixin):
    """One accepted WebSocket. Tests read ``config``, ``received``, ``sent``, ``audio`` and ``responses``."""

    def __init__(self, server: FakeRealtimeServer, ws: web.WebSocketResponse, transport, model: str,
                 index: int) -> None:
        self.server, self._ws, self._transport = server, ws, transport
        self.id = new_id("sess")
        self.config: dict = default_session(model, self.id)
        self.conversation_id = new_id("conv")
        self.received: list[dict] = []  # append events keep "audio_bytes" instead of "audio"
        # (loop.time() at send, event) for every event sent, in wire order; audio deltas keep "audio_bytes"
        # instead of "delta"
        self.sent: list[tuple[float, dict]] = []
        self.append_count = 0
        self.audio = bytearray()  # all appended input audio, 24 kHz PCM16 LE
        self.responses: list[dict] = []  # the response objects of every response.done sent
        self.closed = asyncio.Event()
        self._items: dict[str, dict] = {}  # conversation, in order
        self._item_audio_ms: dict[str, float] = {}  # assistant item id -> audio ms sent (or truncated to)
        self._buf_start = 0  # byte offset of the uncommitted input buffer in self.audio
        self._speech: tuple[str, int] | None = None  # (item_id, audio_start_ms) of the turn in progress
        self._last_utterance: bytes | None = None
        self._active: _Response | None = None
        self._audio_produced = False
        self._rng = random.Random(None if server.seed is None else server.seed + index)
        self._changed = asyncio.Event()
        self._seen: dict[str, int] = {}
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._vad: EnergyVad | None = None
        self._script = list(server.script)  # entries not yet used by a response of this session
        self._failures = list(server.fail_responses)  # error codes for this session's next responses
        self._idle_from_ms: float | None = 0.0  # input audio time from which silence counts (idle_timeout_ms)
        self._configure_vad()

    # ---- test API -------------------------------------------------------------------------------
    def events_of(self, type_: str) -> list[dict]:
        return [e for e in self.received if e.get("type") == type_]

    def sent_of(self, type_: str) -> list[tuple[float, dict]]:
        """``(loop time, event)`` of every sent event of ``type_``, in order."""
        return [(t, e) for t, e in self.sent if e["type"] == type_]

    async def wait_for(self, type_: str, timeout: float = 5.0) -> dict:
        """The next client event of ``type_`` not yet returned by an earlier ``wait_for(type_)``
        (already-received events count, so there is no race with the sender)."""
        async with asyncio.timeout(timeout):
            while True:
                evs, idx = self.events_of(type_), self._seen.get(type_, 0)
                if len(evs) > idx:
                    self._seen[type_] = idx + 1
                    return evs[idx]
                await self._changed.wait()

    def drop(self) -> asyncio.Future:
        """Abort the TCP connection with no close frame (client sees 1006). Returns a finished future,
        so both ``session.drop()`` and ``await session.drop()`` work."""
        if self._transport is not None:
            self._transport.abort()
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def expire(self) -> asyncio.Task:
        """Send ``session_expired`` and close 1000. Runs as a task; await it to wait for the close."""
        task = asyncio.ensure_future(self._expire())  # not in _tasks: the session end must not cancel it
        self.server._keep.add(task)
        task.add_done_callback(self.server._keep.discard)
        return task

    # ---- plumbing -------------------------------------------------------------------------------
    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _expire(self) -> None:
        await self._error(RealtimeError("session_expired", "Your session hit the maximum duration of 60 minutes."))
        await self._ws.close(code=1000)

    async def _send(self, type_: str, **fields) -> None:
        if self._ws.closed:
            return
        event = {"type": type_, "event_id": new_id("event"), **fields}
        data = json.dumps(event)
        if type_ == "response.output_audio.delta":
            b64 = event.pop("delta")
            event["audio_bytes"] = len(b64) * 3 // 4 - (len(b64) - len(b64.rstrip("=")))
        async with self._send_lock:
            t = asyncio.get_running_loop().time()
            try:
                await self._ws.send_str(data)
            except (ConnectionError, RuntimeError):  # peer gone; the receive loop notices
                return
            if self.server.keep_history:
                self.sent.append((t, event))

    async def _error(self, err: RealtimeError, client_event_id: str | None = None) -> None:
        await self._send("error", error=err.body(client_event_id))

    async def _run(self) -> None:
        timer = None
        try:
            await self._send("session.created", session=copy.deepcopy(self.config))
            await self._send("conversation.created",
                             conversation={"id": self.conversation_id, "object": "realtime.conversation"})
            if self.server.max_session_s is not None:
                timer = asyncio.get_running_loop().call_later(self.server.max_session_s, self.expire)
            async for msg in self._ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._error(RealtimeError("invalid_event", "Expected a text WebSocket message; "
                                                    "binary frames are not supported."))
                else:
                    break
        finally:
            if timer is not None:
                timer.cancel()
            if self._active is not None and self._active.task is not None:
                self._active.task.cancel()
            for task in list(self._tasks):
                if not task.done() and task is not asyncio.current_task():
                    task.cancel()
            self.closed.set()

    async def _on_text(self, data: str) -> None:
        try:
            event = json.loads(data)
        except ValueError as exc:
            return await self._error(RealtimeError("invalid_json", f"Invalid event: failed to parse JSON value. {exc}"))
        if not isinstance(event, dict):
            return await self._error(bad_type("event", "an object", event))
        record = event
        if event.get("type") == "input_audio_buffer.append":
            record = {k: v for k, v in event.items() if k != "audio"}
            self.append_count += 1
        if self.server.keep_history:
            self.received.append(record)
        self._changed.set()
        self._changed = asyncio.Event()
        eid = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        try:
            await self._dispatch(event, record)
        except RealtimeError as err:
            await self._error(err, eid)
        except Exception:  # never let one bad event kill the session or the server
            log.exception("fake-realtime %s: error handling %s", self.id, event.get("type"))
            await self._error(RealtimeError(None, SERVER_ERROR_MESSAGE, type_="server_error"), eid)

    async def _dispatch(self, ev: dict, record: dict) -> None:
        type_ = need(ev, "type", "", str, "a string")
        if type_ not in CLIENT_EVENTS:
            raise bad_value("type", type_, CLIENT_EVENTS)
        handler = getattr(self, "_on_" + type_.replace(".", "_"))
        await (handler(ev, record) if type_ == "input_audio_buffer.append" else handler(ev))


class FakeRealtimeServer:
    """The fake server. ``mode``: "tone" (sine at ``tone_hz`` for ``tone_seconds``, -12 dBFS), "echo"
    (the caller's last committed utterance; the tone until there is one) or "wav" (a 24 kHz mono
    16-bit file). ``speed``: audio is sent this many times faster than real time.
    ``vad_threshold_dbfs``: energy threshold matching the session's ``threshold`` 0.5.
    ``max_session_s``: expire sessions after this long (None: never). ``reject_after_upgrade``: fail
    auth like the live API (101, then ``error`` + close 3000) instead of HTTP 401, and a missing
    ``model`` with ``missing_model`` + close 4000 instead of defaulting to gpt-realtime.

    ``script``: one entry per response, used in order by each session's responses (whether VAD or
    ``response.create`` starts them); once a session has used them all, ``mode`` applies again.
    An entry (every key optional) is ``{"audio": "tone"|"echo"|"none", "tone_hz", "tone_seconds",
    "transcript", "text", "function_call": {"name", "arguments": dict|str}}``: no "audio" means
    ``mode``'s audio; "none" means no assistant message unless "text" is given (then a text message);
    "text" is also the message text of a text-modality response (default: the transcript). A
    ``function_call`` adds a function_call item after the message (A.9). ``fail_responses``: error codes
    (``insufficient_quota``, ``rate_limit_exceeded``, ``server_error``) each session's first responses fail
    with, in order: ``response.created``, then ``response.done`` status ``failed`` with
    ``status_details.error {type, code}``. ``tone_from_instructions``: in tone mode, a response whose
    instructions (its own, else the session's) hold "[tone N Hz]" is a tone of N Hz (tests tell agents apart
    by what the caller hears)."""

    def __init__(self, *, mode: str = "echo", tone_hz: float = 440.0, tone_seconds: float = 2.0,
                 wav_path: str | None = None, host: str = "127.0.0.1", port: int = 0, speed: float = 4.0,
                 api_key: str | None = None, vad_threshold_dbfs: float = -40.0, response_delay_s: float = 0.0,
                 seed: int | None = None, max_session_s: float | None = None,
                 reject_after_upgrade: bool = False, script: list[dict] | None = None,
                 keep_history: bool = True, fail_responses: list[str] | None = None,
                 tone_from_instructions: bool = False) -> None:
        if mode not in ("tone", "echo", "wav"):
            raise ValueError(f"mode must be 'tone', 'echo' or 'wav', not {mode!r}")
        if mode == "wav" and not wav_path:
            raise ValueError("mode 'wav' needs wav_path")
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.mode, self.tone_hz, self.tone_seconds, self.wav_path = mode, tone_hz, tone_seconds, wav_path
        self.host, self.port, self.speed, self.api_key = host, port, speed, api_key
        self.vad_threshold_dbfs, self.response_delay_s, self.seed = vad_threshold_dbfs, response_delay_s, seed
        self.max_session_s, self.reject_after_upgrade = max_session_s, reject_after_upgrade
        self.script = check_script(script)  # ValueError on a malformed entry
        self.fail_responses = list(fail_responses or [])
        self.tone_from_instructions = tone_from_instructions
        # tests read sessions, received and sent events; the embedded demo model keeps none of it
        self.keep_history = keep_history
        self.client_secrets: dict[str, tuple[float, dict]] = {}  # ek_ value -> (expires_at, session)
        self.url = ""
        self.sessions: list[FakeSession] = []
        self.tone_pcm = audio_gen.tone(tone_hz, tone_seconds, RATE, dbfs=-12.0, fade_ms=5)
        self.wav_pcm = b""
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()
        self._keep: set[asyncio.Task] = set()

    async def start(self) -> str:
        """Bind and serve; returns the WebSocket base URL ("ws://host:port/v1/realtime")."""
        if self.mode == "wav":
            self.wav_pcm = audio_gen.read_wav_24k_mono(self.wav_path)  # ValueError on other formats
        app = web.Application()
        app.router.add_get("/v1/realtime", self._handle)
        app.router.add_post("/v1/realtime/client_secrets", self._client_secret)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.port = port
        self.url = f"ws://{'[' + host + ']' if ':' in host else host}:{port}/v1/realtime"
        log.info("fake-realtime: listening on %s (mode %s, speed %gx)", self.url, self.mode, self.speed)
        return self.url

    async def stop(self) -> None:
        """Close every session (1001) and stop listening. Safe to call twice."""
        for s in self.sessions:
            if not s._ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(s._ws.close(code=1001, message=b"server shutting down"), 2.0)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def wait_for_session(self, n: int = 1, timeout: float = 5.0) -> FakeSession:
        """Wait until ``n`` sessions have been accepted; return the n-th (1-based)."""
        async with asyncio.timeout(timeout):
            while len(self.sessions) < n:
                await self._changed.wait()
        return self.sessions[n - 1]

    async def _client_secret(self, request: web.Request) -> web.Response:
        """POST /v1/realtime/client_secrets (A.3): an ephemeral ek_ key with the session config burned in."""
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not token or (self.api_key is not None and token != self.api_key) or token.startswith("ek_"):
            return web.json_response({"error": {"type": "invalid_request_error", "code": "invalid_api_key",
                                                "message": "Incorrect API key provided."}}, status=401)
        try:
            body = await request.json()
            seconds = int(body.get("expires_after", {}).get("seconds", 600))
            if not 10 <= seconds <= 7200:
                raise ValueError("expires_after.seconds must be between 10 and 7200")
            config = merge_session(default_session("gpt-realtime", new_id("sess")), body.get("session", {}),
                                   audio_produced=False)
        except (ValueError, AttributeError, RealtimeError) as exc:
            msg = exc.message if isinstance(exc, RealtimeError) else str(exc)
            return web.json_response({"error": {"type": "invalid_request_error", "code": "invalid_value",
                                                "message": msg}}, status=400)
        value = "ek_" + new_id("x")[2:]
        expires_at = int(time.time()) + seconds
        self.client_secrets[value] = (expires_at, config)
        return web.json_response({"value": value, "expires_at": expires_at, "session": config})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        auth_err = None
        secret = self.client_secrets.get(token) if token.startswith("ek_") else None
        if not token:
            auth_err = RealtimeError(None, "Missing bearer or basic authentication in header")
        elif token.startswith("ek_"):
            if secret is None or secret[0] <= time.time():
                auth_err = RealtimeError("invalid_api_key", "Ephemeral key expired or unknown.")
        elif self.api_key is not None and token != self.api_key:
            auth_err = RealtimeError("invalid_api_key", f"Incorrect API key provided: {token[:8]}***. You can "
                                     "find your API key at https://platform.openai.com/account/api-keys.")
        if auth_err is not None and not self.reject_after_upgrade:
            body = {k: v for k, v in auth_err.body(None).items() if k != "event_id"}
            return web.json_response({"error": body}, status=401)
        ws = web.WebSocketResponse(compress=False, heartbeat=20.0, max_msg_size=32 * 1024 * 1024)
        transport = request.transport
        await ws.prepare(request)
        model = request.query.get("model")
        session = FakeSession(self, ws, transport, model or "gpt-realtime", len(self.sessions))
        if secret is not None:   # an ephemeral key carries its session configuration
            session.config = {**secret[1], "id": session.id}
            session._configure_vad()
        self.sessions.append(session)
        self._changed.set()
        self._changed = asyncio.Event()
        fatal = None
        if auth_err is not None:
            fatal = (auth_err, 3000)
        elif "OpenAI-Beta" in request.headers:
            fatal = (RealtimeError("beta_api_shape_disabled", "The Realtime Beta API is no longer supported. "
                                   "Please use /v1/realtime for the GA API."), 4000)
        elif not model and self.reject_after_upgrade:
            fatal = (RealtimeError("missing_model", "You must provide a model parameter, for example "
                                   "wss://api.openai.com/v1/realtime?model=gpt-realtime"), 4000)
        try:
            if fatal is None:
                await session._run()
            else:
                err, code = fatal
                await session._error(err)
                reason = err.type + ("." + err.code if err.code else "")
                await ws.close(code=code, message=reason.encode())
        except Exception:
            log.exception("fake-realtime %s: session crashed", session.id)
        finally:
            session.closed.set()
            if not self.keep_history:  # a long-running demo server must not grow with every call
                self.sessions.remove(session)
        return ws


def main(argv: list[str] | None = None) -> int:
    """``voiceai-ari fake-realtime`` / ``python -m voiceai_ari.fakes.realtime.server``: serve until SIGINT/SIGTERM."""
    ap = argparse.ArgumentParser(prog="voiceai-ari fake-realtime", description="Fake OpenAI Realtime (GA) server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    ap.add_argument("--mode", choices=("tone", "echo", "wav"), default="echo")
    ap.add_argument("--tone-hz", type=float, default=440.0)
    ap.add_argument("--tone-seconds", type=float, default=2.0)
    ap.add_argument("--wav", dest="wav_path", help="24 kHz mono 16-bit WAV for --mode wav")
    ap.add_argument("--speed", type=float, default=4.0, help="times faster than real time (default 4)")
    ap.add_argument("--api-key", help="require this bearer token (default: any)")
    ap.add_argument("--vad-threshold-dbfs", type=float, default=-40.0)
    ap.add_argument("--response-delay", dest="response_delay_s", type=float, default=0.0)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--log-level", default="INFO")
    args = vars(ap.parse_args(argv))
    logging.basicConfig(level=args.pop("log_level").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args["mode"] == "wav" and not args["wav_path"]:
        ap.error("--mode wav needs --wav FILE")
    try:
        return asyncio.run(serve_until_signal(FakeRealtimeServer(**args)))
    except (ValueError, OSError) as exc:  # bad or missing WAV file, port in use, ...
        print(f"fake-realtime: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
