"""The agents file (`VOICEAI_AGENTS_FILE`): named agents, each a copy of the settings with its own overrides.

    [agents.support]                       # Stasis(voiceai,agent=support), or Set(VOICEAI_AGENT=support)
    instructions = "You are the support line of Example Ltd. Answer in Spanish."
    voice = "cedar"
    language = "es"
    greeting_instructions = "Greet the caller in Spanish."
    transfer_targets = { human = "from-internal,600,1" }
    tools = ["hangup_call", "transfer_call"]

A key is the name of a setting without its `VOICEAI_` prefix, in lower case, with the value a TOML value of
that setting's type. Only the settings that belong to one call can be set per agent (`AGENT_FIELDS`): the
model, voice, instructions, greeting, language, turn detection, tools and their allowlists, idle prompts,
fallback, prices, recording. Keys, ARI, RTP, the control API and the process limits stay in the environment.
Every field an agent leaves out is the environment's, so with no file, or an empty one, the one agent is
`default`, exactly today's settings; an `[agents.default]` table changes that agent too.

TOML, not YAML: the parser is the standard library's (`tomllib`, Python 3.11+), so this adds no dependency,
and TOML has one obvious spelling per value (no "no" read as false, no implicit dates or octals).

Each agent is validated by the same `Settings` validators as the environment (`agent_settings`), so a bad
value stops start-up with one line naming the file, the agent and the field, like a bad variable does.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from pydantic import ValidationError

from . import ConfigError, env_name
from .settings import Settings

DEFAULT_AGENT = "default"
AGENT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_AGENTS = 100    # names become a metrics label: bounded

# the settings of one call; the rest (keys, ARI, RTP, control API, capacity, logging) are the process's
AGENT_FIELDS = frozenset({
    "provider", "model", "voice", "instructions", "transcription_model", "language", "reasoning_effort",
    "truncation", "noise_reduction", "realtime_url", "gemini_url", "gemini_model", "gemini_voice",
    "gemini_start_sensitivity", "gemini_end_sensitivity", "live_url", "live_model", "live_backend_model",
    "idle_timeout_ms", "idle_prompts", "idle_prompt", "idle_goodbye",
    "vad_threshold", "vad_prefix_padding_ms", "vad_silence_ms", "vad_type", "vad_eagerness",
    "greeting", "greeting_instructions", "greeting_sound",
    "dtmf_to_model", "dtmf_response", "dtmf_duration_ms", "dtmf_gap_ms",
    "tools", "transfer_targets", "transfer_timeout_s", "http_tool_allowlist", "http_tool_timeout_s",
    "http_tool_max_bytes", "fallback", "fallback_sound", "fallback_target",
    "price_audio_in", "price_audio_out", "price_text_in", "price_text_out", "price_cached_audio_in",
    "price_cached_text_in", "price_live_per_min", "record",
})
_ALIASED = {"openai_api_key": "OPENAI_API_KEY", "gemini_api_key": "GEMINI_API_KEY"}


def agent_settings(base: Settings, update: dict[str, Any]) -> Settings:
    """`base` with `update` applied, validated by every Settings validator (field and cross-field).
    Raises: ValueError "field: message" naming the first bad field."""
    bad = sorted(set(update) - AGENT_FIELDS)
    if bad:
        field = bad[0]
        if field in Settings.model_fields:
            raise ValueError(f"{field}: cannot be set per agent, only in the environment ({env_name(field)})")
        raise ValueError(f"{field}: unknown setting")
    data = base.model_dump()
    for name, alias in _ALIASED.items():   # these are read under their environment names only
        data[alias] = data.pop(name)
    data.update(update)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        loc = ".".join(str(x) for x in err["loc"])
        if not loc and ": " in msg:   # a model-level check names its field first
            loc, msg = msg.split(": ", 1)
        raise ValueError(f"{loc}: {msg}") from None


def read_agents(base: Settings, path: str | None = None) -> dict[str, Settings]:
    """Every agent's settings, `default` first. Without a file (`VOICEAI_AGENTS_FILE` empty): only `default`,
    which is `base`. Raises: ConfigError, one line naming the file, the agent and the field."""
    path = base.agents_file if path is None else path
    if not path:
        return {DEFAULT_AGENT: base}

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"invalid VOICEAI_AGENTS_FILE: {path}: " + " ".join(msg.split()))

    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise fail(f"cannot read it: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise fail(f"not valid TOML: {exc}") from None
    extra = sorted(set(doc) - {"agents"})
    if extra:
        raise fail(f"unknown top-level key {extra[0]!r}: agents are [agents.<name>] tables")
    tables = doc.get("agents", {})
    if not isinstance(tables, dict):
        raise fail("'agents' must be a table of [agents.<name>] tables")
    if len(tables) > MAX_AGENTS:
        raise fail(f"{len(tables)} agents; at most {MAX_AGENTS}")
    agents = {DEFAULT_AGENT: base}
    for name, table in tables.items():
        if not AGENT_NAME.fullmatch(name):
            raise fail(f"agent name {name!r} must be 1-64 letters, digits, - or _")
        if not isinstance(table, dict):
            raise fail(f"agent {name!r}: must be a table ([agents.{name}])")
        try:
            agents[name] = agent_settings(base, table)
        except ValueError as exc:
            raise fail(f"agent {name!r}: {exc}") from None
    return agents
