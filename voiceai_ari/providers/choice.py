"""Which model API serves the calls (VOICEAI_PROVIDER): one `ModelSession` factory, built once at start.

Each provider is its own package; this is the one place that knows all of them. Without the chosen
provider's key, calls go to that provider's embedded fake in echo mode (the offline demo model), so the
README's run command works with no account at all.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import ModelSession

if TYPE_CHECKING:
    from pydantic import SecretStr

    from ..config import Settings

log = logging.getLogger("voiceai")

DEMO_KEY = "offline-demo"


@dataclass
class ModelChoice:
    make: Callable[[], ModelSession]   # one session per call
    model: str                         # the model name, for the start-up line
    url: str                           # where it is served (no query string)
    stop: Callable[[], Awaitable[None]] | None = None   # the embedded demo model, stopped at exit


# the embedded demo models already running, by fake class: (url, stop); shared by every agent (config/agents.py)
DemoModels = dict[type, tuple[str, Callable[[], Awaitable[None]]]]


async def choose_model(settings: Settings, tools: list[dict[str, Any]],
                       demo: DemoModels | None = None) -> ModelChoice:
    """`demo`: embedded demo models to reuse (and to keep the one started here, whose owner stops it)."""
    if settings.provider == "gemini-live":
        return await _gemini_live(settings, tools, demo)
    if settings.provider == "openai-live":
        return await _openai_live(settings, tools, demo)
    return await _openai_realtime(settings, tools, demo)


async def _endpoint(settings: Settings, url: str, key: SecretStr | None, fake_cls: type,
                    demo: DemoModels | None) -> tuple[str, Callable[[], Awaitable[None]] | None, str]:
    """(url, stop, api key): the provider's own, or without a key its embedded fake in echo mode (the offline
    demo; a greeting, asked for before anything was said, is a short beep)."""
    if not settings.offline_demo:
        return url, None, key.get_secret_value() if key is not None else ""
    if demo is not None and fake_cls in demo:
        return demo[fake_cls][0], None, DEMO_KEY
    fake = fake_cls(mode="echo", tone_hz=660, tone_seconds=0.3, keep_history=False)
    started = await fake.start()
    if demo is not None:
        demo[fake_cls] = (started, fake.stop)
        return started, None, DEMO_KEY
    return started, fake.stop, DEMO_KEY


async def _openai_realtime(settings: Settings, tools: list[dict[str, Any]], demo: DemoModels | None) -> ModelChoice:
    from .openai_realtime.credentials import make_credentials
    from .openai_realtime.session import RealtimeSession
    from .openai_realtime.session_config import SessionConfig, retirement_notice

    from ..fakes.realtime.server import FakeRealtimeServer

    url, stop, api_key = await _endpoint(settings, settings.realtime_url, settings.openai_api_key,
                                         FakeRealtimeServer, demo)
    notice = retirement_notice(settings.model)
    if notice and not settings.offline_demo:
        log.warning("! %s", notice)
    config = SessionConfig.from_settings(settings, tools, transcription=not settings.offline_demo)
    credentials = make_credentials(settings, url, config.session(), api_key)
    return ModelChoice(lambda: RealtimeSession(url, credentials, config), settings.model, url.split("?")[0], stop)


async def _gemini_live(settings: Settings, tools: list[dict[str, Any]], demo: DemoModels | None) -> ModelChoice:
    from .gemini_live.protocol import GeminiConfig
    from .gemini_live.session import GeminiSession

    from ..fakes.gemini.server import FakeGeminiServer

    url, stop, api_key = await _endpoint(settings, settings.gemini_url, settings.gemini_api_key, FakeGeminiServer,
                                         demo)
    config = GeminiConfig(
        model=settings.gemini_model, instructions=settings.instructions, voice=settings.gemini_voice,
        start_sensitivity=settings.gemini_start_sensitivity or None,
        end_sensitivity=settings.gemini_end_sensitivity or None,
        prefix_padding_ms=settings.vad_prefix_padding_ms, silence_ms=settings.vad_silence_ms, tools=tools,
        language=settings.language)
    return ModelChoice(lambda: GeminiSession(url, api_key, config), settings.gemini_model, url.split("?")[0], stop)


async def _openai_live(settings: Settings, tools: list[dict[str, Any]], demo: DemoModels | None) -> ModelChoice:
    from .openai_live.protocol import LiveConfig
    from .openai_live.session import LiveSession

    from ..fakes.openai_live.server import FakeLiveServer

    url, stop, api_key = await _endpoint(settings, settings.live_url, settings.openai_api_key, FakeLiveServer, demo)
    config = LiveConfig(model=settings.live_model, instructions=settings.instructions, voice=settings.voice,
                        backend_model=settings.live_backend_model, tools=tools)
    return ModelChoice(lambda: LiveSession(url, api_key, config), settings.live_model, url, stop)
