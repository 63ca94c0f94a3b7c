"""The short soak (bench/soak/, the same code as ``scripts/soak``): 100 real SIP calls, 20 at once, through the
Asterisk sandbox into a real ``voiceai-ari run`` (offline echo model), then nothing may be left behind: ARI
channels and bridges, the bot's UDP ports, asyncio tasks and file descriptors back to the baseline taken
after a warm-up call, every call ok in sipp and ended in the bot, RSS growth bounded. Once per media transport
(RTP and chan_websocket).

    .venv/bin/python -m pytest tests/e2e/test_soak.py -q
    scripts/soak --calls 1000 --concurrency 50          # the full one (not part of the test run)

The soak takes the bot lock itself (/tmp/voiceai-ari-e2e-bot.lock, as the make_bot fixture does). The tests
without the e2e mark check the generated pcap, scenario and sipp-statistics parsing offline.
"""

from __future__ import annotations

import json
import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # bench/ is not installed, and pytest puts tests/ on sys.path, not the root
    sys.path.insert(0, str(REPO))

import bench.soak as soak  # noqa: E402
from bench.soak.sipp import _read_stat_csv, _sipp_ms  # noqa: E402


@pytest.mark.e2e
@pytest.mark.parametrize("transport", ["rtp", "websocket"])
def test_short_soak_leaks_nothing(sandbox, tmp_path, transport):
    cfg = soak.SoakConfig(calls=100, concurrency=20, call_seconds=2.0, workdir=str(tmp_path / "soak"),
                          max_rss_growth_mb=30.0, settle_max_s=25.0, progress=False, transport=transport)
    report = soak.run_soak(cfg)
    text = soak.format_report(report)
    print(text)
    assert report["leaks"] == {}, text
    calls = report["calls"]
    assert calls["ok"] == 100 and calls["failed"] == 0 and calls["sipp_rc"] == 0, text
    assert calls["bot_call_ended"] == calls["expected_ended"] == 101, text
    assert calls["refused"] == 0, text
    assert calls["peak_concurrent_sipp"] == 20, text  # the limit was reached: 20 calls were up at once
    assert report["after"]["channels"] == 0 and report["after"]["bridges"] == 0, text
    assert report["after"]["udp_ports"] == 0 and report["after"]["ports_in_use"] == 0, text
    assert report["rss_growth_mb"] < 30.0, text
    # the media path ran on (nearly) every call: the bot sent RTP back on each, and the echo model answered the
    # caller's tone (a call whose set-up outlasts the 0.8 s tone has nothing to echo: a latency symptom, not a leak)
    # (over chan_websocket the bot sends only the model's audio, no silence: a call the model did not answer
    # has nothing to send)
    media = report["media"]
    assert media["calls_without_model_answer"] <= 10, text
    if transport == "rtp":
        assert media["calls_without_return_audio"] == 0, text
    else:
        assert media["calls_without_return_audio"] <= media["calls_without_model_answer"], text
    assert report["bot"]["rc"] == 0 and report["bot"]["tracebacks"] == 0 and not report["bot"]["errors"], text
    assert report["ok"], text


# ------------------------------------------------------------------------------------------------ offline
def test_pcap_is_g722_rtp_paced_at_20ms(tmp_path):
    path = tmp_path / "t.pcap"
    n = soak.write_pcap(path, 1.0, tone_seconds=0.4)
    data = path.read_bytes()
    magic, _, _, _, _, _, link = struct.unpack("<IHHiIII", data[:24])
    assert (magic, link) == (0xA1B2C3D4, 1) and n == 50
    off, times, seqs, stamps = 24, [], [], []
    while off < len(data):
        sec, usec, incl, orig = struct.unpack("<IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        assert incl == orig == 14 + 20 + 8 + 12 + 160
        rtp = frame[14 + 20 + 8:]
        assert rtp[0] == 0x80 and rtp[1] & 0x7F == 9
        seq, ts = struct.unpack("!HI", rtp[2:8])
        times.append(sec + usec / 1e6)
        seqs.append(seq)
        stamps.append(ts)
    assert len(times) == 50
    assert seqs == list(range(50)) and stamps == [160 * k for k in range(50)]
    assert all(abs((b - a) - 0.020) < 1e-5 for a, b in zip(times, times[1:]))


def test_scenario_is_well_formed(tmp_path):
    path = tmp_path / "s.xml"
    soak.write_scenario(path, tmp_path / "x.pcap", 2500)
    root = ET.fromstring(path.read_bytes())
    assert root.tag == "scenario"
    assert root.find(".//exec").get("play_pcap_audio") == str(tmp_path / "x.pcap")
    assert root.find("pause").get("milliseconds") == "2500"
    sends = [s.text or "" for s in root.findall("send")]
    assert "INVITE sip:[service]" in sends[0] and "m=audio [media_port] RTP/AVP 9 101" in sends[0]
    assert "BYE [next_url]" in sends[-1]


def test_sipp_stat_parsing(tmp_path):
    assert _sipp_ms("00:00:00:041000") == 41.0
    assert _sipp_ms("00:00:01:000500") == 1000.5
    assert _sipp_ms("") is None
    f = tmp_path / "stat.csv"
    f.write_text("CurrentCall;SuccessfulCall(C);FailedCall(C);\n3;0;0;\n50;10;0;\n20;100;1;\n")
    last, peak = _read_stat_csv(f)
    assert peak == 50 and last["SuccessfulCall(C)"] == "100" and last["FailedCall(C)"] == "1"


def test_leaks_are_growth_over_the_baseline():
    base = dict.fromkeys(soak.LEAK_KEYS, 2)
    assert soak.leaks(base, dict(base)) == {}
    assert soak.leaks(base, {**base, "fds": 1}) == {}
    assert soak.leaks(base, {**base, "fds": 5, "bridges": 3}) == {"fds": 3, "bridges": 1}


def test_bot_log_lines_parse_in_both_formats():
    js = ('{"ts": "2026-11-21T21:55:51.996", "level": "INFO", "logger": "voiceai.call", "msg": "x call ended after '
          '3.1 s: caller hung up; media {\'port\': 46000, \'tx_packets\': 145}", "call": "1795298148.7"}')
    assert soak.parse_log_line(js) == ("INFO", "1795298148.7",
                                       "x call ended after 3.1 s: caller hung up; media {'port': 46000, 'tx_packets': 145}",
                                       False)
    text = "2026-11-21 21:39:51,539 INFO voiceai.call [1795297189.2379] bot: (echo)"  # VOICEAI_LOG_FORMAT=text
    assert soak.parse_log_line(text) == ("INFO", "1795297189.2379", "bot: (echo)", False)
    assert soak.parse_log_line('{"level": "ERROR", "msg": "boom", "exc": "Traceback ..."}') == ("ERROR", None, "boom", True)
    assert soak.parse_log_line("    at some continuation line") is None


def test_log_watcher_counts_a_call(tmp_path):
    log = tmp_path / "bot.log"
    lines = [
        {"level": "INFO", "logger": "voiceai.ari", "msg": "= ARI events connected (http://127.0.0.1:8088, app voiceai)"},
        {"level": "INFO", "logger": "voiceai.call", "msg": "= call up in 14 ms: soak <soak> -> model", "call": "1.1"},
        {"level": "INFO", "logger": "voiceai.call", "msg": "bot: (echo)", "call": "1.1"},
        {"level": "INFO", "logger": "voiceai.call", "msg": "x call ended after 3.0 s: caller hung up; media "
                                                           "{'rx_packets': 148, 'tx_packets': 151}", "call": "1.1"},
        {"level": "WARNING", "logger": "voiceai.app", "msg": "! call 1795298438.201 refused: 70 calls active"},
        {"level": "INFO", "logger": "voiceai", "msg": 'stats {"active_calls": 0, "tasks": 2}'},
    ]
    log.write_text("".join(json.dumps(d) + "\n" for d in lines))
    w = soak.LogWatcher(log)
    w.poll()
    assert (w.connected, w.setup_ms, w.ended, w.refused) == (1, [14], 1, 1)
    assert w.up_ids == w.answered == {"1.1"} and w.ended_after == {"1.1": 3.0}
    assert w.media == [{"rx_packets": 148, "tx_packets": 151}] and w.stats == [{"active_calls": 0, "tasks": 2}]
    assert w.end_reasons == {"caller hung up": 1}
