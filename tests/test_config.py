"""Settings: defaults, validation naming the variable, exit code 2, secrets never printed."""

import os
import subprocess
import sys

import pytest

from voiceai_ari.config import ConfigError, Settings, env_name, load_settings


pytestmark = pytest.mark.usefixtures("clean_env")   # tests/conftest.py


def test_defaults():
    s = load_settings()
    assert s.realtime_url == "wss://api.openai.com/v1/realtime"
    assert s.model == "gpt-realtime-2.1"   # gpt-realtime shuts down 2027-01-20
    assert (s.price_text_in, s.price_text_out, s.price_audio_in, s.price_audio_out) == (4, 24, 32, 64)
    assert s.price_cached_audio_in == s.price_cached_text_in == 0.40
    assert (s.reasoning_effort, s.truncation_value, s.noise_reduction, s.idle_timeout_ms) == ("", None, "", 0)
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
    ("VOICEAI_REASONING_EFFORT", "extreme"), ("VOICEAI_TRUNCATION", "1.5"), ("VOICEAI_TRUNCATION", "sometimes"),
    ("VOICEAI_TRUNCATION", "0"), ("VOICEAI_NOISE_REDUCTION", "studio"), ("VOICEAI_IDLE_TIMEOUT_MS", "-1"),
    ("VOICEAI_IDLE_PROMPTS", "-1"), ("VOICEAI_TRANSPORT", "sctp"), ("VOICEAI_CALLER_FORMAT", "opus"),
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


# --- errors found at start, not on the first call that needs the value ---------------------------------------

@pytest.mark.parametrize("targets", ['{"sales": "ctx,ext,0"}', '{"sales": "ctx,,1"}', '{"sales": ",ext,1"}',
                                     '{"sales": "ctx,ext,first"}', '{"bob": "PJSIP/"}', '{"bob": "a b/c"}'])
def test_transfer_target_the_tool_would_refuse_is_a_config_error(monkeypatch, targets):
    """The transfer tool's own parser checks the allowlist at start (it used to refuse these only when the
    registry was built, after start-up, with a traceback)."""
    monkeypatch.setenv("VOICEAI_TRANSFER_TARGETS", targets)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    msg = str(exc.value)
    assert msg.startswith("invalid VOICEAI_TRANSFER_TARGETS: ") and "\n" not in msg
    assert "context,extension,priority" in msg


@pytest.mark.parametrize("fallback", ["hangup", "transfer"])
@pytest.mark.parametrize("target", ["ctx,ext", "ctx,ext,0", "ctx,,1", "nowhere"])
def test_bad_fallback_target_is_a_config_error(monkeypatch, fallback, target):
    """VOICEAI_FALLBACK_TARGET used to be parsed only when a call fell back (the caller then got a hangup)."""
    monkeypatch.setenv("VOICEAI_FALLBACK", fallback)
    monkeypatch.setenv("VOICEAI_FALLBACK_TARGET", target)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert str(exc.value).startswith("invalid VOICEAI_FALLBACK_TARGET: ")


def test_good_targets_still_load(monkeypatch):
    monkeypatch.setenv("VOICEAI_TRANSFER_TARGETS", '{"sales": "from-caller, 200, 1", "bob": "PJSIP/bob"}')
    monkeypatch.setenv("VOICEAI_FALLBACK", "transfer")
    monkeypatch.setenv("VOICEAI_FALLBACK_TARGET", "PJSIP/operator")
    s = load_settings()
    assert s.transfer_targets["bob"] == "PJSIP/bob" and s.fallback_target == "PJSIP/operator"


@pytest.mark.parametrize("module, source, expected", [
    ("broken_tools", "def (:\n", "cannot import tool module 'broken_tools': SyntaxError"),
    ("no_such_tools_module", None, "cannot import tool module 'no_such_tools_module': ModuleNotFoundError"),
    ("clash_tools", "from voiceai_ari.call.tools import tool\n\n@tool('hangup_call', 'mine')\n"
                    "async def h(ctx):\n    pass\n", "duplicate tool name 'hangup_call'"),
])
def test_cli_exits_2_on_a_bad_tool_module(tmp_path, module, source, expected):
    """A tool module that cannot be loaded stops start-up with the one-line error, not a traceback."""
    if source is not None:
        (tmp_path / f"{module}.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEAI_")}
    env.update(VOICEAI_TOOL_MODULES=f'["{module}"]', PYTHONPATH=str(tmp_path), VOICEAI_CONTROL_PORT="0",
               VOICEAI_ARI_URL="http://127.0.0.1:9")  # never reached: start-up must stop before
    p = subprocess.run([sys.executable, "-m", "voiceai_ari", "run"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voiceai-ari: invalid VOICEAI_TOOL_MODULES: "), lines
    assert expected in lines[0]


def test_2x_settings_reach_the_session_update(monkeypatch):
    from voiceai_ari.providers.openai_realtime.session_config import SessionConfig
    for var, value in {"VOICEAI_REASONING_EFFORT": "xhigh", "VOICEAI_TRUNCATION": "0.5",
                       "VOICEAI_NOISE_REDUCTION": "near_field", "VOICEAI_IDLE_TIMEOUT_MS": "8000"}.items():
        monkeypatch.setenv(var, value)
    session = SessionConfig.from_settings(load_settings(), []).session()
    assert session["reasoning"] == {"effort": "xhigh"}
    assert session["truncation"] == {"type": "retention_ratio", "retention_ratio": 0.5}
    assert session["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    assert session["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 8000
    monkeypatch.setenv("VOICEAI_TRUNCATION", "auto")
    assert SessionConfig.from_settings(load_settings(), []).session()["truncation"] == "auto"


def test_idle_timeout_with_semantic_vad_is_refused_at_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEAI_")}
    env.update(VOICEAI_IDLE_TIMEOUT_MS="5000", VOICEAI_VAD_TYPE="semantic_vad")
    p = subprocess.run([sys.executable, "-m", "voiceai_ari", "run"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    [line] = p.stderr.strip().splitlines()
    assert "VOICEAI_IDLE_TIMEOUT_MS" in line and "server_vad" in line


def test_check_requires_the_modules_the_transfer_targets_need():
    from voiceai_ari.operate.check import required_modules
    base = required_modules(load_settings())
    s = load_settings(transfer_targets={"sales": "from-caller,200,1"})
    assert required_modules(s)[-1:] == ["func_dialplan.so"]
    s = load_settings(transfer_targets={"bob": "PJSIP/bob"}, fallback="transfer", fallback_target="ops,100,1")
    assert set(required_modules(s)) - set(base) == {"func_dialplan.so", "res_pjsip_refer.so"}


@pytest.mark.parametrize("env, needs, not_needed", [
    ({}, {"chan_rtp.so", "codec_g722.so", "codec_resample.so"}, {"chan_websocket.so", "codec_ulaw.so"}),
    ({"caller_format": "slin16"}, {"chan_rtp.so", "codec_g722.so", "codec_resample.so"}, {"codec_ulaw.so"}),
    ({"caller_format": "ulaw"}, {"chan_rtp.so", "codec_ulaw.so"}, {"codec_g722.so", "codec_alaw.so"}),
    ({"caller_format": "alaw"}, {"chan_rtp.so", "codec_alaw.so"}, {"codec_g722.so", "codec_ulaw.so"}),
    ({"transport": "websocket", "caller_format": "slin16"}, {"chan_websocket.so", "res_http_websocket.so"},
     {"chan_rtp.so", "codec_g722.so"}),
])
def test_check_requires_the_modules_of_the_transport_and_format(env, needs, not_needed):
    from voiceai_ari.operate.check import required_modules
    mods = set(required_modules(load_settings(**env)))
    assert needs <= mods and not (not_needed & mods), mods


@pytest.mark.parametrize("fmt", ["ulaw", "alaw"])
def test_websocket_transport_with_a_g711_format_is_refused_at_start(tmp_path, fmt):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEAI_")}
    env.update(VOICEAI_TRANSPORT="websocket", VOICEAI_CALLER_FORMAT=fmt)
    p = subprocess.run([sys.executable, "-m", "voiceai_ari", "run"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    [line] = p.stderr.strip().splitlines()
    assert "VOICEAI_CALLER_FORMAT" in line and "websocket" in line and "slin24" in line
