"""HTTPS_PROXY / HTTP_PROXY / NO_PROXY: the model WebSocket, the token service and api_call go through the
configured proxy (a real CONNECT / absolute-form proxy on loopback, written below); NO_PROXY and loopback
targets go direct.

The targets use names under .invalid: through the proxy the client never resolves them (the proxy does, and
maps them to 127.0.0.1); a direct connection resolves them through `fake_dns`, so no test query leaves the
machine.
"""

import asyncio
import json

import pytest
from aiohttp import web

from voiceai_ari.call.tools import build_registry
from voiceai_ari.config import Settings
from voiceai_ari.fakes.realtime.server import FakeRealtimeServer
from voiceai_ari.providers.openai_realtime.credentials import TokenService
from voiceai_ari.proxy import use_env_proxy
from voiceai_ari.providers.openai_realtime.protocol import SessionConfig
from voiceai_ari.providers.openai_realtime.session import RealtimeSession

PROXY_VARS = ("http_proxy", "https_proxy", "ws_proxy", "wss_proxy", "all_proxy", "no_proxy", "socks_proxy")


class LoopbackProxy:
    """An HTTP proxy: CONNECT host:port (a tunnel) and absolute-form requests; every name goes to 127.0.0.1."""

    def __init__(self) -> None:
        self.seen: list[str] = []      # request lines, e.g. "CONNECT model.invalid:4321 HTTP/1.1"
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode()
            self.seen.append(line)
            method, target, _ = line.split(" ")
            if method == "CONNECT":
                port = int(target.rsplit(":", 1)[1])
            else:  # absolute-form: GET http://host:port/path HTTP/1.1
                port = int(target.split("/")[2].rsplit(":", 1)[1])
            up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                up_w.write(head)
            await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
        except (OSError, ValueError, asyncio.IncompleteReadError):
            writer.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()


@pytest.fixture
async def proxy(monkeypatch):
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    p = LoopbackProxy()
    url = await p.start()
    monkeypatch.setenv("HTTPS_PROXY", url)
    monkeypatch.setenv("HTTP_PROXY", url)
    yield p
    await p.stop()


@pytest.fixture
async def fake_dns(monkeypatch):
    """Names under .invalid resolve to 127.0.0.1 for this loop (a direct connection must not ask real DNS)."""
    loop = asyncio.get_running_loop()
    if type(loop).__module__.startswith("uvloop"):
        pytest.skip("uvloop resolves names inside create_connection: its getaddrinfo cannot be faked per loop")
    real = loop.getaddrinfo

    async def getaddrinfo(host, port, *args, **kw):
        if isinstance(host, str) and host.endswith(".invalid"):
            host = "127.0.0.1"
        return await real(host, port, *args, **kw)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


@pytest.fixture
async def model():
    fake = FakeRealtimeServer(mode="tone", api_key="sk-test")
    await fake.start()
    yield fake
    await fake.stop()


def renamed(url: str, host: str) -> str:
    return url.replace("127.0.0.1", host, 1)


async def start_session(url: str) -> RealtimeSession:
    s = RealtimeSession(url, "sk-test", SessionConfig(), connect_timeout=5)
    await s.start()
    assert s.session_id
    return s


async def test_model_websocket_goes_through_https_proxy(proxy, fake_dns, model):
    url = renamed(model.url, "model.invalid")
    s = await start_session(url)
    await s.close()
    port = url.split("//")[1].split("/")[0].split(":")[1]
    assert proxy.seen == [f"CONNECT model.invalid:{port} HTTP/1.1"]


async def test_no_proxy_covering_the_model_host_connects_direct(proxy, fake_dns, model, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "example.com,model.invalid")
    s = await start_session(renamed(model.url, "model.invalid"))
    await s.close()
    assert proxy.seen == []


async def test_loopback_model_never_goes_through_the_proxy(proxy, model):
    """The offline demo model and local fakes listen on 127.0.0.1: a proxy could not reach them."""
    s = await start_session(model.url)
    await s.close()
    assert proxy.seen == []
    assert not use_env_proxy("ws://localhost:1/x") and not use_env_proxy("ws://[::1]:1/x")
    assert use_env_proxy("wss://api.openai.com/v1/realtime")


@pytest.fixture
async def http_server():
    hits: list[str] = []

    async def handle(request):
        hits.append(f"{request.method} {request.path}")
        return web.json_response({"value": "tok-1", "expires_at": 4102444800})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1], hits
    await runner.cleanup()


@pytest.mark.parametrize("no_proxy", [None, "svc.invalid"])
async def test_token_service_and_api_call_honour_the_proxy_variables(proxy, fake_dns, http_server, monkeypatch,
                                                                     no_proxy):
    port, hits = http_server
    if no_proxy:
        monkeypatch.setenv("NO_PROXY", no_proxy)
    base = f"http://svc.invalid:{port}"
    assert await TokenService(base + "/token").bearer() == "tok-1"
    reg = build_registry(Settings(_env_file=None, http_tool_allowlist=[base + "/api/"]))
    r = await reg.execute(None, "api_call", json.dumps({"endpoint": "items/42"}))
    assert r.ok and json.loads(r.output)["status"] == 200
    assert hits == ["GET /token", "GET /api/items/42"]
    expected = [] if no_proxy else [f"GET {base}/token HTTP/1.1", f"GET {base}/api/items/42 HTTP/1.1"]
    assert proxy.seen == expected
