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
    assert len(lines) == 7 and all(line.startswith("✓") for line in lines)
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


def test_check_lists_the_agents_and_the_modules_their_transfers_need(locked, tmp_path):
    """Every agent is listed; a transfer target only one agent has still needs its module (res_pjsip_refer);
    a bad agents file is the failing step, with the file, agent and field named."""
    agents = tmp_path / "agents.toml"
    agents.write_text('[agents.support]\nvoice = "cedar"\ntransfer_targets = { bob = "PJSIP/bob" }\n')
    p = check(VOICEAI_AGENTS_FILE=str(agents))
    print("\n" + p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    [listed] = [line for line in p.stdout.splitlines() if " agents " in line]
    assert listed.startswith("✓") and "default (openai-realtime gpt-realtime-2.1, voice marin), support " \
        "(openai-realtime gpt-realtime-2.1, voice cedar) from " in listed
    [mods] = [line for line in p.stdout.splitlines() if "Asterisk modules" in line]
    assert "res_pjsip_refer.so" in mods
    agents.write_text('[agents.support]\nvad_threshold = 9\n')
    p = check(VOICEAI_AGENTS_FILE=str(agents))
    print("\n" + p.stdout)
    assert p.returncode == 1
    assert f"✗ agents                                 invalid VOICEAI_AGENTS_FILE: {agents}: agent 'support': " \
        "vad_threshold: Input should be less than or equal to 1" in p.stdout and "fix: correct the agents file" in p.stdout


def test_check_with_the_websocket_transport_dials_chan_websocket(locked):
    """transport=websocket: the modules it needs, and a real /media socket that carries a tone."""
    p = check(VOICEAI_TRANSPORT="websocket", VOICEAI_CALLER_FORMAT="slin16")
    print("\n" + p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    [mods] = [line for line in p.stdout.splitlines() if "Asterisk modules" in line]
    assert "chan_websocket.so" in mods and "res_http_websocket.so" in mods and "chan_rtp.so" not in mods
    [media] = [line for line in p.stdout.splitlines() if "chan_websocket" in line and "media" in line]
    assert media.startswith("✓") and "ws://127.0.0.1:8088/media/" in media and "JSON control, slin16" in media


def test_check_with_the_websocket_transport_names_a_wrong_ari_host(locked):
    p = check(VOICEAI_TRANSPORT="websocket", VOICEAI_ARI_URL="http://127.0.0.1:9")
    assert p.returncode == 1 and "✗ ARI reachable" in p.stdout
