"""Test-wide settings and fixtures."""

import os

import pytest

from hypothesis import HealthCheck, settings

# Property tests check behaviour, not speed: on a 2-core machine running Asterisk, sipp and the bot at the
# same time, hypothesis' default 200 ms deadline per example fails for reasons that are not defects.
settings.register_profile("voiceai", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("voiceai")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No setting from the developer's environment or a stray .env reaches load_settings()."""
    for k in list(os.environ):
        if k.startswith("VOICEAI_") or k in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def built_apps():
    """The VoiceAiApps a test builds (append them): when the test is over each call is ended and every task
    the app started is awaited, so no call or task leaks into the next test."""
    import asyncio

    apps: list = []
    yield apps
    for app in apps:
        for call in list(app.calls.values()):
            call.end("test over")
        if app._tasks:
            await asyncio.wait(set(app._tasks), timeout=5)



if os.environ.get("VOICEAI_TEST_LOOP") == "uvloop":
    def pytest_asyncio_loop_factories(config, item):
        """VOICEAI_TEST_LOOP=uvloop: every async test runs on uvloop, the loop `voiceai-ari run` uses by default."""
        import uvloop
        return {"uvloop": uvloop.new_event_loop}
