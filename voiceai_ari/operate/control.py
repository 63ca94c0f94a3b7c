"""Control API: see and steer live calls, scrape metrics, probe health. aiohttp, JSON, bearer token.

Bound to loopback by default; a non-loopback address needs VOICEAI_CONTROL_TOKEN (config refuses to start
without one). With a token, every route but /healthz, /readyz and /openapi.json needs `Authorization: Bearer <token>`.
The OpenAPI document is served at /openapi.json and the tests run schemathesis against it.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..ari import AriError, AriUnavailable
from ..call.tools import TransferDestination, TransferFailed, TransferNotPossible

if TYPE_CHECKING:
    from ..call.app import VoiceAiApp
    from ..call.call import Call

log = logging.getLogger("voiceai.control")
OPEN_PATHS = {"/healthz", "/readyz", "/openapi.json"}


class TransferBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str = Field(min_length=1, max_length=64)


class TextBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=4000)


class OriginateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoint: str = Field(pattern=r"^[A-Za-z0-9]+/\S{1,200}$", description="e.g. PJSIP/1001 or PJSIP/sip:ivr@host")
    caller_id: str = Field("voiceai", max_length=80)
    timeout_s: int = Field(30, ge=1, le=300)


def call_summary(call: Call) -> dict[str, Any]:
    return {"id": call.id, "caller": {"name": call.channel.caller.name, "number": call.channel.caller.number},
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(call.started)),
            "duration_s": round(time.time() - call.started, 1), "state": call.state}


def call_detail(call: Call) -> dict[str, Any]:
    stats = call.media.stats()
    return {**call_summary(call), "codec": stats.get("codec"), "rtp": stats,
            "model_session_id": getattr(call.model, "session_id", None), "setup_ms": call.setup_ms,
            "usage": call.usage, "cost_usd": round(call.cost_usd, 6),
            "transcript": list(call.transcript.recent)}


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class ControlApi:
    def __init__(self, app: VoiceAiApp) -> None:
        self.app = app
        tok = app.settings.control_token
        self._token = tok.get_secret_value().encode() if tok is not None else None
        self._runner: web.AppRunner | None = None
        self.port = 0

    def web_app(self) -> web.Application:
        w = web.Application(middlewares=[self._auth], client_max_size=64 * 1024)
        w.add_routes([
            web.get("/healthz", self.healthz), web.get("/readyz", self.readyz),
            web.get("/metrics", self.metrics), web.get("/openapi.json", self.openapi),
            web.get("/calls", self.list_calls), web.post("/calls", self.originate),
            web.get("/calls/{id}", self.get_call), web.post("/calls/{id}/hangup", self.hangup),
            web.post("/calls/{id}/transfer", self.transfer), web.post("/calls/{id}/say", self.say),
            web.post("/calls/{id}/instructions", self.instructions),
        ])
        return w

    async def start(self) -> None:
        s = self.app.settings
        self._runner = web.AppRunner(self.web_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.control_host, s.control_port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("= control API on http://%s:%d (%s)", s.control_host, self.port,
                 "bearer token required" if self._token else "loopback, no token")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self._token is not None and request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "")
            if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), self._token)):
                return web.json_response({"error": "missing or wrong bearer token"}, status=401,
                                         headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    # --- health and metrics ------------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready = self.app.ready.is_set() and self.app.accepting
        return web.json_response({"ready": ready, "ari_connected": self.app.ready.is_set(),
                                  "accepting_calls": self.app.accepting}, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.app.metrics.exposition(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

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
        body = await _body(request, OriginateBody)
        if not self.app.accepting or len(self.app.calls) >= self.app.settings.max_calls:
            return _json_error(503, "not accepting calls (capacity or draining)")
        try:
            ch = await self.app.ari.request("POST", "/channels", params={
                "endpoint": body.endpoint, "app": self.app.settings.ari_app, "appArgs": "outbound",
                "callerId": body.caller_id, "timeout": body.timeout_s})
        except (AriError, AriUnavailable) as exc:
            return _json_error(502, f"Asterisk refused the call: {exc}")
        return web.json_response({"id": ch["id"], "status": "dialling"}, status=202)


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        raise web.HTTPUnprocessableEntity(
            text=json.dumps({"error": "invalid body", "detail": exc.errors(include_url=False, include_input=False)},
                            default=str), content_type="application/json") from None


def openapi_document() -> dict[str, Any]:
    def op(summary: str, responses: dict[str, Any], body: type[BaseModel] | None = None,
           call: bool = False) -> dict[str, Any]:
        o: dict[str, Any] = {"summary": summary, "responses": responses}
        if call:
            o["parameters"] = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
        if body is not None:
            o["requestBody"] = {"required": True, "content": {"application/json": {"schema": body.model_json_schema()}}}
        return o

    j = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    err = {"description": "error", "content": {"application/json": {"schema": {"type": "object"}}}}
    unauth = {"401": err}
    return {
        "openapi": "3.0.3",
        "info": {"title": "voiceai-ari control API", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {**op("process alive", {"200": j}), "security": []}},
            "/readyz": {"get": {**op("ARI connected and taking calls", {"200": j, "503": j}), "security": []}},
            "/metrics": {"get": op("Prometheus metrics", {"200": {"description": "text exposition",
                                                                   "content": {"text/plain": {"schema": {"type": "string"}}}},
                                                          **unauth})},
            "/calls": {
                "get": op("active calls", {"200": j, **unauth}),
                "post": op("originate an outbound call; the bot talks when it is answered",
                           {"202": j, "422": err, "502": err, "503": err, **unauth}, OriginateBody),
            },
            "/calls/{id}": {"get": op("one call: caller, state, codec, RTP counters, model session, transcript",
                                      {"200": j, "404": err, **unauth}, call=True)},
            "/calls/{id}/hangup": {"post": op("hang up", {"202": j, "404": err, **unauth}, call=True)},
            "/calls/{id}/transfer": {"post": op(
                "transfer to an allowlisted target; answers when the caller has left (200) or the transfer "
                "failed and the caller is still with the bot (502), 409 when the call is not talking",
                {"200": j, "404": err, "409": err, "422": err, "502": err, **unauth}, TransferBody, True)},
            "/calls/{id}/say": {"post": op("make the bot say something",
                                           {"202": j, "404": err, "422": err, **unauth}, TextBody, True)},
            "/calls/{id}/instructions": {"post": op("replace the model's instructions mid-call",
                                                    {"202": j, "404": err, "422": err, **unauth}, TextBody, True)},
        },
    }
