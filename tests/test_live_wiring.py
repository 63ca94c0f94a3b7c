"""VOICEAI_PROVIDER=openai-live: settings, the offline demo (the embedded fake-live in echo mode), the CLI's
fake-live, and per-minute pricing of GPT-Live session time."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests.session_io import collect, feed
from voiceai_ari.call.conversation import ConversationMixin
from voiceai_ari.config import ConfigError, load_settings
from voiceai_ari.fakes.audio_gen import dominant_frequency, silence, tone
from voiceai_ari.providers.base import AudioDelta, ResponseDone
from voiceai_ari.providers.choice import choose_model
from voiceai_ari.providers.openai_live.session import LiveSession


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for k in list(os.environ):
        if k.startswith("VOICEAI_") or k == "OPENAI_API_KEY":
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_settings_for_openai_live():
    s = load_settings(provider="openai-live", OPENAI_API_KEY="sk-test-1")
    assert (s.live_url, s.live_model, s.live_backend_model) == (
        "wss://api.openai.com/v1/live/sessions", "gpt-live-1.1", "gpt-5.6-terra")
    assert s.price_live_per_min == 0.05 and not s.offline_demo
    assert load_settings(provider="openai-live").offline_demo
    with pytest.raises(ConfigError, match="VOICEAI_CREDENTIALS"):
        load_settings(provider="openai-live", OPENAI_API_KEY="sk-test-1", credentials="ephemeral")
    with pytest.raises(ConfigError, match="VOICEAI_IDLE_TIMEOUT_MS"):
        load_settings(provider="openai-live", idle_timeout_ms=8000)
    with pytest.raises(ConfigError, match="VOICEAI_LIVE_URL"):
        load_settings(provider="openai-live", live_url="https://api.openai.com/v1/live/sessions")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        load_settings(provider="openai-live", demo="off")


async def test_without_a_key_the_demo_is_the_embedded_fake_live_in_echo_mode():
    choice = await choose_model(load_settings(provider="openai-live"), [])
    try:
        assert choice.model == "gpt-live-1.1" and choice.url.startswith("ws://127.0.0.1:")
        s = choice.make()
        assert isinstance(s, LiveSession)
        await s.start()
        try:
            feed(s, tone(1000, 0.5, 24000) + silence(2.0, 24000))
            evs = await collect(s, lambda e: isinstance(e, ResponseDone))
            echo = b"".join(e.pcm for e in evs if isinstance(e, AudioDelta))
            assert abs(dominant_frequency(echo, 24000) - 1000) < 5     # the caller hears themself
        finally:
            await s.close()
    finally:
        await choice.stop()


def test_live_seconds_are_priced_per_minute():
    metrics = SimpleNamespace(cost_usd=0.0, tokens={})
    call = SimpleNamespace(usage={}, cost_usd=0.0, metrics=metrics,
                           settings=load_settings(provider="openai-live", price_live_per_min=0.06))
    ConversationMixin._count_usage(call, {"live_seconds": 30.0})
    ConversationMixin._count_usage(call, {"live_seconds": 90.0})
    assert call.usage == {"live_seconds": 120.0}
    assert call.cost_usd == pytest.approx(0.12) and metrics.cost_usd == pytest.approx(0.12)


def test_cli_fake_live_refuses_a_bad_option_with_exit_2(tmp_path):
    p = subprocess.run([sys.executable, "-m", "voiceai_ari", "fake-live", "--mode", "sing"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--mode" in p.stderr
