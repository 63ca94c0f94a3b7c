"""Agents at run time: each configured agent's settings, tools and model, which agent a call gets, and reload.

Which agent: the dialplan names it, `Stasis(voiceai,agent=support)` (a Stasis argument, first) or
`Set(VOICEAI_AGENT=support)` before `Stasis(voiceai)` (a channel variable). No name: `default`. A name that is
not configured is refused: the call gets `default`, and the reason is logged and written to the transcript.

Per-call overrides (`OVERRIDE_VARS`): a few channel variables the dialplan may set for one call, e.g. a DID's
account number in the instructions. Only these, each at most `MAX_OVERRIDE_CHARS`, validated like the
agents file; they are never secrets and never logged (only their names are).

Reload (SIGHUP, `POST /agents/reload`): the file is read and validated whole; a bad file is refused with the
error and the agents in use stay. A call keeps the `Agent` it started with for its whole life, so a reload
never changes a call in progress.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..ari import AriError, AriNotFound, AriUnavailable
from ..config import ConfigError
from ..config.agents import DEFAULT_AGENT, agent_settings, read_agents
from .tools import ToolRegistry, build_registry

if TYPE_CHECKING:
    from ..ari import AriClient
    from ..config import Settings
    from ..providers.base import ModelSession
    from ..providers.choice import DemoModels

log = logging.getLogger("voiceai.agents")

AGENT_VAR = "VOICEAI_AGENT"
AGENT_ARG = "agent="
MAX_OVERRIDE_CHARS = 1000
VAR_TIMEOUT_S = 2.0
# channel variable -> (setting, how it applies): "append" adds to the agent's value on a new line
OVERRIDE_VARS = {
    "VOICEAI_INSTRUCTIONS_SUFFIX": ("instructions", "append"),
    "VOICEAI_GREETING_INSTRUCTIONS": ("greeting_instructions", "replace"),
    "VOICEAI_LANGUAGE": ("language", "replace"),
}


@dataclass(eq=False)
class Agent:
    """One configured agent: its settings (the environment's with its overrides), tools and model sessions."""
    name: str
    settings: Settings
    tools: ToolRegistry
    make_session: Callable[[], ModelSession]
    model: str = ""       # the model name and where it is served, for logs
    url: str = ""


@dataclass(eq=False)
class CallAgent:
    """What one call gets: its agent, and the settings and sessions after the call's overrides."""
    agent: Agent
    settings: Settings
    make_session: Callable[[], ModelSession]
    refused: str = ""                                   # why the requested agent was not used ("" = it was)
    overrides: list[str] = field(default_factory=list)  # the override variables applied

    @property
    def name(self) -> str:
        return self.agent.name


def tool_registry(settings: Settings) -> ToolRegistry:
    """The agent's tools: every configured one, or the `tools` it names. Raises: ValueError."""
    full = build_registry(settings)
    if settings.tools is None:
        return full
    unknown = [n for n in settings.tools if n not in full.names]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a configured tool; configured: {', '.join(full.names)} "
                         "(transfer_call needs transfer_targets, api_call http_tool_allowlist)")
    return ToolRegistry([full._tools[n] for n in settings.tools])   # noqa: SLF001 - the same package


async def build_agent(name: str, settings: Settings, demo: DemoModels) -> Agent:
    """Raises: ConfigError (a tool setting), or what starting an embedded demo model raises (OSError)."""
    from ..cli import model_factory
    from ..providers.choice import choose_model
    try:
        tools = tool_registry(settings)
    except (ValueError, TypeError) as exc:
        what = " ".join(str(exc).split())
        if name != DEFAULT_AGENT or settings.agents_file:
            raise ConfigError(f"invalid VOICEAI_AGENTS_FILE: {settings.agents_file}: agent {name!r}: tools: {what}") \
                from None
        raise ConfigError(f"invalid VOICEAI_TOOLS: {what}") from None
    choice = await choose_model(settings, tools.declarations(), demo)
    return Agent(name, settings, tools, model_factory(settings, choice.make), choice.model, choice.url)


class AgentBook:
    """The configured agents. `current` is replaced whole by a reload; calls hold their own `Agent`."""

    def __init__(self, agents: dict[str, Agent], base: Settings, demo: DemoModels | None = None) -> None:
        self.current = agents
        self.base = base
        self.demo: DemoModels = demo if demo is not None else {}
        self.known: set[str] = set(agents)   # every name configured since start: the metrics label's values
        self.known_tools: set[str] = {t for a in agents.values() for t in a.tools.names}   # and every tool
        self.reloads = 0
        self._lock = asyncio.Lock()

    @classmethod
    def single(cls, settings: Settings, make_session: Callable[[], ModelSession], tools: ToolRegistry) -> AgentBook:
        """One agent, `default`, from ready parts (no agents file)."""
        return cls({DEFAULT_AGENT: Agent(DEFAULT_AGENT, settings, tools, make_session, settings.model)}, settings)

    @classmethod
    async def load(cls, base: Settings) -> AgentBook:
        """Every agent of `base.agents_file` (or only `default`). Raises: ConfigError, one line."""
        demo: DemoModels = {}
        return cls(await cls._build(read_agents(base), demo), base, demo)

    @staticmethod
    async def _build(specs: dict[str, Settings], demo: DemoModels) -> dict[str, Agent]:
        return {name: await build_agent(name, s, demo) for name, s in specs.items()}

    @property
    def default(self) -> Agent:
        return self.current[DEFAULT_AGENT]

    @property
    def names(self) -> list[str]:
        return list(self.current)

    async def reload(self) -> list[str]:
        """Read the file again; swap in its agents, or raise ConfigError and keep the ones in use."""
        if not self.base.agents_file:   # the environment is read once, at start: nothing to read again
            return list(self.current)
        async with self._lock:
            agents = await self._build(read_agents(self.base), self.demo)
            self.current = agents
            self.known |= set(agents)
            self.known_tools |= {t for a in agents.values() for t in a.tools.names}
            self.reloads += 1
            return list(agents)

    async def reload_logged(self) -> None:
        """SIGHUP: reload, and log the outcome (a bad file changes nothing)."""
        try:
            names = await self.reload()
        except ConfigError as exc:
            log.error("! agents not reloaded, the previous ones stay: %s", exc)
            return
        except Exception as exc:   # e.g. an embedded demo model that cannot start: same outcome
            log.error("! agents not reloaded, the previous ones stay: %s: %s", type(exc).__name__, exc)
            return
        log.info("= agents reloaded from %s: %s", self.base.agents_file or "the environment", ", ".join(names))

    async def aclose(self) -> None:
        for _, stop in self.demo.values():
            await stop()
        self.demo.clear()

    async def for_call(self, ari: AriClient, channel_id: str, args: list[str],
                       channelvars: dict[str, str | None] | None = None) -> CallAgent:
        """The agent the dialplan chose for this call, with the call's overrides. Never raises: whatever fails
        (ARI, a bad override) is logged and the call goes on with what could be decided. `channelvars`: the
        variables StasisStart carried (ari.conf `channelvars`); only the others are read over ARI."""
        agents = self.current      # one snapshot: a reload meanwhile does not mix two files
        wanted = next((a[len(AGENT_ARG):].strip() for a in args if a.startswith(AGENT_ARG)), "")
        source = "Stasis argument"
        names = [AGENT_VAR] if not wanted else []
        carried = {k: (v or "").strip() for k, v in (channelvars or {}).items()
                   if k in OVERRIDE_VARS or k == AGENT_VAR}
        values = {**carried, **await self._variables(
            ari, channel_id, [n for n in names + list(OVERRIDE_VARS) if n not in carried])}
        if not wanted and values.get(AGENT_VAR):
            wanted, source = values[AGENT_VAR], f"channel variable {AGENT_VAR}"
        agent, refused = agents[DEFAULT_AGENT], ""
        if wanted:
            if wanted in agents:
                agent = agents[wanted]
            else:
                refused = f"unknown agent {wanted[:64]!r} ({source}); configured: {', '.join(agents)}"
                log.warning("! %s: the call gets the %s agent", refused, DEFAULT_AGENT)
        chosen = CallAgent(agent, agent.settings, agent.make_session, refused)
        update = self._overrides(agent.settings, values)
        if update:
            try:
                settings = agent_settings(agent.settings, update)
                chosen = await self._with_overrides(chosen, settings)
                chosen.overrides = [v for v, (f, _) in OVERRIDE_VARS.items() if f in update]
            except Exception as exc:   # noqa: BLE001 - a bad override must not cost the call
                log.warning("! per-call overrides not applied (%s): %s", ", ".join(sorted(update)),
                            " ".join(str(exc).split())[:200])
        return chosen

    async def _with_overrides(self, chosen: CallAgent, settings: Settings) -> CallAgent:
        from ..cli import model_factory
        from ..providers.choice import choose_model
        choice = await choose_model(settings, chosen.agent.tools.declarations(), self.demo)
        return CallAgent(chosen.agent, settings, model_factory(settings, choice.make), chosen.refused)

    @staticmethod
    def _overrides(settings: Settings, values: dict[str, str]) -> dict[str, Any]:
        update: dict[str, Any] = {}
        for var, (setting, how) in OVERRIDE_VARS.items():
            value = values.get(var, "")
            if not value:
                continue
            if len(value) > MAX_OVERRIDE_CHARS:
                log.warning("! %s ignored: %d characters, at most %d", var, len(value), MAX_OVERRIDE_CHARS)
                continue
            update[setting] = f"{getattr(settings, setting)}\n{value}" if how == "append" else value
        return update

    @staticmethod
    async def _variables(ari: AriClient, channel_id: str, names: list[str]) -> dict[str, str]:
        """The channel's values of `names` ("" when unset), read in parallel."""
        if not names:
            return {}
        async def one(name: str) -> str:
            try:
                got = await asyncio.wait_for(ari.request("GET", f"/channels/{channel_id}/variable",
                                                         params={"variable": name}), VAR_TIMEOUT_S)
            except AriNotFound:      # not set (or the caller already left: the call ends on its own)
                return ""
            except (AriError, AriUnavailable, OSError, asyncio.TimeoutError, AttributeError) as exc:
                log.warning("! could not read %s of %s: %s", name, channel_id, exc)
                return ""
            value = got.get("value") if isinstance(got, dict) else None
            return value.strip() if isinstance(value, str) else ""
        return dict(zip(names, await asyncio.gather(*(one(n) for n in names)), strict=True))
