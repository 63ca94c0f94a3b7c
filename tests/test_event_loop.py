"""VOICEAI_EVENT_LOOP: uvloop by default when it is installed, the standard library's loop on request, and a
one-line error (exit 2) when uvloop is asked for but missing."""

import subprocess
import sys

import pytest

from voiceai_ari.cli import loop_factory
from voiceai_ari.config import ConfigError


def test_auto_and_uvloop_choose_uvloop():
    import uvloop
    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop


def test_asyncio_chooses_the_standard_loop():
    assert loop_factory("asyncio") is None


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)     # import uvloop -> ImportError
    assert loop_factory("auto") is None
    with pytest.raises(ConfigError, match="VOICEAI_EVENT_LOOP=uvloop"):
        loop_factory("uvloop")


@pytest.mark.usefixtures("clean_env")
def test_bad_value_names_the_variable(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "VOICEAI_EVENT_LOOP": "trio", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "voiceai_ari", "run"], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and "VOICEAI_EVENT_LOOP" in done.stderr
