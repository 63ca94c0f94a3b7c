"""`voiceai-ari check` against the real sandbox: all ✓ when right, the failing step and its fix when not."""

from __future__ import annotations

import fcntl
import subprocess
import sys

import pytest

from .conftest import BOT_LOCK, bot_env

pytestmark = pytest.mark.e2e


@pytest.fixture
def locked(sandbox):
    with open(BOT_LOCK, "w") as lock:   # a sandbox restart by another test must not happen meanwhile
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def check(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voiceai_ari", "check"], env=bot_env(**env),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("fmt, rtp, modules", [
    ("slin24", "972-byte RTP (PT 123, slin24)", ("chan_rtp.so", "codec_resample.so", "codec_g722.so")),
    ("slin16", "652-byte RTP (PT 118, slin16)", ("chan_rtp.so", "codec_resample.so", "codec_g722.so")),
    ("ulaw", "172-byte RTP (PT 0, ulaw)", ("chan_rtp.so", "codec_ulaw.so")),
    ("alaw", "172-byte RTP (PT 8, alaw)", ("chan_rtp.so", "codec_alaw.so")),
])
def test_check_passes_on_the_sandbox(locked, fmt, rtp, modules):
    """Each caller format: the modules it needs are named, and Asterisk really sends that format to us."""
    p = check(VOICEAI_CALLER_FORMAT=fmt)
    print("\n" + p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 6 and all(line.startswith("✓") for line in lines)
    assert "RTP from Asterisk" in p.stdout and rtp in p.stdout
    [mods] = [line for line in lines if "Asterisk modules" in line]
    assert all(m in mods for m in modules), mods


@pytest.mark.parametrize("env,step,fix", [
    ({"VOICEAI_ARI_PASSWORD": "wrong"}, "✗ ARI reachable", "VOICEAI_ARI_PASSWORD"),
    ({"VOICEAI_ARI_URL": "http://127.0.0.1:9"}, "✗ ARI reachable", "http.conf"),
    ({"VOICEAI_RTP_HOST": "127.0.0.2"}, "✗ RTP from Asterisk", "VOICEAI_RTP_HOST must be an address"),
    ({"OPENAI_API_KEY": "sk-x", "VOICEAI_REALTIME_URL": "ws://127.0.0.1:9/v1/realtime"}, "✗ model endpoint",
     "VOICEAI_REALTIME_URL"),
    ({"VOICEAI_RTP_PORTS": "nonsense"}, "✗ configuration", "VOICEAI_RTP_PORTS"),
])
def test_check_names_the_broken_step_and_its_fix(locked, env, step, fix):
    p = check(**env)
    print("\n" + p.stdout)
    assert p.returncode == 1
    assert step in p.stdout and "fix:" in p.stdout and fix in p.stdout


def test_check_asks_for_the_transfer_modules_the_targets_need(locked):
    """A PJSIP target is a REFER (res_pjsip_refer), a dialplan target is checked with DIALPLAN_EXISTS
    (func_dialplan): the sandbox loads both, so the check names them and passes."""
    p = check(VOICEAI_TRANSFER_TARGETS='{"sales": "from-caller,200,1", "bob": "PJSIP/bob"}')
    print("\n" + p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    [mods] = [line for line in p.stdout.splitlines() if "Asterisk modules" in line]
    assert mods.startswith("✓") and "func_dialplan.so" in mods and "res_pjsip_refer.so" in mods
