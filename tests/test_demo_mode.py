"""The offline demo model must be visible: VOICEAI_DEMO=off turns a missing key into a start-up error, and on
the demo every call logs a warning (/readyz and /metrics: tests/test_control.py)."""

import logging
import os
import subprocess
import sys

import pytest

from voiceai_ari.cli import DEMO_CALL_WARNING, model_factory
from voiceai_ari.config import ConfigError, load_settings


pytestmark = pytest.mark.usefixtures("clean_env")   # tests/conftest.py


def test_demo_off_without_a_key_is_a_config_error_naming_openai_api_key():
    with pytest.raises(ConfigError, match=r"^invalid OPENAI_API_KEY: required with VOICEAI_DEMO=off"):
        load_settings(demo="off")
    assert load_settings(demo="off", OPENAI_API_KEY="sk-test-0123").demo is False
    assert load_settings(demo="off", credentials="token_service",   # no key here: the service has it
                         token_service_url="http://127.0.0.1:9/token").demo is False
    assert load_settings().offline_demo          # the default stays the demo


def test_cli_with_demo_off_and_no_key_exits_2_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEAI_") and k != "OPENAI_API_KEY"}
    env.update(VOICEAI_DEMO="off")
    p = subprocess.run([sys.executable, "-m", "voiceai_ari", "run"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "OPENAI_API_KEY" in lines[0], p.stderr


def test_every_demo_call_logs_a_warning(caplog):
    made = []
    demo = model_factory(load_settings(), lambda: made.append(1) or len(made))
    with caplog.at_level(logging.WARNING, logger="voiceai"):
        assert [demo(), demo(), demo()] == [1, 2, 3]
    assert [r.getMessage() for r in caplog.records] == [DEMO_CALL_WARNING] * 3
    assert "OPENAI_API_KEY" in DEMO_CALL_WARNING

    caplog.clear()
    real = model_factory(load_settings(OPENAI_API_KEY="sk-test-0123"), lambda: "session")
    with caplog.at_level(logging.WARNING, logger="voiceai"):
        assert real() == "session"
    assert caplog.records == []
