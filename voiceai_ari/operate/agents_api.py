"""Control API routes for the agents (call/agents.py): `GET /agents`, `POST /agents/reload`.

They sit behind the same guard as every other route (operate/control.py: Host/Origin, token, a POST's
content type). A reload reads `VOICEAI_AGENTS_FILE` again: 200 with the agents now in use, or 422 with the
one-line error and nothing changed. Calls in progress keep their agent either way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from ..config import ConfigError
from .control import EmptyBody, _body, _json_error

if TYPE_CHECKING:
    from ..call.app import VoiceAiApp

log = logging.getLogger("voiceai.control")


def agent_routes(app: VoiceAiApp) -> list[web.RouteDef]:
    async def list_agents(request: web.Request) -> web.Response:
        book = app.agents
        return web.json_response({"file": app.settings.agents_file, "reloads": book.reloads, "agents": [
            {"name": a.name, "provider": a.settings.provider, "model": a.model, "voice": a.settings.voice,
             "tools": a.tools.names} for a in book.current.values()]})

    async def reload_agents(request: web.Request) -> web.Response:
        if await request.read():
            await _body(request, EmptyBody)
        try:
            names = await app.agents.reload()
        except ConfigError as exc:
            log.error("! agents not reloaded, the previous ones stay: %s", exc)
            return _json_error(422, str(exc))
        except Exception as exc:   # e.g. an embedded demo model that cannot start: nothing changed either
            log.error("! agents not reloaded, the previous ones stay: %s: %s", type(exc).__name__, exc)
            return _json_error(500, f"agents not reloaded: {type(exc).__name__}: {exc}")
        log.info("= agents reloaded via the control API: %s", ", ".join(names))
        return web.json_response({"status": "reloaded", "agents": names})

    return [web.get("/agents", list_agents), web.post("/agents/reload", reload_agents)]
