"""Model credentials: a token service URL's secrets (userinfo, query) never reach an error text or a log line."""

import logging
import socket

import pytest
from aiohttp import web

from voiceai_ari.config import Settings
from voiceai_ari.operate.check import _model, render
from voiceai_ari.providers.openai_realtime.credentials import TokenService, redact_url
from voiceai_ari.providers.openai_realtime.protocol import SessionConfig
from voiceai_ari.providers.openai_realtime.session import RealtimeSession

SECRETS = ("pw", "SECRET")


@pytest.fixture
async def token_server():
    """A token service that fails: /500 answers HTTP 500, /junk answers text, /list a JSON list."""
    seen = []

    async def handle(request):
        seen.append((request.path, request.headers.get("Authorization", "")))
        if request.path == "/junk":
            return web.Response(text="<html>not json</html>")
        if request.path == "/list":
            return web.json_response(["SECRET"])
        return web.Response(status=500, text="internal error")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)  # the fake service's own log is not the bot's
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}", seen
    await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the block ends: connection refused


def assert_clean(text: str) -> None:
    for s in SECRETS:
        assert s not in text, f"{s!r} leaked: {text!r}"


@pytest.mark.parametrize("path", ["/500", "/junk", "/list", None])
async def test_token_service_failure_does_not_leak_the_url_secrets(token_server, caplog, path):
    caplog.set_level(logging.DEBUG)
    hostport, seen = token_server
    if path is None:
        hostport, path = f"127.0.0.1:{closed_port()}", "/mint"
    url = f"http://user:pw@{hostport}{path}?key=SECRET"
    session = RealtimeSession("ws://127.0.0.1:9/v1/realtime", TokenService(url), SessionConfig(), connect_timeout=5)
    with pytest.raises((OSError, ValueError)) as exc:
        await session.start()
    await session.close()
    assert_clean(str(exc.value))
    assert_clean(repr(exc.value))
    assert f"http://{hostport}{path}?..." in str(exc.value)
    for rec in caplog.records:
        assert_clean(rec.getMessage())
    if seen:
        assert seen[0][1].startswith("Basic ")   # the userinfo is still used: sent as basic auth

    # what `voiceai-ari check` prints about it
    settings = Settings(_env_file=None, credentials="token_service", token_service_url=url)
    step = await _model(settings)
    assert not step.ok
    assert_clean(render([step]))
    for rec in caplog.records:
        assert_clean(rec.getMessage())


@pytest.mark.parametrize("url, shown", [
    ("https://user:pw@tok.example/mint?key=SECRET", "https://tok.example/mint?..."),
    ("https://tok.example:8443/mint#SECRET", "https://tok.example:8443/mint?..."),
    ("http://[::1]:80/t", "http://[::1]:80/t"),
    ("http://[::1/t", "<unparsable URL>"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown
