"""AriClient against a small local ARI stand-in: typed errors, Basic auth only, events with reconnect."""

import asyncio
import json

import pytest
from aiohttp import web

from voiceai_ari.ari import AriClient, AriError, AriEvent, AriNotFound, AriUnavailable, EventsConnected

PASSWORD = "p&ss=w#rd"  # characters that break clients which put credentials in URLs


class FakeAri:
    def __init__(self):
        self.requests = []
        self.ws_connects = 0

    def app(self):
        app = web.Application()
        app.router.add_route("*", "/ari/events", self.events)
        app.router.add_route("*", "/ari/{tail:.*}", self.rest)
        return app

    async def rest(self, req):
        self.requests.append((req.method, req.path_qs, req.headers.get("Authorization")))
        if req.path == "/ari/channels/gone":
            return web.json_response({"message": "Channel not found"}, status=404)
        if req.path == "/ari/channels/busy/answer":
            return web.json_response({"message": "Channel not in Stasis application"}, status=409)
        if req.path == "/ari/channels/x/answer":
            return web.Response(status=204)
        return web.json_response({"id": "b1", "technology": "simple_bridge", "channels": []})

    async def events(self, req):
        self.ws_connects += 1
        self.requests.append(("WS", req.path_qs, req.headers.get("Authorization")))
        ws = web.WebSocketResponse()
        await ws.prepare(req)
        await ws.send_str(json.dumps({"type": "StasisStart", "application": "voiceai", "args": [],
                                      "channel": {"id": "c1", "name": "PJSIP/x-1", "state": "Ring"}}))
        await ws.send_str("{not json")
        await ws.send_str(json.dumps({"type": "StasisEnd", "channel": {"id": "c1"}}))
        await ws.close()  # as when Asterisk restarts
        return ws


@pytest.fixture
async def fake():
    f = FakeAri()
    runner = web.AppRunner(f.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    f.url = f"http://127.0.0.1:{port}"
    yield f
    await runner.cleanup()


async def test_rest_errors_are_typed(fake):
    async with AriClient(fake.url, "voiceai", PASSWORD, "voiceai") as ari:
        await ari.answer("x")
        with pytest.raises(AriNotFound) as nf:
            await ari.request("GET", "/channels/gone")
        assert nf.value.status == 404 and nf.value.message == "Channel not found"
        with pytest.raises(AriError) as e:
            await ari.answer("busy")
        assert e.value.status == 409 and "not in Stasis" in e.value.message
        assert not isinstance(e.value, AriNotFound)
        assert await ari.hangup("gone") is False  # 404 on hangup = already gone
        b = await ari.create_bridge()
        assert b.id == "b1"


async def test_credentials_only_in_basic_auth_header(fake, caplog):
    caplog.set_level("DEBUG")
    async with AriClient(fake.url, "voiceai", PASSWORD, "voiceai", backoff_initial=0.01) as ari:
        await ari.answer("x")
        it = ari.events()
        assert isinstance(await anext(it), EventsConnected)
        await anext(it)
    for method, path_qs, auth in fake.requests:
        assert "api_key" not in path_qs and PASSWORD not in path_qs
        assert auth and auth.startswith("Basic ")
    assert PASSWORD not in caplog.text


async def test_events_skip_bad_and_reconnect(fake):
    async with AriClient(fake.url, "voiceai", PASSWORD, "voiceai", backoff_initial=0.01) as ari:
        seen = []
        async def collect():
            async for ev in ari.events():
                seen.append(ev)
                if sum(isinstance(e, EventsConnected) for e in seen) == 3:
                    return
        await asyncio.wait_for(collect(), 5)
    kinds = [type(e).__name__ if not isinstance(e, AriEvent) else e.type for e in seen]
    assert kinds[:4] == ["EventsConnected", "StasisStart", "StasisEnd", "EventsDisconnected"]
    assert kinds.count("EventsConnected") == 3
    assert ari.bad_events == 2 and ari.reconnects == 2
    assert fake.ws_connects == 3
    start = next(e for e in seen if isinstance(e, AriEvent))
    assert start.channel.id == "c1" and start.channel.name == "PJSIP/x-1"


async def test_unreachable_is_typed():
    async with AriClient("http://127.0.0.1:9", "u", "p", "voiceai", timeout=2) as ari:
        with pytest.raises(AriUnavailable):
            await ari.info()
