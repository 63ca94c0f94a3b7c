"""Control API: auth, the Host/Origin/content-type guard, outbound calls only to allowlisted targets (rate
limited, ringing calls counted against max_calls), call routes, metrics, health; and schemathesis against its
own OpenAPI document."""

import asyncio
import contextlib
import threading
import time

import pytest
import requests

from voiceai_ari.ari import AriEvent, Channel
from voiceai_ari.call.app import VoiceAiApp
from voiceai_ari.config import load_settings
from voiceai_ari.operate.control import ControlApi
from voiceai_ari.call.tools import ToolRegistry

TOKEN = "control-test-token-123"
TARGETS = {"frontdesk": "PJSIP/1001", "echo": "from-caller,300,1"}


class StandInAri:
    """An ARI that accepts every originate (POST /ari/channels) and records its parameters, on its own thread."""

    def __init__(self) -> None:
        from aiohttp import web
        self.originated: list[dict[str, str]] = []
        self.loop, started = asyncio.new_event_loop(), threading.Event()

        async def channels(request):
            self.originated.append(dict(request.query))
            return web.json_response({"id": request.query.get("channelId", "x"), "name": "PJSIP/x", "state": "Down"})

        def run():
            async def main():
                app = web.Application()
                app.router.add_post("/ari/channels", channels)
                self.runner = web.AppRunner(app)
                await self.runner.setup()
                site = web.TCPSite(self.runner, "127.0.0.1", 0)
                await site.start()
                self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
                started.set()
            self.loop.run_until_complete(main())
            self.loop.run_forever()
            self.loop.close()
        threading.Thread(target=run, daemon=True).start()
        started.wait(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)


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




@contextlib.contextmanager
def control_api(**settings):
    """A ready app and its control API (no token unless given) over a stand-in ARI: (url, app, stand-in ARI)."""
    ari = StandInAri()
    loop, box = serve_in_thread(ari_url=ari.url, ready=True, **settings)
    try:
        yield f"http://127.0.0.1:{box['api'].port}", box["app"], ari, loop
    finally:
        stop_in_thread(loop, box)
        ari.close()


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
    assert requests.post(f"{url}/calls/nope/hangup", headers=auth(), json={}, timeout=5).status_code == 404
    r = requests.post(f"{url}/calls/nope/say", headers=auth(), json={"text": ""}, timeout=5)
    assert r.status_code == 404


def test_originate_when_asterisk_refuses_is_a_502_and_frees_the_slot():
    loop, box = serve_in_thread(ready=True, originate_targets=TARGETS)   # ARI unreachable
    try:
        r = requests.post(f"http://127.0.0.1:{box['api'].port}/calls", json={"target": "frontdesk"}, timeout=15)
        assert r.status_code == 502 and "Asterisk refused" in r.json()["error"]
        assert box["app"].originating == {}
    finally:
        stop_in_thread(loop, box)


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
    """A ready app whose ARI is a stand-in that accepts originates, so any 5xx would be our bug (limits high
    enough that schemathesis' examples meet neither the rate limit nor the capacity)."""
    with control_api(control_token=TOKEN, transfer_targets={"sales": "from-caller,200,1"}, originate_targets=TARGETS,
                     originate_per_minute=10000, max_calls=10000) as (url, app, ari, _):
        yield url, app


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


# --- the guard: Host, Origin, content type (no token: the default) --------------------------------------------
def test_posts_must_be_json_or_415_and_nothing_is_dialled():
    with control_api(originate_targets=TARGETS) as (url, app, ari, _):
        body = '{"target": "frontdesk"}'
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
            headers = {"Content-Type": ctype} if ctype else {}
            r = requests.post(f"{url}/calls", data=body, headers=headers, timeout=5)
            assert r.status_code == 415 and "application/json" in r.json()["error"], ctype
            assert requests.post(f"{url}/calls/x/hangup", data="", headers=headers, timeout=5).status_code == 415
            for action in ("say", "instructions"):
                r = requests.post(f"{url}/calls/x/{action}", data='{"text": "hi"}', headers=headers, timeout=5)
                assert r.status_code == 415, (action, ctype)
        assert ari.originated == []
        r = requests.post(f"{url}/calls", data=body, headers={"Content-Type": "application/json; charset=utf-8"},
                          timeout=5)
        assert r.status_code == 202, r.text


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost:3000",
                                    "http://127.0.0.1:{other}", "https://127.0.0.1.evil.example:{port}"])
def test_a_foreign_origin_is_refused_even_without_a_token(origin):
    with control_api(originate_targets=TARGETS) as (url, app, ari, _):
        port = int(url.rsplit(":", 1)[1])
        headers = {"Origin": origin.format(port=port, other=port + 1)}
        r = requests.post(f"{url}/calls", json={"target": "frontdesk"}, headers=headers, timeout=5)
        assert r.status_code == 403 and "cross-origin" in r.json()["error"]
        assert requests.get(f"{url}/calls", headers=headers, timeout=5).status_code == 403
        assert requests.post(f"{url}/calls/x/say", json={"text": "hi"}, headers=headers, timeout=5).status_code == 403
        assert ari.originated == []
        assert requests.get(f"{url}/healthz", headers=headers, timeout=5).status_code == 200   # probes stay open


def test_the_apis_own_origin_is_accepted():
    with control_api(originate_targets=TARGETS) as (url, app, ari, _):
        port = int(url.rsplit(":", 1)[1])
        for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}"):
            r = requests.post(f"{url}/calls", json={"target": "frontdesk"}, headers={"Origin": origin}, timeout=5)
            assert r.status_code == 202, (origin, r.text)
        assert len(ari.originated) == 3


def test_a_rebound_host_is_refused_and_configured_names_are_accepted():
    with control_api(originate_targets=TARGETS, control_allowed_hosts=["voice.example.com"]) as (url, app, ari, _):
        port = int(url.rsplit(":", 1)[1])
        for host in (f"evil.example:{port}", f"127.0.0.1:{port + 1}", f"localhost.evil.example:{port}"):
            r = requests.get(f"{url}/calls", headers={"Host": host}, timeout=5)
            assert r.status_code == 403 and "Host" in r.json()["error"], host
            r = requests.post(f"{url}/calls", json={"target": "frontdesk"}, headers={"Host": host}, timeout=5)
            assert r.status_code == 403, host
        assert ari.originated == []
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "voice.example.com",
                     "voice.example.com:443"):
            assert requests.get(f"{url}/calls", headers={"Host": host}, timeout=5).json() == {"calls": []}, host
        r = requests.post(f"{url}/calls", json={"target": "frontdesk"}, timeout=5,
                          headers={"Host": "voice.example.com", "Origin": "https://voice.example.com"})
        assert r.status_code == 202, r.text


# --- outbound calls -------------------------------------------------------------------------------------------
def test_originate_dials_only_allowlisted_targets():
    with control_api(originate_targets=TARGETS) as (url, app, ari, _):
        r = requests.post(f"{url}/calls", json={"endpoint": "Local/0044123456@from-internal"}, timeout=5)
        assert r.status_code == 422 and "free dial strings are refused" in r.text
        r = requests.post(f"{url}/calls", json={"target": "Local/0044123456@from-internal"}, timeout=5)
        assert r.status_code == 422 and r.json()["error"] == "unknown target; allowed: echo, frontdesk"
        r = requests.post(f"{url}/calls", json={"target": "frontdesk", "endpoint": "PJSIP/999"}, timeout=5)
        assert r.status_code == 422
        assert ari.originated == []
        a = requests.post(f"{url}/calls", json={"target": "frontdesk", "timeout_s": 20}, timeout=5)
        b = requests.post(f"{url}/calls", json={"target": "echo"}, timeout=5)
        assert a.status_code == b.status_code == 202
        assert [(o["endpoint"], o["app"], o["appArgs"], o["timeout"]) for o in ari.originated] == [
            ("PJSIP/1001", "voiceai", "outbound", "20"), ("Local/300@from-caller", "voiceai", "outbound", "30")]
        assert [o["channelId"] for o in ari.originated] == [a.json()["id"], b.json()["id"]]
        assert requests.get(f"{url}/openapi.json", timeout=5).json()["paths"]["/calls"]["post"]["requestBody"][
            "content"]["application/json"]["schema"]["properties"]["target"]["enum"] == ["echo", "frontdesk"]


def test_no_targets_no_outbound_calls():
    with control_api() as (url, app, ari, _):
        r = requests.post(f"{url}/calls", json={"target": "frontdesk"}, timeout=5)
        assert r.status_code == 403 and "VOICEAI_ORIGINATE_TARGETS" in r.json()["error"]
        r = requests.post(f"{url}/calls", json={"endpoint": "PJSIP/1001"}, timeout=5)
        assert r.status_code == 403
        assert ari.originated == []


def test_originate_rate_limit_answers_429_with_retry_after():
    with control_api(originate_targets=TARGETS, originate_per_minute=2) as (url, app, ari, _):
        codes = [requests.post(f"{url}/calls", json={"target": "frontdesk"}, timeout=5) for _ in range(3)]
        assert [r.status_code for r in codes] == [202, 202, 429]
        assert 55 <= int(codes[2].headers["Retry-After"]) <= 60
        assert "VOICEAI_ORIGINATE_PER_MINUTE" in codes[2].json()["error"]
        assert len(ari.originated) == 2


def test_ringing_outbound_calls_count_against_max_calls():
    """Two quick POSTs with one slot: the second is refused while the first rings; when Asterisk destroys
    the unanswered channel, its slot is free again."""
    with control_api(originate_targets=TARGETS, max_calls=1) as (url, app, ari, loop):
        first = requests.post(f"{url}/calls", json={"target": "frontdesk"}, timeout=5)
        assert first.status_code == 202
        second = requests.post(f"{url}/calls", json={"target": "echo"}, timeout=5)
        assert second.status_code == 503 and "ringing" in second.json()["error"]
        assert len(ari.originated) == 1
        assert "voiceai_calls_originating 1.0" in requests.get(f"{url}/metrics", timeout=5).text
        # not answered: Asterisk destroys the channel (ChannelDestroyed reaches the app, which is subscribed)
        gone = AriEvent(type="ChannelDestroyed", channel=Channel(id=first.json()["id"], name="PJSIP/1001-1"))
        loop.call_soon_threadsafe(app.dispatch, gone)
        for _ in range(50):
            if not app.originating:
                break
            time.sleep(0.02)
        assert requests.post(f"{url}/calls", json={"target": "echo"}, timeout=5).status_code == 202
        assert "voiceai_calls_originating 1.0" in requests.get(f"{url}/metrics", timeout=5).text


def test_a_ringing_slot_is_given_up_after_its_timeout():
    with control_api(originate_targets=TARGETS, max_calls=1) as (url, app, ari, loop):
        assert requests.post(f"{url}/calls", json={"target": "frontdesk"}, timeout=5).status_code == 202
        [cid] = app.originating
        app.originating[cid] = time.monotonic() - 0.001   # its timeout and grace have passed, no event came
        assert requests.post(f"{url}/calls", json={"target": "frontdesk"}, timeout=5).status_code == 202


# --- which model serves the calls ----------------------------------------------------------------------------
def test_readyz_and_metrics_show_the_offline_demo():
    with control_api(OPENAI_API_KEY="") as (url, app, ari, _):
        r = requests.get(f"{url}/readyz", timeout=5)
        assert r.status_code == 200 and r.json()["model"] == "offline-demo"
        assert "\nvoiceai_offline_demo 1.0\n" in requests.get(f"{url}/metrics", timeout=5).text
    with control_api(OPENAI_API_KEY="sk-test-key-0123") as (url, app, ari, _):
        assert requests.get(f"{url}/readyz", timeout=5).json()["model"] == "gpt-realtime-2.1"
        assert "\nvoiceai_offline_demo 0.0\n" in requests.get(f"{url}/metrics", timeout=5).text


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


@pytest.mark.parametrize("body", [{"target": "frontdesk", "timeout_s": True}, {"target": "frontdesk", "timeout_s": "30"},
                                  {"target": "frontdesk", "caller_id": 5}, {"target": 1}])
def test_originate_body_types_are_the_schemas_not_coerced(body):
    """schemathesis found `"timeout_s": true` accepted as 1 s: a value of the wrong JSON type is a 422."""
    with control_api(originate_targets=TARGETS) as (url, app, ari, _):
        r = requests.post(f"{url}/calls", json=body, timeout=5)
        assert r.status_code == 422, (body, r.text)
        assert ari.originated == []
