"""The dashboard: a page of live calls and call history, served by the control API (same address, same guard).

- `/dashboard/` and `/dashboard/static/*`: the page itself, static files shipped in the package (no build step).
  They hold nothing secret, so they need no token (Host and Origin are still checked): a viewer without the
  token gets a page that asks for it and can neither see nor do anything.
- `/dashboard/api/*`: data, behind the bearer token like every other route. The page keeps the token the user
  pasted in sessionStorage and sends it as `Authorization: Bearer`; it is never put in the page by the server.
  Actions go to the API's own endpoints (POST /calls/{id}/hangup, ...) under the same rules.
- Live updates are Server-Sent Events (`text/event-stream`), read by the page with fetch() so the token travels
  in a header (EventSource cannot send one): `/dashboard/api/events` carries a snapshot of every active call
  4 times a second while there are calls (caller, duration, state, model, transport, level meters, cost) and
  the start and end of each; `/dashboard/api/calls/{id}/events` replays a call's transcript so far, then
  streams each record as it is written. One sampler task builds the snapshots, and only while someone watches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .events import EventHub, Subscription
from .history import NAME, HistoryIndex

if TYPE_CHECKING:
    from ..call.app import VoiceAiApp
    from ..call.call import Call

log = logging.getLogger("voiceai.dashboard")
STATIC = Path(__file__).parent / "static"
PAGE_PREFIX = "/dashboard"
SAMPLE_S = 0.25          # snapshot (and level meter) period
KEEPALIVE_S = 15.0       # an SSE comment this often keeps proxies from closing an idle stream
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
                 ".png": "image/png"}


def is_page(path: str) -> bool:
    """The static page: Host/Origin-checked, but open without the token (it carries no data)."""
    return path in (PAGE_PREFIX, PAGE_PREFIX + "/") or path.startswith(PAGE_PREFIX + "/static/")


def model_name(settings: Any) -> str:
    if settings.offline_demo:
        return "offline-demo"
    return {"gemini-live": settings.gemini_model, "openai-live": settings.live_model}.get(
        settings.provider, settings.model)


def live_row(call: Call, summary: dict[str, Any]) -> dict[str, Any]:
    """What the live page shows of a call: every field of GET /calls, and model, transport, meters, cost."""
    s, media = call.settings, call.media
    tap = call.tap
    level_in, level_out = tap.levels() if tap is not None else (-90.0, -90.0)
    kind = type(media).__name__.removesuffix("Media").lower() or "media"
    codec = getattr(getattr(getattr(media, "encoder", None), "fmt", None), "name", None)
    return {**summary, "provider": s.provider, "model": model_name(s),
            "transport": f"{kind} {media.external_format}" + (f" / {codec}" if codec else ""),
            "level_in_dbfs": level_in, "level_out_dbfs": level_out, "cost_usd": round(call.cost_usd, 6)}


class Dashboard:
    def __init__(self, app: VoiceAiApp, summary: Any, token_required: bool) -> None:
        self.app, self._summary, self.token_required = app, summary, token_required
        self.hub: EventHub = app.events
        self.history = HistoryIndex(app.settings.transcript_dir)
        self._sampler: asyncio.Task[None] | None = None
        self._streams: set[Subscription] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(PAGE_PREFIX, self.redirect), web.get(PAGE_PREFIX + "/", self.index),
            web.get(PAGE_PREFIX + "/static/{name}", self.static),
            web.get(PAGE_PREFIX + "/api/info", self.info),
            web.get(PAGE_PREFIX + "/api/events", self.calls_stream),
            web.get(PAGE_PREFIX + "/api/calls/{id}/events", self.call_stream),
            web.get(PAGE_PREFIX + "/api/history", self.history_list),
            web.get(PAGE_PREFIX + "/api/history/{name}", self.history_detail),
            web.get(PAGE_PREFIX + "/api/history/{name}/recording", self.recording),
        ]

    async def close(self) -> None:
        """End every open stream (the API is stopping: an open SSE response would hold the shutdown)."""
        for sub in list(self._streams):
            sub.close()
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
            self._sampler = None

    # --- the page ----------------------------------------------------------------------------------------
    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(PAGE_PREFIX + "/")

    async def index(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        return self._file(request.match_info["name"])

    def _file(self, name: str) -> web.Response:
        path = STATIC / name
        if not NAME.match(name) or path.suffix not in CONTENT_TYPES or not path.is_file():
            raise web.HTTPNotFound(text="not found")
        # small files, read at each request: no cache to go stale after an upgrade
        return web.Response(body=path.read_bytes(), content_type=CONTENT_TYPES[path.suffix], charset="utf-8"
                            if path.suffix != ".png" else None,
                            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                                     "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                     "media-src 'self' blob:; frame-ancestors 'none'",
                                     "Referrer-Policy": "no-referrer"})

    # --- data ----------------------------------------------------------------------------------------------
    async def info(self, request: web.Request) -> web.Response:
        s = self.app.settings
        return web.json_response({"transfer_targets": sorted(s.transfer_targets),
                                  "originate_targets": sorted(s.originate_targets),
                                  "recording": bool(s.record_dir), "token_required": self.token_required,
                                  "transcripts": bool(s.transcript_dir)})

    def snapshot(self) -> dict[str, Any]:
        return {"type": "snapshot", "at": time.time(),
                "calls": [live_row(c, self._summary(c)) for c in list(self.app.calls.values())]}

    def _ensure_sampler(self) -> None:
        if self._sampler is None or self._sampler.done():
            self._sampler = asyncio.create_task(self._sample(), name="dashboard-sampler")

    async def _sample(self) -> None:
        """4 snapshots a second while a page watches and calls are up (one more once the last has gone)."""
        had_calls = True
        while self.hub.wants("calls"):
            if self.app.calls or had_calls:
                self.hub.publish("calls", self.snapshot())
            had_calls = bool(self.app.calls)
            await asyncio.sleep(SAMPLE_S)

    async def calls_stream(self, request: web.Request) -> web.StreamResponse:
        sub = self.hub.subscribe("calls", maxlen=64)
        first = self.snapshot()
        self._ensure_sampler()
        return await self._stream(request, sub, [("calls", first)])

    async def call_stream(self, request: web.Request) -> web.StreamResponse:
        call = self.app.calls.get(request.match_info["id"])
        if call is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "no such call (it may have ended: see history)"}),
                                   content_type="application/json")
        # subscribe and copy what was written so far in one step: no record missed, none twice
        sub = self.hub.subscribe(call.id, maxlen=512)
        replay = [(call.id, rec) for rec in list(call.transcript.recent)]
        replay.insert(0, (call.id, {"event": "meta", "id": call.id, "stem": call.transcript.stem}))
        return await self._stream(request, sub, replay)

    async def _stream(self, request: web.Request, sub: Subscription,
                      first: list[tuple[str, dict[str, Any]]]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        self._streams.add(sub)
        try:
            await resp.prepare(request)
            for topic, ev in first:
                await resp.write(_sse(topic, ev))
            while True:
                item = await sub.get(timeout=KEEPALIVE_S)
                if item is None:
                    if sub.dropped:     # fell behind: the page reconnects and gets a fresh start
                        await resp.write(b"event: dropped\ndata: {}\n\n")
                        break
                    if sub.closed:
                        break
                    await resp.write(b": keepalive\n\n")
                    continue
                await resp.write(_sse(*item))
                if item[0] != "calls" and item[1].get("event") == "call_end":
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._streams.discard(sub)
            sub.close()
        return resp

    async def history_list(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "")[:200]
        try:
            limit = max(1, min(1000, int(request.query.get("limit", "200"))))
        except ValueError:
            return web.json_response({"error": "limit must be an integer"}, status=422)
        return web.json_response(await asyncio.to_thread(self.history.search, q, limit))

    async def history_detail(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        detail = await asyncio.to_thread(self.history.detail, name)
        if detail is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "no such finished call"}),
                                   content_type="application/json")
        detail["recording"] = self._recording_path(name) is not None
        return web.json_response(detail)

    def _recording_path(self, name: str) -> Path | None:
        folder = self.app.settings.record_dir
        if not folder or not NAME.match(name) or ".." in name:
            return None
        path = Path(folder) / f"{name}.wav"
        return path if path.is_file() else None

    async def recording(self, request: web.Request) -> web.StreamResponse:
        path = self._recording_path(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "no recording"}), content_type="application/json")
        return web.FileResponse(path, headers={"Content-Type": "audio/wav", "Cache-Control": "no-store"})


def _sse(topic: str, event: dict[str, Any]) -> bytes:
    kind = event.get("type") or "record"
    return f"event: {kind}\ndata: {json.dumps(event, default=str, separators=(',', ':'))}\n\n".encode()
