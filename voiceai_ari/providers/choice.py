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
    from ..config import Settings

log = logging.getLogger("voiceai")

DEMO_KEY = "offline-demo"


@dataclass
class ModelChoice:
    make: Callable[[], ModelSession]   # one session per call
    model: str                         # the model name, for the start-up line
    url: str                           # where it is served (no query string)
    stop: Callable[[], Awaitable[None]] | None = None   # the embedded demo model, stopped at exit


async def choose_model(settings: Settings, tools: list[dict[str, Any]]) -> ModelChoice:
    if settings.provider == "gemini-live":
        return await _gemini_live(settings, tools)
    if settings.provider == "openai-live":
        return await _openai_live(settings, tools)
    return await _openai_realtime(settings, tools)


async def _openai_realtime(settings: Settings, tools: list[dict[str, Any]]) -> ModelChoice:
    from .openai_realtime.credentials import make_credentials
    from .openai_realtime.session import RealtimeSession
    from .openai_realtime.session_config import SessionConfig, retirement_notice

    url, stop = settings.realtime_url, None
    if settings.offline_demo:
        from ..fakes.realtime.server import FakeRealtimeServer
        # echo mode; its greeting (a response with nothing said yet) is a short beep
        fake = FakeRealtimeServer(mode="echo", tone_hz=660, tone_seconds=0.3, host="127.0.0.1", port=0,
                                  keep_history=False)
        url, stop, api_key = await fake.start(), fake.stop, DEMO_KEY
    else:
        api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        notice = retirement_notice(settings.model)
        if notice:
            log.warning("! %s", notice)
    config = SessionConfig.from_settings(settings, tools, transcription=not settings.offline_demo)
    credentials = make_credentials(settings, url, config.session(), api_key)
    return ModelChoice(lambda: RealtimeSession(url, credentials, config), settings.model, url.split("?")[0], stop)


async def _gemini_live(settings: Settings, tools: list[dict[str, Any]]) -> ModelChoice:
    from .gemini_live.protocol import GeminiConfig
    from .gemini_live.session import GeminiSession

    url, stop = settings.gemini_url, None
    if settings.offline_demo:
        from ..fakes.gemini.server import FakeGeminiServer
        fake = FakeGeminiServer(mode="echo", tone_hz=660, tone_seconds=0.3, keep_history=False)
        url, stop, api_key = await fake.start(), fake.stop, DEMO_KEY
    else:
        api_key = settings.gemini_api_key.get_secret_value() if settings.gemini_api_key else ""
    config = GeminiConfig(
        model=settings.gemini_model, instructions=settings.instructions, voice=settings.gemini_voice,
        start_sensitivity=settings.gemini_start_sensitivity or None,
        end_sensitivity=settings.gemini_end_sensitivity or None,
        prefix_padding_ms=settings.vad_prefix_padding_ms, silence_ms=settings.vad_silence_ms, tools=tools)
    return ModelChoice(lambda: GeminiSession(url, api_key, config), settings.gemini_model, url.split("?")[0], stop)


async def _openai_live(settings: Settings, tools: list[dict[str, Any]]) -> ModelChoice:
    from .openai_live.protocol import LiveConfig
    from .openai_live.session import LiveSession

    url, stop = settings.live_url, None
    if settings.offline_demo:
        from ..fakes.openai_live.server import FakeLiveServer
        fake = FakeLiveServer(mode="echo", tone_hz=660, tone_seconds=0.3, keep_history=False)
        url, stop, api_key = await fake.start(), fake.stop, DEMO_KEY
    else:
        api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    config = LiveConfig(model=settings.live_model, instructions=settings.instructions, voice=settings.voice,
                        backend_model=settings.live_backend_model, tools=tools)
    return ModelChoice(lambda: LiveSession(url, api_key, config), settings.live_model, url, stop)
