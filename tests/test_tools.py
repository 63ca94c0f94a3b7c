"""Tool layer: declarations, validation of hostile arguments, built-ins over a fake call, api_call over loopback."""

import asyncio
import json
import logging
import os
import socket
import sys

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from voiceai_ari.config import Settings
from voiceai_ari.fakes.realtime.schema import default_session, merge_session
from voiceai_ari.call.tools import (DTMF_RULE, Tool, ToolRegistry, ToolResult, TransferDestination,
                                    build_registry, tool)
from voiceai_ari.call.url_allowlist import allowed_url

MS = 0.001 * float(os.environ.get("VOICEAI_TEST_TIME_SCALE", "1"))  # scale for slow machines
TARGETS = {"sales": "from-caller,200,1", "bob": "PJSIP/bob"}


class FakeContext:
    """Records what the tools do to the call; `fail` makes every action raise."""

    def __init__(self, fail: Exception | None = None):
        self.call_id, self.caller_number = "chan-1", "+15551234567"
        self.actions: list[tuple] = []
        self.fail = fail

    def _act(self, *action):
        if self.fail:
            raise self.fail
        self.actions.append(action)

    async def hangup(self):
        self._act("hangup")

    async def send_dtmf(self, digits):
        self._act("dtmf", digits)

    async def transfer(self, destination):
        self._act("transfer", destination)


def make_settings(**kw):
    return Settings(_env_file=None, **kw)


def err(result: ToolResult) -> str:
    assert result.ok is False and result.ends_call is False
    return json.loads(result.output)["error"]


@pytest.fixture
def registry():
    return build_registry(make_settings(transfer_targets=TARGETS))


# --- declarations ----------------------------------------------------------------------------------------------

JSON_TYPES = {"object", "string", "integer", "number", "boolean", "array", "null"}


def check_schema(s):
    """A small structural JSON-schema check (no jsonschema dependency)."""
    assert isinstance(s, dict)
    if "type" in s:
        assert s["type"] in JSON_TYPES
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in s.get(key, []):
            check_schema(sub)
    if "enum" in s:
        assert isinstance(s["enum"], list) and s["enum"]
    if s.get("type") == "object":
        props = s.get("properties", {})
        assert isinstance(props, dict)
        for sub in props.values():
            check_schema(sub)
        assert set(s.get("required", [])) <= set(props)
    if "items" in s:
        check_schema(s["items"])


def test_declarations_flat_ga_shape():
    reg = build_registry(make_settings(transfer_targets=TARGETS, http_tool_allowlist=["https://api.example.com/v1/"]))
    decls = reg.declarations()
    assert reg.names == ["hangup_call", "send_dtmf", "transfer_call", "api_call"]
    for d in decls:
        assert set(d) == {"type", "name", "description", "parameters"} and d["type"] == "function"
        assert d["description"] and d["parameters"]["type"] == "object"
        check_schema(d["parameters"])
        assert "title" not in json.dumps(d["parameters"])
    assert json.loads(json.dumps(decls)) == decls
    merge_session(default_session("gpt-realtime", "sess_1"), {"type": "realtime", "tools": decls},
                  audio_produced=False)  # the fake server's GA session checker accepts them
    by = {d["name"]: d for d in decls}
    assert by["hangup_call"]["description"] == ("End the call. Say goodbye first; the call ends after your last "
                                                "words are played.")
    assert by["hangup_call"]["parameters"]["properties"] == {}
    assert by["send_dtmf"]["parameters"]["properties"]["digits"]["pattern"] == "^[0-9*#A-D]{1,32}$"
    assert by["transfer_call"]["parameters"]["properties"]["target"]["enum"] == ["sales", "bob"]
    assert by["transfer_call"]["parameters"]["required"] == ["target"]
    api = by["api_call"]["parameters"]
    assert api["properties"]["method"]["enum"] == ["GET", "POST"]  # a plain URL entry allows GET and POST
    assert api["required"] == ["endpoint"]
    assert "https://api.example.com/v1/" in by["api_call"]["description"]


def test_optional_tools_only_when_configured():
    assert build_registry(make_settings()).names == ["hangup_call", "send_dtmf"]


def test_registry_add_rejects_duplicate_and_bad_names():
    reg = ToolRegistry()
    reg.add(Tool("x", "d", {"type": "object", "properties": {}}))
    with pytest.raises(ValueError, match="duplicate"):
        reg.add(Tool("x", "d", {"type": "object"}))
    for bad in ("", "a b", "a" * 65, "x\n", "dé"):
        with pytest.raises(ValueError, match="must match"):
            reg.add(Tool(bad, "d", {"type": "object"}))


# --- built-ins -------------------------------------------------------------------------------------------------

async def test_hangup(registry):
    ctx = FakeContext()
    r = await registry.execute(ctx, "hangup_call", "{}")
    assert r == ToolResult('{"status": "hanging up"}', ok=True, ends_call=True)
    assert ctx.actions == [("hangup",)]
    assert (await registry.execute(FakeContext(), "hangup_call", "")).ok  # empty arguments mean {}


async def test_send_dtmf(registry):
    ctx = FakeContext()
    r = await registry.execute(ctx, "send_dtmf", '{"digits": "12*#AD"}')
    assert r.ok and not r.ends_call and json.loads(r.output) == {"status": "sent", "digits": "12*#AD"}
    assert ctx.actions == [("dtmf", "12*#AD")]


@pytest.mark.parametrize("args", ['{"digits": "12x"}', '{"digits": ""}', json.dumps({"digits": "1" * 33}),
                                  '{"digits": 12}', '{"digits": null}', '{"digits": "1\\n"}', '{"digits": "e"}'])
async def test_send_dtmf_refuses(registry, args):
    ctx = FakeContext()
    msg = err(await registry.execute(ctx, "send_dtmf", args))
    assert msg.startswith("Invalid arguments for send_dtmf: digits: ")
    assert ctx.actions == []
    if "12x" in args:
        assert msg == f"Invalid arguments for send_dtmf: digits: {DTMF_RULE}"


async def test_missing_and_extra_arguments(registry):
    assert err(await registry.execute(FakeContext(), "send_dtmf", "{}")) == (
        "Invalid arguments for send_dtmf: digits: Field required")
    assert "extra: Extra inputs are not permitted" in err(
        await registry.execute(FakeContext(), "hangup_call", '{"extra": 1}'))


async def test_transfer(registry):
    ctx = FakeContext()
    r = await registry.execute(ctx, "transfer_call", '{"target": "sales"}')
    assert r.ok and r.ends_call and json.loads(r.output) == {"status": "transferred", "target": "sales"}
    await registry.execute(ctx, "transfer_call", '{"target": "bob"}')
    assert ctx.actions == [("transfer", TransferDestination("sales", "from-caller", "200", 1)),
                           ("transfer", TransferDestination("bob", endpoint="PJSIP/bob"))]


async def test_failed_transfer_goes_back_to_the_model_and_the_call_goes_on(registry):
    from voiceai_ari.call.tools import TransferFailed
    ctx = FakeContext(fail=TransferFailed("bob refused the transfer (the SIP REFER was declined)"))
    msg = err(await registry.execute(ctx, "transfer_call", '{"target": "bob"}'))   # ends_call False: a reply
    assert msg == ("The transfer to bob failed: bob refused the transfer (the SIP REFER was declined). "
                   "The caller is still on the line with you; tell them.")


@pytest.mark.parametrize("target", ["nobody", "../../etc", "Sales", "sales ", "PJSIP/evil"])
async def test_transfer_refuses_unknown_target(registry, target):
    ctx = FakeContext()
    msg = err(await registry.execute(ctx, "transfer_call", json.dumps({"target": target})))
    assert f"unknown transfer target {target!r}; allowed: sales, bob" in msg
    assert ctx.actions == []


@pytest.mark.parametrize("value, expected", [
    ("from-caller,200,1", TransferDestination("t", "from-caller", "200", 1)),
    (" ctx , s , 2 ", TransferDestination("t", "ctx", "s", 2)),
    ("PJSIP/bob", TransferDestination("t", endpoint="PJSIP/bob")),
    ("Local/200@from-internal", TransferDestination("t", endpoint="Local/200@from-internal")),
])
def test_transfer_destination_parse(value, expected):
    assert TransferDestination.parse("t", value) == expected


@pytest.mark.parametrize("value", ["ctx,200,x", "ctx,200", "ctx,,1", "ctx,200,0", "bob", "/bob", "PJSIP/", "a,b/c"])
def test_transfer_destination_parse_refuses(value):
    with pytest.raises(ValueError, match="transfer target 't'"):
        TransferDestination.parse("t", value)


async def test_context_errors_become_results(registry):
    for name, args in (("hangup_call", "{}"), ("send_dtmf", '{"digits": "1"}'), ("transfer_call", '{"target": "bob"}')):
        msg = err(await registry.execute(FakeContext(fail=RuntimeError("channel gone")), name, args))
        assert msg == f"The tool {name} failed: RuntimeError: channel gone"


# --- execute: malformed calls, failures, timeouts, logging ------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    ("{not json", "The arguments for send_dtmf are not valid JSON; send a JSON object."),
    ('["1"]', "The arguments for send_dtmf must be a JSON object."),
    ("null", "The arguments for send_dtmf must be a JSON object."),
    ("[" * 100000, "The arguments for send_dtmf are not valid JSON; send a JSON object."),
])
async def test_malformed_arguments(registry, args, expected):
    assert err(await registry.execute(FakeContext(), "send_dtmf", args)) == expected


async def test_unknown_tool(registry):
    assert err(await registry.execute(FakeContext(), "format_disk", "{}")) == (
        "Unknown tool 'format_disk'. Available tools: hangup_call, send_dtmf, transfer_call.")


@tool()
async def boom(ctx):
    """Always fails."""
    raise KeyError("nope")


@tool()
async def hang(ctx):
    """Never returns."""
    await asyncio.Event().wait()


async def test_tool_raising_and_timeout():
    reg = ToolRegistry([boom, hang], timeout_s=50 * MS)
    assert err(await reg.execute(FakeContext(), "boom", "{}")) == "The tool boom failed: KeyError: 'nope'"
    assert err(await reg.execute(FakeContext(), "hang", "{}")) == (
        f"The tool hang did not finish within {50 * MS:g} s and was stopped.")


async def test_cancellation_is_not_swallowed():
    task = asyncio.create_task(ToolRegistry([hang]).execute(FakeContext(), "hang", "{}"))
    await asyncio.sleep(10 * MS)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_execution_logged(registry, caplog):
    caplog.set_level(logging.INFO, logger="voiceai_ari.call.tools")
    await registry.execute(FakeContext(), "send_dtmf", json.dumps({"digits": "1", "pad": "x" * 500}))
    (rec,) = [r for r in caplog.records if r.name == "voiceai_ari.call.tools"]
    line = rec.getMessage()
    assert rec.levelno == logging.INFO
    assert line.startswith("tool call=chan-1 name='send_dtmf' ok=False ") and " ms args='{" in line
    assert len(line.split(" args=")[1]) == 200


# --- custom tools via tool_modules -------------------------------------------------------------------------------

MODULE = '''
from __future__ import annotations
from typing import Annotated, Literal
from pydantic import Field
from voiceai_ari.call.tools import tool

@tool()
async def get_weather(ctx, *, city: Annotated[str, Field(description="city name")], days: int = 1,
                      unit: Literal["C", "F"] = "C", json: bool = False) -> dict:
    """Weather forecast for a city."""
    return {"city": city, "days": days, "unit": unit, "caller": ctx.caller_number, "json": json}

@tool(name="ping", description="Answer pong.")
async def _ping(ctx) -> str:
    return "pong"

alias = get_weather  # the same object twice: registered once
NOT_A_TOOL = 3
'''


@pytest.fixture
def tool_module(tmp_path, monkeypatch):
    (tmp_path / "voiceai_test_mytools.py").write_text(MODULE)
    (tmp_path / "voiceai_test_broken.py").write_text("raise RuntimeError('bad config')\n")
    (tmp_path / "voiceai_test_dup.py").write_text(MODULE)  # another get_weather
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "voiceai_test_mytools"
    for name in ("voiceai_test_mytools", "voiceai_test_broken", "voiceai_test_dup"):
        sys.modules.pop(name, None)


async def test_custom_tool_module(tool_module):
    reg = build_registry(make_settings(tool_modules=[tool_module]))
    assert reg.names == ["hangup_call", "send_dtmf", "get_weather", "ping"]
    decl = {d["name"]: d for d in reg.declarations()}
    assert decl["get_weather"]["description"] == "Weather forecast for a city."
    assert decl["get_weather"]["parameters"] == {
        "type": "object", "additionalProperties": False, "required": ["city"],
        "properties": {"city": {"type": "string", "description": "city name"},
                       "days": {"type": "integer", "default": 1},
                       "unit": {"type": "string", "enum": ["C", "F"], "default": "C"},
                       "json": {"type": "boolean", "default": False}}}
    r = await reg.execute(FakeContext(), "get_weather", '{"city": "Oslo", "days": "3"}')
    assert r.ok and json.loads(r.output) == {"city": "Oslo", "days": 3, "unit": "C", "caller": "+15551234567",
                                             "json": False}
    assert json.loads((await reg.execute(FakeContext(), "ping", "{}")).output) == {"result": "pong"}
    msg = err(await reg.execute(FakeContext(), "get_weather", '{"days": "many", "unit": "K"}'))
    assert msg.startswith("Invalid arguments for get_weather: city: Field required; days: Input should be a valid "
                          "integer") and "unit: Input should be 'C' or 'F'" in msg


def test_bad_tool_modules(tool_module):
    with pytest.raises(ValueError, match="cannot import tool module 'voiceai_no_such_module'"):
        build_registry(make_settings(tool_modules=["voiceai_no_such_module"]))
    with pytest.raises(ValueError, match="cannot import tool module 'voiceai_test_broken': RuntimeError: bad config"):
        build_registry(make_settings(tool_modules=["voiceai_test_broken"]))
    with pytest.raises(ValueError, match="duplicate tool name 'get_weather'"):
        build_registry(make_settings(tool_modules=[tool_module, "voiceai_test_dup"]))


def test_tool_decorator_refuses_bad_functions():
    with pytest.raises(TypeError, match="async def"):
        tool()(lambda ctx: None)
    with pytest.raises(ValueError, match="docstring"):
        @tool()
        async def nodoc(ctx):
            pass
    with pytest.raises(ValueError, match="must match"):
        tool(name="bad name", description="d")(boom.fn)
    with pytest.raises(TypeError, match="'kw'"):
        @tool(description="d")
        async def star(ctx, **kw):
            pass


# --- api_call over loopback ---------------------------------------------------------------------------------------

class FakeApi:
    def __init__(self):
        self.hits: list[str] = []
        self.release = asyncio.Event()

    def app(self):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, req):
        self.hits.append(f"{req.method} {req.path_qs}")
        p = req.path
        if p == "/api/items/42":
            return web.json_response({"id": 42, "name": "widget"})
        if p == "/api/echo":
            body = await req.json() if req.can_read_body else None
            return web.json_response({"method": req.method, "query": dict(req.query), "payload": body}, status=201)
        if p == "/api/fail":
            return web.Response(status=500, text="boom")
        if p == "/api/huge":
            return web.json_response({"data": "x" * 100_000})
        if p == "/api/redirect":
            raise web.HTTPFound(req.query.get("to", "/private"))
        if p == "/api/slow":
            await asyncio.wait_for(self.release.wait(), 5)
            return web.json_response({"late": True})
        return web.Response(status=404, text="not here")


@pytest.fixture
async def api():
    fake = FakeApi()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    fake.registry = build_registry(make_settings(http_tool_allowlist=[fake.url + "/api/"],
                                                 http_tool_timeout_s=300 * MS, http_tool_max_bytes=1024))
    yield fake
    fake.release.set()
    await runner.cleanup()


async def call_api(api, **args):
    return await api.registry.execute(FakeContext(), "api_call", json.dumps(args))


async def test_api_get_json(api):
    r = await call_api(api, endpoint="items/42")
    assert r.ok and json.loads(r.output) == {"status": 200, "body": {"id": 42, "name": "widget"}, "truncated": False}
    assert (await call_api(api, endpoint=api.url + "/api/items/42")).output == r.output  # full URL under the base


async def test_api_post_and_get_payload(api):
    r = await call_api(api, endpoint="echo", method="POST", payload={"a": [1, 2], "b": "x"})
    assert json.loads(r.output) == {"status": 201, "truncated": False,
                                    "body": {"method": "POST", "query": {}, "payload": {"a": [1, 2], "b": "x"}}}
    r = await call_api(api, endpoint="echo", method="GET", payload={"q": "new york", "n": 2, "f": True})
    assert json.loads(r.output)["body"]["query"] == {"q": "new york", "n": "2", "f": "true"}


async def test_api_non_2xx_is_ok_for_the_model(api):
    r = await call_api(api, endpoint="fail")
    assert r.ok and json.loads(r.output) == {"status": 500, "body": "boom", "truncated": False}


async def test_api_body_capped(api):
    r = await call_api(api, endpoint="huge")
    out = json.loads(r.output)
    assert r.ok and out["truncated"] is True and out["status"] == 200
    assert isinstance(out["body"], str) and len(out["body"]) == 1024 and out["body"].startswith('{"data": "xxx')


@pytest.mark.parametrize("to", ["/private", "http://evil.invalid/steal"])
async def test_api_redirect_not_followed(api, to):
    r = await call_api(api, endpoint=f"redirect?to={to}")
    assert r.ok and json.loads(r.output)["status"] == 302
    assert api.hits == [f"GET /api/redirect?to={to}"]


async def test_api_timeout(api):
    msg = err(await call_api(api, endpoint="slow"))
    assert msg == f"GET {api.url}/api/slow timed out after {300 * MS:g} s."


async def test_api_network_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connection refused
    reg = build_registry(make_settings(http_tool_allowlist=[f"http://127.0.0.1:{port}/"]))
    msg = err(await reg.execute(FakeContext(), "api_call", '{"endpoint": "x"}'))
    assert msg.startswith(f"GET http://127.0.0.1:{port}/x failed: ClientConnectorError")


async def test_api_refuses_outside_endpoint(api):
    msg = err(await call_api(api, endpoint="//evil.com/x"))
    assert "is not under an allowed base URL" in msg and api.hits == []
    assert "Invalid arguments for api_call: method: " in err(await call_api(api, endpoint="x", method="TRACE"))


def method_registry(api, allowlist):
    return build_registry(make_settings(http_tool_allowlist=allowlist, http_tool_timeout_s=300 * MS))


async def test_api_plain_base_allows_get_and_post_only(api):
    """A plain URL entry (the original config format) allows GET and POST; the other methods are refused
    back to the model and nothing reaches the server."""
    for method in ("PUT", "PATCH", "DELETE"):
        msg = err(await call_api(api, endpoint="echo", method=method, payload={"a": 1}))
        assert msg.startswith("Invalid arguments for api_call: method: Input should be 'GET' or 'POST'"), msg
    assert api.hits == []
    assert json.loads((await call_api(api, endpoint="echo", method="POST", payload={"a": 1})).output)["status"] == 201
    assert api.hits == ["POST /api/echo"]


async def test_api_methods_per_base(api):
    reg = method_registry(api, [api.url + "/api/", {"url": api.url + "/api/items/", "methods": ["get", "PUT"]}])
    decl = next(d for d in reg.declarations() if d["name"] == "api_call")
    assert decl["parameters"]["properties"]["method"]["enum"] == ["GET", "POST", "PUT"]
    assert f"{api.url}/api/ (GET, POST); {api.url}/api/items/ (GET, PUT)" in decl["description"]

    async def run(endpoint, method):
        return await reg.execute(FakeContext(), "api_call", json.dumps({"endpoint": endpoint, "method": method}))

    # PUT is allowed for /api/items/ only; POST is not allowed there (the most specific base decides)
    assert err(await run("echo", "PUT")) == (f"method PUT is not allowed under {api.url}/api/ (allowed: GET, POST); "
                                             "nothing was sent")
    assert err(await run(api.url + "/api/items/42", "POST")) == (
        f"method POST is not allowed under {api.url}/api/items/ (allowed: GET, PUT); nothing was sent")
    assert "Invalid arguments for api_call: method: " in err(await run(api.url + "/api/items/42", "DELETE"))
    assert api.hits == []
    assert (await run(api.url + "/api/items/42", "PUT")).ok
    assert (await run("echo", "POST")).ok
    assert api.hits == ["PUT /api/items/42", "POST /api/echo"]


@pytest.mark.parametrize("allowlist", [
    '[{"url": "https://a.example/", "methods": []}]', '[{"url": "https://a.example/", "methods": ["TRACE"]}]',
    '[{"url": "ftp://a.example/"}]', '[{"url": "https://a.example/", "verbs": ["GET"]}]', '[42]',
])
def test_http_allowlist_bad_entries_are_config_errors(monkeypatch, allowlist):
    from voiceai_ari.config import ConfigError, load_settings
    monkeypatch.setenv("VOICEAI_HTTP_TOOL_ALLOWLIST", allowlist)
    with pytest.raises(ConfigError, match="^invalid VOICEAI_HTTP_TOOL_ALLOWLIST: "):
        load_settings(_env_file=None)


def test_allowed_url_checks_the_method_of_the_most_specific_base():
    class Base:
        def __init__(self, url, methods):
            self.url, self.methods = url, methods

    bases = ["https://x.example/v1/", Base("https://x.example/v1/admin/", ("GET",))]
    assert allowed_url(bases, "users", "POST") == "https://x.example/v1/users"
    assert allowed_url(bases, "admin/users", "GET") == "https://x.example/v1/admin/users"
    with pytest.raises(ValueError, match="method POST is not allowed under https://x.example/v1/admin/"):
        allowed_url(bases, "admin/users", "POST")
    with pytest.raises(ValueError, match="method DELETE is not allowed under https://x.example/v1/ "):
        allowed_url(bases, "users", "DELETE")


# --- URL allowlist ----------------------------------------------------------------------------------------------

BASES = ["http://127.0.0.1:8080/api/", "https://api.example.com/v1"]


@pytest.mark.parametrize("endpoint, url", [
    ("items/42", "http://127.0.0.1:8080/api/items/42"),
    ("items?q=a%20b", "http://127.0.0.1:8080/api/items?q=a%20b"),
    ("", "http://127.0.0.1:8080/api/"),
    ("https://api.example.com/v1/users", "https://api.example.com/v1/users"),
    ("https://API.example.com/v1", "https://API.example.com/v1"),
])
def test_allowed_url_accepts(endpoint, url):
    assert allowed_url(BASES, endpoint) == url


@pytest.mark.parametrize("endpoint", [
    "http://evil.com/x", "//evil.com/x", "../admin", "%2e%2e/admin", "%252e%252e/admin", "items/..%2f..%2fadmin",
    "http://127.0.0.1:9999@evil.com/", "http://127.0.0.1:8080@evil.com/api/", "\\\\evil", "..\\admin", "%5c%5cevil",
    "ftp://127.0.0.1:8080/api/x", "file:///etc/passwd", "javascript:alert(1)", "/admin", "/apix/y",
    "http://127.0.0.1:8081/api/x", "https://127.0.0.1:8080/api/x", "http://127.0.0.1/api/x",
    "https://api.example.com/v2/users", "https://api.example.com/v1x", "http://api.example.com/v1/x",
    "items/42\r\nHost: evil", "items 42", "https://user:pw@api.example.com/v1/",
])
def test_allowed_url_refuses_hostile(endpoint):
    with pytest.raises(ValueError):
        allowed_url(BASES, endpoint)


@given(st.text(max_size=80))
def test_allowed_url_stays_under_a_base(endpoint):
    try:
        url = allowed_url(BASES, endpoint)
    except ValueError:
        return
    assert url.startswith("http://127.0.0.1:8080/api/") or url.lower().startswith("https://api.example.com/v1")
    assert ".." not in url and "@" not in url and "\\" not in url


# --- property: execute never raises -------------------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                           max_leaves=8)
arguments = st.one_of(
    st.text(),
    json_values.map(json.dumps),
    st.fixed_dictionaries({}, optional={"digits": json_values | st.text("0123456789*#ABCDx", max_size=40),
                                        "target": json_values | st.sampled_from(["sales", "bob", "x"]),
                                        "endpoint": st.text()}).map(json.dumps),
)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["hangup_call", "send_dtmf", "transfer_call", "api_call"]) | st.text(),
       args=arguments)
async def test_execute_never_raises(name, args):
    reg = build_registry(make_settings(transfer_targets=TARGETS))  # no api_call: no network in this test
    r = await reg.execute(FakeContext(), name, args)
    assert isinstance(r, ToolResult) and isinstance(json.loads(r.output), dict)


def test_tool_schema_keeps_a_property_named_title():
    @tool(description="d")
    async def note(ctx, *, title: str, properties: int = 0):
        return {}

    assert note.parameters["properties"] == {"title": {"type": "string"},
                                             "properties": {"type": "integer", "default": 0}}
    with pytest.raises(TypeError, match="call context"):
        tool(description="d")(_no_ctx)


async def _no_ctx():
    pass
