"""Control API: auth, call routes, metrics, health; and schemathesis against its own OpenAPI document."""

import asyncio
import threading

import pytest
import requests

from voiceai_ari.call.app import VoiceAiApp
from voiceai_ari.config import load_settings
from voiceai_ari.operate.control import ControlApi
from voiceai_ari.call.tools import ToolRegistry

TOKEN = "control-test-token-123"


def serve_in_thread(ari_url="http://127.0.0.1:9", ready=False, **settings):
    """A ControlApi over a VoiceAiApp (ARI unreachable by default), on its own loop and thread."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box = {}

    def run():
        asyncio.set_event_loop(loop)

        async def main():
            s = load_settings(_env_file=None, ari_url=ari_url, control_port=0, **settings)
            app = VoiceAiApp(s, model_factory=lambda: None, tools=ToolRegistry())
            if ready:
                app.ready.set()
            api = ControlApi(app)
            await app.ari.open()
            s2 = s.model_copy(update={"control_port": 0})
            app.settings = s2
            await api.start()
            box.update(app=app, api=api)
            started.set()
        loop.run_until_complete(main())
        loop.run_forever()
        loop.close()   # its self-pipe sockets would otherwise be garbage-collected open
    t = threading.Thread(target=run, daemon=True)
    t.start()
    started.wait(10)
    box["thread"] = t
    return loop, box


def stop_in_thread(loop, box):
    asyncio.run_coroutine_threadsafe(box["api"].stop(), loop).result(5)
    asyncio.run_coroutine_threadsafe(box["app"].ari.close(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    box["thread"].join(5)


@pytest.fixture(scope="module")
def server():
    loop, box = serve_in_thread(control_token=TOKEN, transfer_targets={"sales": "from-caller,200,1"})
    yield f"http://127.0.0.1:{box['api'].port}", box
    stop_in_thread(loop, box)


def auth():
    return {"Authorization": f"Bearer {TOKEN}"}


def test_token_required_except_health(server):
    url, _ = server
    assert requests.get(f"{url}/healthz", timeout=5).json() == {"status": "alive"}
    r = requests.get(f"{url}/readyz", timeout=5)
    assert r.status_code == 503 and r.json()["ari_connected"] is False
    for path in ("/calls", "/metrics", "/calls/x"):
        assert requests.get(url + path, timeout=5).status_code == 401
        assert requests.get(url + path, headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
    assert requests.get(f"{url}/calls", headers=auth(), timeout=5).json() == {"calls": []}


def test_call_routes_validate_and_404(server):
    url, _ = server
    assert requests.get(f"{url}/calls/nope", headers=auth(), timeout=5).status_code == 404
    assert requests.post(f"{url}/calls/nope/hangup", headers=auth(), timeout=5).status_code == 404
    r = requests.post(f"{url}/calls", headers=auth(), json={"endpoint": "not an endpoint"}, timeout=5)
    assert r.status_code == 422
    r = requests.post(f"{url}/calls", headers=auth(), json={"endpoint": "PJSIP/1001"}, timeout=15)
    assert r.status_code == 502 and "Asterisk refused" in r.json()["error"]


def test_metrics_exposition(server):
    url, _ = server
    text = requests.get(f"{url}/metrics", headers=auth(), timeout=5).text
    for name in ("voiceai_calls_active 0.0", "voiceai_calls_total 0.0", "voiceai_calls_refused_total",
                 "voiceai_call_setup_seconds_bucket", "voiceai_turn_latency_seconds_bucket",
                 "voiceai_barge_in_reaction_seconds_bucket", 'voiceai_rtp_packets_total{direction="in"}',
                 "voiceai_playout_underruns_total", 'voiceai_reconnects_total{kind="ari"}',
                 'voiceai_audio_seconds_total{direction="out"}', "voiceai_model_cost_usd_total",
                 'voiceai_media_tick_lateness_seconds_bucket{le="0.002"}', "voiceai_media_tick_lateness_seconds_sum",
                 "voiceai_media_clock_reanchors_total"):
        assert name in text, name


def test_refuses_public_bind_without_token():
    from voiceai_ari.config import ConfigError
    with pytest.raises(ConfigError, match="VOICEAI_CONTROL_TOKEN"):
        load_settings(_env_file=None, control_host="0.0.0.0")
    assert load_settings(_env_file=None, control_host="0.0.0.0", control_token=TOKEN).control_host == "0.0.0.0"


@pytest.fixture(scope="module")
def healthy_server():
    """A ready app whose ARI is a stand-in that accepts originates, so any 5xx would be our bug."""
    from aiohttp import web

    async def channels(request):
        return web.json_response({"id": "orig-1", "name": "PJSIP/x", "state": "Down"})
    ari_loop, ari_box, ari_started = asyncio.new_event_loop(), {}, threading.Event()

    def run_ari():
        async def main():
            app = web.Application()
            app.router.add_post("/ari/channels", channels)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            ari_box.update(runner=runner, port=site._server.sockets[0].getsockname()[1])
            ari_started.set()
        ari_loop.run_until_complete(main())
        ari_loop.run_forever()
        ari_loop.close()
    threading.Thread(target=run_ari, daemon=True).start()
    ari_started.wait(10)
    loop, box = serve_in_thread(ari_url=f"http://127.0.0.1:{ari_box['port']}", ready=True,
                                control_token=TOKEN, transfer_targets={"sales": "from-caller,200,1"})
    yield f"http://127.0.0.1:{box['api'].port}", box
    stop_in_thread(loop, box)
    asyncio.run_coroutine_threadsafe(ari_box["runner"].cleanup(), ari_loop).result(5)
    ari_loop.call_soon_threadsafe(ari_loop.stop)


def test_openapi_conformance_with_schemathesis(healthy_server):
    """Every documented operation, fuzzed from the schema: no 5xx, responses match the document."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    url, _ = healthy_server
    st = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    p = subprocess.run([st, "run", f"{url}/openapi.json", "-H", f"Authorization: Bearer {TOKEN}",
                        "--max-examples", "20", "--checks", "all", "--request-timeout", "15",
                        "--suppress-health-check", "all"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "/calls/{id}/transfer" in p.stdout


class StubCall:
    """What the transfer route needs of a call: `transfer`, which here fails or succeeds as told."""

    def __init__(self, outcome):
        self.outcome, self.asked = outcome, []

    async def transfer(self, dest):
        self.asked.append(dest)
        await asyncio.sleep(0.05)
        if self.outcome is not None:
            raise self.outcome


@pytest.mark.parametrize("outcome, status, body", [
    (None, 200, {"status": "transferred", "target": "sales"}),
    ("failed", 502, {"error": "transfer failed: sales did not take the call within 5 s"}),
    ("busy", 409, {"error": "no transfer: the call is transferring, not talking"}),
])
def test_transfer_answers_with_the_outcome(server, outcome, status, body):
    from voiceai_ari.call.tools import TransferFailed, TransferNotPossible
    url, box = server
    exc = {None: None, "failed": TransferFailed("sales did not take the call within 5 s"),
           "busy": TransferNotPossible("the call is transferring, not talking")}[outcome]
    call = box["app"].calls["stub-1"] = StubCall(exc)
    try:
        r = requests.post(f"{url}/calls/stub-1/transfer", headers=auth(), json={"target": "sales"}, timeout=5)
    finally:
        del box["app"].calls["stub-1"]
    assert (r.status_code, r.json()) == (status, body)
    assert [d.name for d in call.asked] == ["sales"]
