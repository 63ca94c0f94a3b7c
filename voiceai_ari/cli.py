"""Command line: `voiceai-ari run` (serve calls), `voiceai-ari check`, and the fake model servers
`voiceai-ari fake-realtime` / `voiceai-ari fake-gemini` / `voiceai-ari fake-live`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from .config import ConfigError, Settings, load_settings
from .operate.logs import setup_logging

if TYPE_CHECKING:
    from .call.tools import ToolRegistry
    from .providers.base import ModelSession

log = logging.getLogger("voiceai")

DEMO_CALL_WARNING = ("offline demo call: the caller gets the echo demo model, not the real one (no API key for "
                     "the provider: OPENAI_API_KEY, or GEMINI_API_KEY for gemini-live; VOICEAI_DEMO=off refuses "
                     "to start without it)")


def offline_banner(settings: Settings) -> str:
    key = "GEMINI_API_KEY" if settings.provider == "gemini-live" else "OPENAI_API_KEY"
    return (f"{key} is not set: serving calls with the OFFLINE DEMO MODEL (an embedded fake {settings.provider} "
            "server in echo mode: the bot repeats what the caller said). VOICEAI_DEMO=off makes a missing key a "
            "start-up error.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voiceai-ari", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="serve calls from the Stasis app (reads VOICEAI_* settings)")
    sub.add_parser("fake-realtime", help="run the fake Realtime server", add_help=False)
    sub.add_parser("fake-gemini", help="run the fake Gemini Live server", add_help=False)
    sub.add_parser("fake-live", help="run the fake OpenAI GPT-Live server", add_help=False)
    sub.add_parser("check", help="check configuration, Asterisk, RTP reachability and the model; exit 0/1")
    args, rest = parser.parse_known_args(argv)
    if args.command == "fake-realtime":
        from .fakes.realtime import server as fake_realtime
        return fake_realtime.main(rest) or 0
    if args.command == "fake-gemini":
        from .fakes.gemini import cli as fake_gemini
        return fake_gemini.main(rest) or 0
    if args.command == "fake-live":
        from .fakes.openai_live import cli as fake_live
        return fake_live.main(rest) or 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "check":
        from .operate import check
        return check.main()
    try:
        settings = load_settings()
        _tools(settings)   # tool modules and allowlists: one line, exit 2
        from .config.agents import read_agents
        read_agents(settings)   # a bad agents file: one line, exit 2, before anything starts
    except ConfigError as exc:
        print(f"voiceai-ari: {exc}", file=sys.stderr)
        return 2
    secrets = [settings.ari_password.get_secret_value()]
    for key in (settings.openai_api_key, settings.gemini_api_key):
        if key is not None:
            secrets.append(key.get_secret_value())
    if settings.control_token is not None:
        secrets.append(settings.control_token.get_secret_value())
    setup_logging(settings.log_level, secrets, settings.log_format)
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            return runner.run(serve(settings))
    except ConfigError as exc:   # found only when start-up tried it (a port in use)
        print(f"voiceai-ari: {exc}", file=sys.stderr)
        return 2


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """VOICEAI_EVENT_LOOP: uvloop's loop (auto: if it is installed), or None for the standard library's."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("VOICEAI_EVENT_LOOP=uvloop: uvloop is not installed (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop


def _tools(settings: Settings) -> ToolRegistry:
    """The tool registry, built at start: a module that fails to import or a clashing tool name stops
    start-up with the same one-line error as a bad setting."""
    from .call.tools import build_registry
    try:
        return build_registry(settings)
    except (ValueError, TypeError) as exc:
        raise ConfigError("invalid VOICEAI_TOOL_MODULES: " + " ".join(str(exc).split())) from None


async def serve(settings: Settings) -> int:
    from .call.agents import AgentBook
    from .call.app import VoiceAiApp

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    agents = await AgentBook.load(settings)   # every agent's tools and model (ConfigError: exit 2)
    default = agents.default
    demos = {a.settings.provider: a.settings for a in agents.current.values() if a.settings.offline_demo}
    for demo in demos.values():
        log.warning(offline_banner(demo))
    app = VoiceAiApp(settings, default.make_session, default.tools, agents)
    loop.add_signal_handler(signal.SIGUSR1, lambda: log.info("stats %s", json.dumps(app.stats())))
    loop.add_signal_handler(signal.SIGHUP, lambda: app._spawn(agents.reload_logged()))
    log.info("= voiceai-ari: ARI %s app %s, %s model %s at %s, RTP %s:%s (bind %s), max %d calls, "
             "tools: %s", settings.ari_url, settings.ari_app, default.settings.provider, default.model,
             default.url, settings.rtp_host, settings.rtp_ports, settings.rtp_bind, settings.max_calls,
             ", ".join(default.tools.names) or "none")
    log.info("= agents: %s%s", ", ".join(f"{a.name} ({a.settings.provider} {a.model})"
                                         for a in agents.current.values()),
             f" from {settings.agents_file}" if settings.agents_file else "")
    control = None
    try:
        if settings.control_port:
            from .operate.control import ControlApi
            control = ControlApi(app)
            try:
                await control.start()
            except OSError as exc:   # e.g. a second instance on the same port: one line, exit 2
                raise ConfigError(f"invalid VOICEAI_CONTROL_PORT: cannot listen on {settings.control_host}:"
                                  f"{settings.control_port}: {os.strerror(exc.errno) if exc.errno else exc}") from None
        await app.run(stop)
    finally:
        if control is not None:
            await control.stop()
        await agents.aclose()
    log.info("= stopped")
    return 0


def model_factory(settings: Settings, make: Callable[[], ModelSession]) -> Callable[[], ModelSession]:
    """The app's model session factory, called once per accepted call. On the offline demo it logs a warning
    for every call: a key that went missing must not go unnoticed while real callers talk to an echo."""
    if not settings.offline_demo:
        return make

    def demo_session() -> ModelSession:
        log.warning(DEMO_CALL_WARNING)
        return make()
    return demo_session


if __name__ == "__main__":
    sys.exit(main())
