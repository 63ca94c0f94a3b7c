"""Control API: see and steer live calls, scrape metrics, probe health. aiohttp, JSON, bearer token.

Bound to loopback by default; a non-loopback address needs VOICEAI_CONTROL_TOKEN (config refuses to start
without one). With a token, every route but /healthz, /readyz and /openapi.json needs `Authorization: Bearer <token>`.

Loopback is not a boundary against the operator's own web browser: any page it opens can send requests to
127.0.0.1, and a DNS name rebound to 127.0.0.1 even reads the answers. So, token or not, every route but those
three is refused (403) when its `Host` is not a loopback address or `localhost` with the API's port or a name of
VOICEAI_CONTROL_ALLOWED_HOSTS, or when it carries an `Origin` that is not one of those (`null` included); and a
POST must be `application/json` (415), which a page can only send after a CORS preflight this API never grants.
Outbound calls (POST /calls) go only to named VOICEAI_ORIGINATE_TARGETS, never to a dial string the request
chooses (toll fraud through a trunk), at most VOICEAI_ORIGINATE_PER_MINUTE a minute (429), and a ringing call
holds one of VOICEAI_MAX_CALLS until it is answered or given up.
The OpenAPI document is served at /openapi.json and the tests run schemathesis against it.
The dashboard (operate/dashboard.py) adds /dashboard/: its static page needs no token (it holds no data), its
/dashboard/api/* routes are guarded like the rest.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..ari import AriError, AriUnavailable
from ..call.tools import TransferDestination, TransferFailed, TransferNotPossible
from ..config import originate_endpoint
from .dashboard import Dashboard, is_page

if TYPE_CHECKING:
    from ..call.app import VoiceAiApp
    from ..call.call import Call

log = logging.getLogger("voiceai.control")
OPEN_PATHS = {"/healthz", "/readyz", "/openapi.json"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
RING_GRACE_S = 30.0   # a ringing outbound call holds its slot this long past its timeout if no event frees it


# strict: a JSON value must have the schema's type (no true for 1, no "30" for 30), as the OpenAPI document says
BODY_CONFIG = ConfigDict(extra="forbid", strict=True)


class TransferBody(BaseModel):
    model_config = BODY_CONFIG
    target: str = Field(min_length=1, max_length=64)


class TextBody(BaseModel):
    model_config = BODY_CONFIG
    text: str = Field(min_length=1, max_length=4000)


class OriginateBody(BaseModel):
    model_config = BODY_CONFIG
    target: str = Field(min_length=1, max_length=64, description="a name of VOICEAI_ORIGINATE_TARGETS")
    caller_id: str = Field("voiceai", max_length=80)
    timeout_s: int = Field(30, ge=1, le=300, description="seconds to ring before giving up")

    @model_validator(mode="before")
    @classmethod
    def _no_dial_strings(cls, data: Any) -> Any:
        if isinstance(data, dict) and "endpoint" in data:
            raise ValueError("free dial strings are refused: name a target of VOICEAI_ORIGINATE_TARGETS")
        return data


class EmptyBody(BaseModel):
    model_config = BODY_CONFIG


def call_summary(call: Call) -> dict[str, Any]:
    return {"id": call.id, "caller": {"name": call.channel.caller.name, "number": call.channel.caller.number},
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(call.started)),
            "duration_s": round(time.time() - call.started, 1), "state": call.state, "agent": call.agent}


def call_detail(call: Call) -> dict[str, Any]:
    stats = call.media.stats()
    return {**call_summary(call), "codec": stats.get("codec"), "rtp": stats,
            "model_session_id": getattr(call.model, "session_id", None), "setup_ms": call.setup_ms,
            "usage": call.usage, "cost_usd": round(call.cost_usd, 6),
            "transcript": list(call.transcript.recent)}


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class PeerCheck:
    """Which `Host` and `Origin` headers the API answers: loopback addresses, `localhost` and the bind address
    with the API's own port, and the configured names with any port (a reverse proxy's). Pure: no I/O."""

    def __init__(self, port: int, bind_host: str, names: Iterable[str]) -> None:
        self.port = port
        self._names = {n.lower() for n in names}
        try:
            unspecified = ipaddress.ip_address(bind_host).is_unspecified
        except ValueError:
            unspecified = False
        self._bind = "" if unspecified else bind_host.lower().strip("[]")

    def _allowed(self, host: str | None, port: int) -> bool:
        if not host:
            return False
        if host in self._names:
            return True
        if port != self.port:
            return False
        if host in ("localhost", self._bind):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def refusal(self, host: str | None, origin: str | None) -> str | None:
        """Why a request with these headers is refused, or None. A missing Host is no browser's request."""
        if host is not None:
            try:
                u = urlsplit("//" + host)
                ok = u.netloc == host and not u.username and self._allowed(u.hostname, u.port or 80)
            except ValueError:
                ok = False
            if not ok:
                return "Host not accepted (a loopback address or localhost with the API port, or " \
                       "VOICEAI_CONTROL_ALLOWED_HOSTS)"
        if origin is not None:
            try:
                u = urlsplit(origin)
                ok = (u.scheme in ("http", "https") and not u.path and not u.username
                      and self._allowed(u.hostname, u.port or (443 if u.scheme == "https" else 80)))
            except ValueError:
                ok = False
            if not ok:
                return "cross-origin request refused (Origin is not this API's)"
        return None


class RateLimit:
    """At most `n` events in any 60 s (sliding window)."""

    def __init__(self, n: int, window_s: float = 60.0) -> None:
        self.n, self.window_s = n, window_s
        self._times: deque[float] = deque()

    def take(self, now: float) -> float:
        """Record an event and return 0, or return the seconds until one is allowed (nothing recorded)."""
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        if len(self._times) >= self.n:
            return self._times[0] + self.window_s - now
        self._times.append(now)
        return 0.0


class ControlApi:
    def __init__(self, app: VoiceAiApp) -> None:
        self.app = app
        tok = app.settings.control_token
        self._token = tok.get_secret_value().encode() if tok is not None else None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._peers = PeerCheck(0, app.settings.control_host, app.settings.control_allowed_hosts)
        self._originate_rate = RateLimit(app.settings.originate_per_minute)
        self.dashboard = Dashboard(app, call_summary, self._token is not None)

    def web_app(self) -> web.Application:
        w = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        w.add_routes([
            web.get("/healthz", self.healthz), web.get("/readyz", self.readyz),
            web.get("/metrics", self.metrics), web.get("/openapi.json", self.openapi),
            web.get("/calls", self.list_calls), web.post("/calls", self.originate),
            web.get("/calls/{id}", self.get_call), web.post("/calls/{id}/hangup", self.hangup),
            web.post("/calls/{id}/transfer", self.transfer), web.post("/calls/{id}/say", self.say),
            web.post("/calls/{id}/instructions", self.instructions),
            *self.dashboard.routes(),
        ])
        from .agents_api import agent_routes
        w.add_routes(agent_routes(self.app))   # GET /agents, POST /agents/reload (operate/agents_api.py)
        return w

    async def start(self) -> None:
        s = self.app.settings
        self._runner = web.AppRunner(self.web_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.control_host, s.control_port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._peers.port = self.port
        log.info("= control API on http://%s:%d (%s)", s.control_host, self.port,
                 "bearer token required" if self._token else "loopback, no token")

    async def stop(self) -> None:
        await self.dashboard.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every route but the open ones: Host and Origin (403), then the token (401), then a POST's
        content type (415). See the module docstring for why."""
        if request.path in OPEN_PATHS:
            return await handler(request)
        refusal = self._peers.refusal(request.headers.get("Host"), request.headers.get("Origin"))
        if refusal is not None:
            log.warning("! control API: %s %s refused: %s", request.method, request.path, refusal)
            return _json_error(403, refusal)
        if self._token is not None and not is_page(request.path):   # the page itself holds no data
            given = request.headers.get("Authorization", "")
            if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), self._token)):
                return _json_error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        if (request.method not in SAFE_METHODS and request.match_info.http_exception is None
                and request.content_type != "application/json"):
            return _json_error(415, "Content-Type must be application/json")
        return await handler(request)

    # --- health and metrics ------------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        from ..call.conversation import MAX_FAILED_IN_ROW
        model_ok = self.app.metrics.model_failed_in_row < MAX_FAILED_IN_ROW   # the last responses did not all fail
        ready = self.app.ready.is_set() and self.app.accepting and model_ok
        s = self.app.settings
        return web.json_response({"ready": ready, "ari_connected": self.app.ready.is_set(),
                                  "accepting_calls": self.app.accepting, "model_ok": model_ok,
                                  "model": "offline-demo" if s.offline_demo else s.model},
                                 status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.app.metrics.exposition(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document(self.app.settings.originate_targets))

    # --- calls ---------------------------------------------------------------------------------------------
    def _call(self, request: web.Request) -> Call:
        call = self.app.calls.get(request.match_info["id"])
        if call is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "no such call"}), content_type="application/json")
        return call

    async def list_calls(self, request: web.Request) -> web.Response:
        return web.json_response({"calls": [call_summary(c) for c in self.app.calls.values()]})

    async def get_call(self, request: web.Request) -> web.Response:
        return web.json_response(call_detail(self._call(request)))

    async def hangup(self, request: web.Request) -> web.Response:
        call = self._call(request)
        if await request.read():
            await _body(request, EmptyBody)
        call.end("hung up via the control API")
        return web.json_response({"status": "hanging up"}, status=202)

    async def transfer(self, request: web.Request) -> web.Response:
        call = self._call(request)
        body = await _body(request, TransferBody)
        targets = self.app.settings.transfer_targets
        if body.target not in targets:
            return _json_error(422, f"unknown transfer target; allowed: {', '.join(sorted(targets)) or 'none'}")
        dest = TransferDestination.parse(body.target, targets[body.target])
        try:   # the outcome, not a promise: the bot's last words, then until the caller left or it failed
            await call.transfer(dest)
        except TransferNotPossible as exc:
            return _json_error(409, f"no transfer: {exc}")
        except TransferFailed as exc:    # the caller is still talking to the bot
            return _json_error(502, f"transfer failed: {exc}")
        return web.json_response({"status": "transferred", "target": body.target})

    async def say(self, request: web.Request) -> web.Response:
        call = self._call(request)
        call.model.say((await _body(request, TextBody)).text)
        return web.json_response({"status": "queued"}, status=202)

    async def instructions(self, request: web.Request) -> web.Response:
        call = self._call(request)
        call.model.update_instructions((await _body(request, TextBody)).text)
        return web.json_response({"status": "updated"}, status=202)

    async def originate(self, request: web.Request) -> web.Response:
        s, app = self.app.settings, self.app
        if not s.originate_targets:
            return _json_error(403, "outbound calls are off: no VOICEAI_ORIGINATE_TARGETS configured")
        body = await _body(request, OriginateBody)
        if body.target not in s.originate_targets:
            return _json_error(422, f"unknown target; allowed: {', '.join(sorted(s.originate_targets))}")
        if not app.accepting or app.slots_used() >= s.max_calls:
            return _json_error(503, "not accepting calls (capacity, counting calls still ringing, or draining)")
        wait = self._originate_rate.take(time.monotonic())
        if wait:
            return _json_error(429, f"over VOICEAI_ORIGINATE_PER_MINUTE ({s.originate_per_minute})",
                               {"Retry-After": str(max(1, math.ceil(wait)))})
        # our own channel id: the slot is held before Asterisk dials, and its StasisStart finds it
        channel_id = f"voiceai-out-{uuid.uuid4().hex}"
        app.originating[channel_id] = time.monotonic() + body.timeout_s + RING_GRACE_S
        try:
            await app.ari.request("POST", "/channels", params={
                "endpoint": originate_endpoint(body.target, s.originate_targets[body.target]),
                "app": s.ari_app, "appArgs": "outbound", "callerId": body.caller_id,
                "timeout": body.timeout_s, "channelId": channel_id})
        except (AriError, AriUnavailable) as exc:
            app.originating.pop(channel_id, None)
            return _json_error(502, f"Asterisk refused the call: {exc}")
        log.info("> outbound call %s to target %s", channel_id, body.target)
        return web.json_response({"id": channel_id, "target": body.target, "status": "dialling"}, status=202)


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        raise web.HTTPUnprocessableEntity(
            text=json.dumps({"error": "invalid body", "detail": exc.errors(include_url=False, include_input=False)},
                            default=str), content_type="application/json") from None


def openapi_document(originate_targets: Iterable[str] = ()) -> dict[str, Any]:
    """The API as OpenAPI 3.0; POST /calls lists the configured target names."""
    def op(summary: str, responses: dict[str, Any], body: type[BaseModel] | None = None,
           call: bool = False, schema: dict[str, Any] | None = None) -> dict[str, Any]:
        o: dict[str, Any] = {"summary": summary, "responses": responses}
        if call:
            o["parameters"] = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
        if body is not None:
            o["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": schema or body.model_json_schema()}}}
        return o

    j = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    err = {"description": "error", "content": {"application/json": {"schema": {"type": "object"}}}}
    refused = {"401": err, "403": {**err, "description": "foreign Host or Origin; POST /calls: no targets"}}
    posted = {**refused, "415": {**err, "description": "not application/json"}}
    too_many = {**err, "description": "over VOICEAI_ORIGINATE_PER_MINUTE",
                "headers": {"Retry-After": {"required": True, "schema": {"type": "integer"}}}}
    originate = OriginateBody.model_json_schema()
    if names := sorted(originate_targets):
        originate["properties"]["target"]["enum"] = names
    return {
        "openapi": "3.0.3",
        "info": {"title": "voiceai-ari control API", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {**op("process alive", {"200": j}), "security": []}},
            "/readyz": {"get": {**op("ARI connected and taking calls; which model serves them",
                                     {"200": j, "503": j}), "security": []}},
            "/metrics": {"get": op("Prometheus metrics", {"200": {"description": "text exposition",
                                                                   "content": {"text/plain": {"schema": {"type": "string"}}}},
                                                          **refused})},
            "/calls": {
                "get": op("active calls", {"200": j, **refused}),
                "post": op("originate an outbound call to a VOICEAI_ORIGINATE_TARGETS name; the bot talks when "
                           "it is answered", {"202": j, "422": err, "429": too_many, "502": err, "503": err,
                                              **posted}, OriginateBody, schema=originate),
            },
            "/calls/{id}": {"get": op("one call: caller, state, codec, RTP counters, model session, transcript",
                                      {"200": j, "404": err, **refused}, call=True)},
            "/calls/{id}/hangup": {"post": op("hang up", {"202": j, "404": err, "422": err, **posted},
                                              EmptyBody, True)},
            "/calls/{id}/transfer": {"post": op(
                "transfer to an allowlisted target; answers when the caller has left (200) or the transfer "
                "failed and the caller is still with the bot (502), 409 when the call is not talking",
                {"200": j, "404": err, "409": err, "422": err, "502": err, **posted}, TransferBody, True)},
            "/calls/{id}/say": {"post": op("make the bot say something",
                                           {"202": j, "404": err, "422": err, **posted}, TextBody, True)},
            "/calls/{id}/instructions": {"post": op("replace the model's instructions mid-call",
                                                    {"202": j, "404": err, "422": err, **posted}, TextBody, True)},
            "/agents": {"get": op("the configured agents (VOICEAI_AGENTS_FILE)", {"200": j, **refused})},
            "/agents/reload": {"post": op("read the agents file again; calls in progress keep their agent; a bad "
                                          "file is refused (422) and the agents in use stay",
                                          {"200": j, "422": err, "500": err, **posted}, EmptyBody)},
        },
    }
