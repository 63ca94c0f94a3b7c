"""Settings: defaults, validation naming the variable, exit code 2, secrets never printed."""

import os
import subprocess
import sys

import pytest

from voiceai_ari.config import ConfigError, Settings, env_name, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for k in list(os.environ):
        if k.startswith("VOICEAI_") or k == "OPENAI_API_KEY":
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults():
    s = load_settings()
    assert s.realtime_url == "wss://api.openai.com/v1/realtime"
    assert s.model == "gpt-realtime"
    assert s.ari_url == "http://127.0.0.1:8088"
    assert s.ari_app == "voiceai"
    assert s.port_range == range(40000, 40200)
    assert s.offline_demo
    assert s.return_codec == "g722"


def test_env_and_dotenv(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("VOICEAI_MODEL=gpt-realtime-mini\nOPENAI_API_KEY=sk-test-123\n")
    monkeypatch.setenv("VOICEAI_RTP_PORTS", "41000-41009")
    s = load_settings()
    assert s.model == "gpt-realtime-mini"
    assert s.port_range == range(41000, 41010)
    assert not s.offline_demo
    assert "sk-test-123" not in repr(s)


@pytest.mark.parametrize("var,value", [
    ("VOICEAI_RTP_PORTS", "40000"), ("VOICEAI_RTP_PORTS", "50000-40000"), ("VOICEAI_RTP_PORTS", "80-90"),
    ("VOICEAI_VAD_THRESHOLD", "1.5"), ("VOICEAI_VAD_SILENCE_MS", "abc"), ("VOICEAI_REALTIME_URL", "http://x"),
    ("VOICEAI_ARI_URL", "ftp://x"), ("VOICEAI_MAX_CALLS", "0"), ("VOICEAI_RTP_BIND", "not-an-ip"),
    ("VOICEAI_RETURN_CODEC", "opus"), ("VOICEAI_ARI_APP", "bad app name"),
    ("VOICEAI_RTP_BIND", "::1"), ("VOICEAI_RTP_BIND", "::"), ("VOICEAI_RTP_HOST", "fd00::20"),
])
def test_bad_value_names_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert var in str(exc.value)


def test_every_field_has_a_description_and_env_name():
    for name, f in Settings.model_fields.items():
        assert f.description, name
        assert env_name(name).isupper()


def test_cli_exits_2_with_one_clear_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEAI_")}
    env.update(VOICEAI_RTP_PORTS="nonsense", OPENAI_API_KEY="sk-secret-value-xyz")
    p = subprocess.run([sys.executable, "-m", "voiceai_ari", "run"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "VOICEAI_RTP_PORTS" in lines[0]
    assert "sk-secret-value-xyz" not in p.stderr + p.stdout
