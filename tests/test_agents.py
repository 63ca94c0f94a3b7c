"""Agents per call (VOICEAI_AGENTS_FILE): the file's validation, the choice by Stasis argument or channel
variable, per-call overrides, reload, and where the agent shows (transcript, logs, /calls, metrics, check).

The same through the real Asterisk sandbox, with two agents heard by two callers: tests/e2e/test_agents.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from voiceai_ari.ari import AriNotFound
from voiceai_ari.call.agents import MAX_OVERRIDE_CHARS, AgentBook, tool_registry
from voiceai_ari.config import ConfigError, load_settings
from voiceai_ari.config.agents import AGENT_FIELDS, read_agents
from voiceai_ari.operate.check import agents_step
from voiceai_ari.providers.gemini_live.protocol import GeminiConfig
from voiceai_ari.providers.openai_realtime.session_config import SessionConfig

pytestmark = pytest.mark.usefixtures("clean_env")   # tests/conftest.py

KEY = "sk-agents-test-0123456789"
AGENTS = """
[agents.support]
instructions = "You are the support line."
voice = "cedar"
language = "es"
greeting_instructions = "Greet in Spanish."
transfer_targets = { human = "from-caller,200,1" }
tools = ["hangup_call", "transfer_call"]
vad_silence_ms = 800
record = false

[agents.sales]
instructions = "You are sales."
price_audio_out = 16.0
"""


def agents_file(tmp_path, text: str = AGENTS, name: str = "agents.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def settings(tmp_path, text: str = AGENTS, **kw):
    kw.setdefault("OPENAI_API_KEY", KEY)
    return load_settings(_env_file=None, agents_file=agents_file(tmp_path, text), **kw)


# --- the file ----------------------------------------------------------------------------------------------
def test_without_a_file_the_one_agent_is_default_made_of_the_environment():
    base = load_settings(_env_file=None, voice="ash")
    assert read_agents(base) == {"default": base}


def test_an_agent_overrides_what_it_sets_and_the_environment_gives_the_rest(tmp_path):
    base = settings(tmp_path, voice="ash", instructions="env instructions", vad_threshold=0.7)
    agents = read_agents(base)
    assert list(agents) == ["default", "support", "sales"]
    support, sales = agents["support"], agents["sales"]
    assert (support.instructions, support.voice, support.language, support.vad_silence_ms, support.record) == \
        ("You are the support line.", "cedar", "es", 800, False)
    assert support.transfer_targets == {"human": "from-caller,200,1"}
    assert (sales.instructions, sales.voice, sales.price_audio_out, sales.record) == \
        ("You are sales.", "ash", 16.0, True)
    assert support.vad_threshold == sales.vad_threshold == 0.7            # not set: the environment's
    assert support.openai_api_key.get_secret_value() == KEY               # keys stay the environment's
    assert agents["default"] is base


def test_default_can_be_changed_in_the_file(tmp_path):
    agents = read_agents(settings(tmp_path, '[agents.default]\nvoice = "verse"\n', voice="ash"))
    assert list(agents) == ["default"] and agents["default"].voice == "verse"


@pytest.mark.parametrize(("text", "message"), [
    ('[agents.support]\nvad_threshold = 3\n',
     "agent 'support': vad_threshold: Input should be less than or equal to 1"),
    ('[agents.support]\ngreeting = "loud"\n', "agent 'support': greeting: Input should be 'none', 'model' or 'sound'"),
    ('[agents.support]\nari_url = "http://10.0.0.1:8088"\n',
     "agent 'support': ari_url: cannot be set per agent, only in the environment (VOICEAI_ARI_URL)"),
    ('[agents.support]\nopenai_api_key = "sk-other"\n', "agent 'support': openai_api_key: cannot be set per agent"),
    ('[agents.support]\nvoise = "cedar"\n', "agent 'support': voise: unknown setting"),
    ('[agents.support]\nidle_timeout_ms = 5000\nvad_type = "semantic_vad"\n',
     "agent 'support': idle_timeout_ms: works with VOICEAI_VAD_TYPE=server_vad only"),
    ('[agents.support]\ntransfer_targets = { human = "no such place" }\n', "agent 'support': transfer_targets: "),
    ('[agents."sup port"]\nvoice = "x"\n', "agent name 'sup port' must be 1-64 letters, digits, - or _"),
    ('[agents.support\nvoice = "x"\n', "not valid TOML: "),
    ('voice = "x"\n', "unknown top-level key 'voice': agents are [agents.<name>] tables"),
])
def test_a_bad_agent_is_one_line_naming_the_file_the_agent_and_the_field(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        read_agents(settings(tmp_path, text))
    line = str(err.value)
    assert line.startswith(f"invalid VOICEAI_AGENTS_FILE: {tmp_path / 'agents.toml'}: ") and message in line, line
    assert "\n" not in line


def test_a_missing_file_is_named(tmp_path):
    s = load_settings(_env_file=None, agents_file=str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match=r"nope.toml: cannot read it: No such file"):
        read_agents(s)


def test_only_per_call_settings_are_agent_fields():
    process = {"ari_url", "ari_password", "rtp_host", "rtp_ports", "control_port", "control_token", "max_calls",
               "openai_api_key", "gemini_api_key", "credentials", "agents_file", "transcript_dir", "tool_modules",
               "log_level", "originate_targets", "return_codec"}
    assert not process & AGENT_FIELDS
    assert {"instructions", "voice", "greeting", "language", "tools", "transfer_targets", "http_tool_allowlist",
            "idle_prompt", "vad_silence_ms", "record", "price_audio_in", "provider", "model"} <= AGENT_FIELDS


def test_cli_refuses_a_bad_agents_file_with_one_line_and_exit_2(tmp_path):
    path = agents_file(tmp_path, '[agents.sales]\nvad_silence_ms = 5\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEAI_") and k != "OPENAI_API_KEY"}
    env.update(VOICEAI_AGENTS_FILE=path)
    p = subprocess.run([sys.executable, "-m", "voiceai_ari", "run"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"voiceai-ari: invalid VOICEAI_AGENTS_FILE: {path}: agent 'sales': vad_silence_ms: Input should be "
        "greater than or equal to 50"], p.stderr


# --- tools -------------------------------------------------------------------------------------------------
def test_an_agent_gets_the_tools_it_names(tmp_path):
    agents = read_agents(settings(tmp_path))
    assert tool_registry(agents["support"]).names == ["hangup_call", "transfer_call"]
    assert tool_registry(agents["sales"]).names == ["hangup_call", "send_dtmf"]   # unset: every configured tool
    assert tool_registry(load_settings(_env_file=None, tools=[])).names == []


async def test_a_tool_that_is_not_configured_is_refused_at_start(tmp_path):
    s = settings(tmp_path, '[agents.sales]\ntools = ["transfer_call"]\n')
    with pytest.raises(ConfigError, match=r"agent 'sales': tools: 'transfer_call' is not a configured tool; "
                                          r"configured: hangup_call, send_dtmf"):
        await AgentBook.load(s)


# --- the choice per call -----------------------------------------------------------------------------------
class VarAri:
    """ARI's GET /channels/{id}/variable over fixed channel variables (404 for an unset one)."""

    def __init__(self, **variables: str) -> None:
        self.variables, self.asked = variables, []

    async def request(self, method, path, *, params=None, json=None):
        assert method == "GET" and path == "/channels/ch-1/variable"
        self.asked.append(params["variable"])
        if params["variable"] not in self.variables:
            raise AriNotFound(404, "Provided variable was not found", method, path)
        return {"value": self.variables[params["variable"]]}


@pytest.fixture
async def book(tmp_path):
    b = await AgentBook.load(settings(tmp_path))
    yield b
    await b.aclose()


async def test_the_stasis_argument_chooses_the_agent(book):
    chosen = await book.for_call(VarAri(VOICEAI_AGENT="sales"), "ch-1", ["agent=support"])
    assert chosen.name == "support" and chosen.settings.voice == "cedar" and not chosen.refused
    assert chosen.agent.tools.names == ["hangup_call", "transfer_call"]


async def test_the_channel_variable_chooses_the_agent_without_an_argument(book):
    chosen = await book.for_call(VarAri(VOICEAI_AGENT="sales"), "ch-1", ["outbound"])
    assert chosen.name == "sales" and chosen.settings.instructions == "You are sales."


async def test_no_choice_is_the_default_agent(book):
    chosen = await book.for_call(VarAri(), "ch-1", [])
    assert chosen.name == "default" and chosen.settings is book.default.settings and not chosen.refused


async def test_an_unknown_agent_goes_to_default_and_the_reason_is_logged(book, caplog):
    with caplog.at_level(logging.WARNING, logger="voiceai.agents"):
        chosen = await book.for_call(VarAri(), "ch-1", ["agent=no-such-agent"])
    assert chosen.name == "default"
    assert chosen.refused == ("unknown agent 'no-such-agent' (Stasis argument); configured: default, support, "
                              "sales")
    assert [r.getMessage() for r in caplog.records] == [f"! {chosen.refused}: the call gets the default agent"]


async def test_per_call_overrides_from_channel_variables(book):
    ari = VarAri(VOICEAI_INSTRUCTIONS_SUFFIX="The caller's account number is 4711.",
                 VOICEAI_GREETING_INSTRUCTIONS="Greet account 4711 by name.", VOICEAI_LANGUAGE="de")
    chosen = await book.for_call(ari, "ch-1", ["agent=support"])
    assert chosen.settings.instructions == "You are the support line.\nThe caller's account number is 4711."
    assert chosen.settings.greeting_instructions == "Greet account 4711 by name."
    assert chosen.settings.language == "de"
    assert chosen.overrides == ["VOICEAI_INSTRUCTIONS_SUFFIX", "VOICEAI_GREETING_INSTRUCTIONS", "VOICEAI_LANGUAGE"]
    # the model session is built from the overridden settings: its session.update carries them
    session = chosen.make_session()
    assert session.proto.config.instructions.endswith("account number is 4711.")
    assert book.current["support"].settings.instructions == "You are the support line."   # the agent is untouched


async def test_an_override_too_long_or_invalid_is_ignored_and_logged(book, caplog):
    ari = VarAri(VOICEAI_INSTRUCTIONS_SUFFIX="x" * (MAX_OVERRIDE_CHARS + 1))
    with caplog.at_level(logging.WARNING, logger="voiceai.agents"):
        chosen = await book.for_call(ari, "ch-1", [])
        bad_language = await book.for_call(VarAri(VOICEAI_LANGUAGE="not a language"), "ch-1", [])
    assert chosen.settings.instructions == book.default.settings.instructions and not chosen.overrides
    assert bad_language.settings.language == "" and not bad_language.overrides
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == f"! VOICEAI_INSTRUCTIONS_SUFFIX ignored: {MAX_OVERRIDE_CHARS + 1} characters, at most " \
                          f"{MAX_OVERRIDE_CHARS}"
    assert messages[1].startswith("! per-call overrides not applied (language): language: String should match")
    assert "not a language" not in " ".join(messages)   # values are not logged, only names


async def test_ari_failing_leaves_the_call_with_the_default_agent(book):
    class DownAri:
        async def request(self, *a, **kw):
            raise OSError("connection refused")
    chosen = await book.for_call(DownAri(), "ch-1", [])
    assert chosen.name == "default"


# --- reload --------------------------------------------------------------------------------------------------
async def test_reload_swaps_the_agents_and_a_call_keeps_the_one_it_started_with(tmp_path, book):
    before = await book.for_call(VarAri(), "ch-1", ["agent=support"])
    agents_file(tmp_path, '[agents.support]\nvoice = "verse"\n[agents.billing]\nvoice = "sage"\n')
    assert await book.reload() == ["default", "support", "billing"]
    after = await book.for_call(VarAri(), "ch-1", ["agent=support"])
    assert (before.settings.voice, after.settings.voice) == ("cedar", "verse")
    assert before.agent.settings.voice == "cedar"          # what the call in progress holds did not change
    assert book.known == {"default", "support", "sales", "billing"} and book.reloads == 1


async def test_a_bad_file_on_reload_is_refused_and_the_agents_in_use_stay(tmp_path, book, caplog):
    in_use = book.current
    agents_file(tmp_path, '[agents.support]\nvoice = 7\n')
    with pytest.raises(ConfigError, match=r"agent 'support': voice: Input should be a valid string"):
        await book.reload()
    assert book.current is in_use
    with caplog.at_level(logging.ERROR, logger="voiceai.agents"):
        await book.reload_logged()      # SIGHUP's path: logged, nothing raised
    assert book.current is in_use and book.reloads == 0
    assert caplog.records[0].getMessage().startswith("! agents not reloaded, the previous ones stay: invalid "
                                                     "VOICEAI_AGENTS_FILE: ")


# --- providers get the language --------------------------------------------------------------------------------
def test_the_language_reaches_the_providers():
    s = load_settings(_env_file=None, language="es-MX")
    realtime = SessionConfig.from_settings(s, []).session()
    assert realtime["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe", "language": "es"}
    assert "language" not in SessionConfig.from_settings(load_settings(_env_file=None), []).session()["audio"][
        "input"]["transcription"]
    gemini = GeminiConfig(language="es-MX").setup()["setup"]
    assert gemini["generationConfig"]["speechConfig"]["languageCode"] == "es-MX"
    assert "languageCode" not in GeminiConfig().setup()["setup"]["generationConfig"]["speechConfig"]


# --- check ---------------------------------------------------------------------------------------------------
def test_check_lists_the_agents(tmp_path):
    step = agents_step(settings(tmp_path))
    assert step.ok
    assert step.detail == (f"default (openai-realtime gpt-realtime-2.1, voice marin), support (openai-realtime "
                           f"gpt-realtime-2.1, voice cedar), sales (openai-realtime gpt-realtime-2.1, voice marin) "
                           f"from {tmp_path / 'agents.toml'}")
    bad = agents_step(settings(tmp_path, '[agents.sales]\ntools = ["api_call"]\n'))
    assert not bad.ok and "agent 'sales': tools: 'api_call' is not a configured tool" in bad.detail


def test_json_log_lines_of_a_call_carry_its_agent():
    from voiceai_ari.operate.logs import JsonFormatter, RedactSecrets, call_agent, call_id
    rec = logging.LogRecord("voiceai.call", logging.INFO, __file__, 1, "= call up", None, None)
    t1, t2 = call_id.set("1733.1"), call_agent.set("support")
    try:
        RedactSecrets([]).filter(rec)
    finally:
        call_id.reset(t1)
        call_agent.reset(t2)
    line = json.loads(JsonFormatter().format(rec))
    assert (line["call"], line["agent"]) == ("1733.1", "support")


# --- the app: the agent a call gets, and where it shows --------------------------------------------------
class SlowVarAri(VarAri):
    """Channel variables answered after `delay` s; a call's set-up then waits at externalMedia."""

    reconnects = 0

    def __init__(self, delay: float = 0.0, **variables: str) -> None:
        super().__init__(**variables)
        self.delay, self.hung_up = delay, []

    async def request(self, method, path, *, params=None, json=None):
        await asyncio.sleep(self.delay)
        return await super().request(method, path, params=params, json=json)

    async def external_media(self, **kw):
        await asyncio.Event().wait()

    async def hangup(self, channel_id, reason="normal"):
        self.hung_up.append(channel_id)
        return True

    async def delete_bridge(self, bridge_id):
        return True


@pytest.fixture
def make_app(book, tmp_path, built_apps):
    from voiceai_ari.call.app import VoiceAiApp

    def make(ari):
        s = book.base.model_copy(update={"transcript_dir": str(tmp_path / "transcripts"), "rtp_ports": "47910-47919"})
        app = VoiceAiApp(s, model_factory=book.default.make_session, tools=book.default.tools, agents=book)
        app.ari = ari
        built_apps.append(app)
        return app

    return make


def stasis_start(*args: str, event: str = "StasisStart"):
    from voiceai_ari.ari import AriEvent, Channel
    return AriEvent(type=event, application="voiceai", args=list(args),
                    channel=Channel(id="ch-1", name="PJSIP/phone-ch-1", state="Ring"))


async def until(predicate, timeout: float = 2.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_a_call_shows_its_agent_in_calls_transcript_and_metrics(make_app, tmp_path):
    from voiceai_ari.operate.control import call_summary
    app = make_app(SlowVarAri())
    app.dispatch(stasis_start("agent=support"))
    await until(lambda: "ch-1" in app.calls)
    call = app.calls["ch-1"]
    assert call.agent == "support" and call.settings.voice == "cedar"
    assert call_summary(call)["agent"] == "support"
    metrics = app.metrics.exposition().decode()
    assert 'voiceai_agent_calls_total{agent="support"} 1.0' in metrics
    assert 'voiceai_agent_calls_total{agent="sales"} 0.0' in metrics
    await until(lambda: (tmp_path / "transcripts").exists() and any((tmp_path / "transcripts").iterdir()))
    call.end("test over")
    await until(lambda: not app.calls)
    [path] = (tmp_path / "transcripts").glob("*.jsonl")
    start = json.loads(path.read_text().splitlines()[0])
    assert (start["event"], start["agent"]) == ("call_start", "support")


async def test_an_unknown_agent_is_in_the_transcript_and_the_call_gets_default(make_app, tmp_path):
    app = make_app(SlowVarAri())
    app.dispatch(stasis_start("agent=no-such-agent"))
    await until(lambda: "ch-1" in app.calls)
    assert app.calls["ch-1"].agent == "default"
    app.calls["ch-1"].end("test over")
    await until(lambda: not app.calls)
    [path] = (tmp_path / "transcripts").glob("*.jsonl")
    start = json.loads(path.read_text().splitlines()[0])
    assert start["agent"] == "default" and start["agent_refused"].startswith("unknown agent 'no-such-agent'")


async def test_events_that_arrive_while_the_agent_is_chosen_reach_the_call(make_app):
    """The caller hangs up while the channel variables are being read: the call still sees it and ends, and
    holds its slot meanwhile."""
    ari = SlowVarAri(delay=0.2, VOICEAI_AGENT="sales")
    app = make_app(ari)
    app.dispatch(stasis_start())
    assert app.slots_used() == 1 and not app.calls
    app.dispatch(stasis_start(event="StasisEnd"))
    await until(lambda: "ch-1" in app.calls or app.total_calls and not app._pending)
    await until(lambda: not app.calls)
    assert app.slots_used() == 0 and app.calls_by_agent == {"sales": 1}


def test_control_api_lists_and_reloads_the_agents(tmp_path):
    import requests

    from tests.test_control import serve_in_thread, stop_in_thread
    path = agents_file(tmp_path)
    loop, box = serve_in_thread(agents_file=path, OPENAI_API_KEY=KEY)
    url = f"http://127.0.0.1:{box['api'].port}"
    try:
        listed = requests.get(f"{url}/agents", timeout=5).json()
        assert [a["name"] for a in listed["agents"]] == ["default"] and listed["file"] == path   # as built
        r = requests.post(f"{url}/agents/reload", json={}, timeout=5)
        assert r.status_code == 200 and r.json() == {"status": "reloaded", "agents": ["default", "support", "sales"]}
        support = next(a for a in requests.get(f"{url}/agents", timeout=5).json()["agents"] if a["name"] == "support")
        assert support == {"name": "support", "provider": "openai-realtime", "model": "gpt-realtime-2.1",
                           "voice": "cedar", "tools": ["hangup_call", "transfer_call"]}
        agents_file(tmp_path, "[agents.support]\nvad_threshold = 2\n")
        r = requests.post(f"{url}/agents/reload", json={}, timeout=5)
        assert r.status_code == 422
        assert r.json()["error"].endswith("agent 'support': vad_threshold: Input should be less than or equal to 1")
        assert [a["name"] for a in requests.get(f"{url}/agents", timeout=5).json()["agents"]] == \
            ["default", "support", "sales"]   # the previous agents stay
        assert requests.post(f"{url}/agents/reload", data="{}", timeout=5).status_code == 415   # the POST guard
    finally:
        stop_in_thread(loop, box)


def test_the_example_agents_file_is_valid():
    """examples/agents.toml, which docs/agents.md points to, loads as it stands."""
    from pathlib import Path
    path = Path(__file__).parent.parent / "examples" / "agents.toml"
    agents = read_agents(load_settings(_env_file=None, agents_file=str(path)))
    assert list(agents) == ["default", "support", "afterhours"]
    assert [tool_registry(s).names for s in agents.values()] == [
        ["hangup_call", "send_dtmf", "transfer_call"], ["hangup_call", "transfer_call", "api_call"], ["hangup_call"]]


async def test_tool_metrics_count_every_agents_tools_by_name(tmp_path):
    """transfer_call is support's only (default has no transfer targets): its calls count under its name."""
    from voiceai_ari.call.app import VoiceAiApp
    b = await AgentBook.load(settings(tmp_path))
    app = VoiceAiApp(b.base, model_factory=b.default.make_session, tools=b.default.tools, agents=b)
    assert "transfer_call" not in b.default.tools.names
    app.metrics.tool_called("transfer_call", True)
    app.metrics.tool_called("made_up", True)
    assert app.metrics.tools == {("transfer_call", "ok"): 1, ("unknown", "ok"): 1}
    await b.aclose()


async def test_variables_carried_by_stasis_start_are_not_read_again(book):
    """With ari.conf `channelvars = VOICEAI_AGENT,...`, StasisStart carries them (unset ones as ""): no ARI
    request is made for those."""
    ari = VarAri(VOICEAI_AGENT="support")
    carried = {"VOICEAI_AGENT": "sales", "VOICEAI_INSTRUCTIONS_SUFFIX": "Account 4711.",
               "VOICEAI_GREETING_INSTRUCTIONS": "", "VOICEAI_LANGUAGE": None, "OTHER": "x"}
    chosen = await book.for_call(ari, "ch-1", [], carried)
    assert chosen.name == "sales" and chosen.settings.instructions == "You are sales.\nAccount 4711."
    assert ari.asked == []
    partly = VarAri(VOICEAI_LANGUAGE="de")
    chosen = await book.for_call(partly, "ch-1", ["agent=support"], {"VOICEAI_AGENT": ""})
    assert chosen.name == "support" and chosen.settings.language == "de"
    assert sorted(partly.asked) == ["VOICEAI_GREETING_INSTRUCTIONS", "VOICEAI_INSTRUCTIONS_SUFFIX", "VOICEAI_LANGUAGE"]


async def test_voiceai_tools_naming_an_unconfigured_tool_is_refused_at_start():
    with pytest.raises(ConfigError, match=r"^invalid VOICEAI_TOOLS: 'nope' is not a configured tool; configured: "
                                          r"hangup_call, send_dtmf"):
        await AgentBook.load(load_settings(_env_file=None, tools=["nope"], OPENAI_API_KEY=KEY))
