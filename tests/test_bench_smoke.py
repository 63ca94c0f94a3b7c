"""`python -m bench --quick` runs end to end: one table on stdout, the JSON file, sane numbers.

Benchmarks never fail CI for being slow: nothing here compares a time with a target. It checks the shape of
the output and that each measured number is finite and positive (a zero or a NaN means a section measured
nothing: a tap that no longer fires, a peer process that never sent).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_quick_bench_prints_a_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("|")]
    assert lines[0].split("|")[1:-1] and "measure" in lines[0] and "result" in lines[0], done.stdout
    sections = {ln.split("|")[1].strip() for ln in lines[2:]}
    assert {"1", "2", "3", "4", "6"} <= sections, done.stdout

    data = json.loads(out.read_text())
    assert data["quick"] is True and data["machine"]["nproc"] >= 1 and data["machine"]["python"]
    assert [r["section"] for r in data["table"]] == [ln.split("|")[1].strip() for ln in lines[2:]]
    res = data["results"]

    # 1: every stage measured, both directions, totals add up
    frames = res["frames"]
    keys = {s["key"] for s in frames["stages"]}
    assert {"rtp_accept", "byte_swap", "append_json", "ws_send", "receive_delta", "resample_down",
            "g722_encode", "rtp_packet", "udp_sendto"} <= keys
    for s in frames["stages"]:
        assert _positive(s["p50_us"]) and _positive(s["p90_us"]) and s["n"] > 0, s
        assert s["p90_us"] >= s["p50_us"], s
    t = frames["totals"]
    assert _positive(t["both_all_p50_us"]) and t["both_all_p50_us"] >= t["both_core_p50_us"] > 0
    assert math.isclose(t["both_all_p50_us"], sum(s["p50_us"] for s in frames["stages"]), rel_tol=1e-9)

    # 1 over chan_websocket: its own stages measured, the total adds the model side shared with RTP
    fw = res["frames_ws"]
    assert {s["key"] for s in fw["stages"]} == {"ws_media_rx", "ws_media_tx", "ws_media_mark", "ws_media_write"}
    assert all(_positive(s["p50_us"]) and s["p90_us"] >= s["p50_us"] for s in fw["stages"]), fw
    shared = {s["key"]: s["p50_us"] for s in frames["stages"]}
    assert math.isclose(fw["totals"]["both_p50_us"], sum(s["p50_us"] for s in fw["stages"]) + shared["append_json"]
                        + shared["ws_send"] + shared["receive_delta"], rel_tol=1e-9)

    # 2 + 6: a tiny capacity run really carried calls both ways
    cap = res["capacity"]
    assert cap["steps"], cap
    for step in cap["steps"]:
        for k in ("cpu_pct", "us_per_call_frame", "jitter_p99_ms_worst_call", "rss_kb", "window_s"):
            assert _positive(step[k]), (k, step)
        assert step["tx_packets"] > 0 and step["rx_accepted"] > 0 and step["intervals"] > 0, step
        assert step["underruns"] >= 0 and step["calls"] >= 1
    assert cap["memory"] and all(_positive(m["rss_kb"]) for m in cap["memory"].values())

    # 2 over chan_websocket: the calls ran both ways (caller frames reached the bot, Asterisk played its audio)
    cw = res["capacity_ws"]
    assert cw["steps"], cw
    for step in cw["steps"]:
        assert _positive(step["cpu_pct"]) and step["rx_frames"] > 0 and step["asterisk_played"] > 0, step

    # 3 + 4: latency samples exist and are plausible in kind (positive, finite)
    lat = res["latency"]
    for k in ("inbound_ms", "inbound_wire_ms", "outbound_first_audio_ms", "barge_in_ms"):
        assert lat[k]["n"] > 0 and _positive(lat[k]["p50"]) and _positive(lat[k]["max"]), (k, lat[k])
    assert _positive(lat["resampler_delay_ms"]["24to16"])
    assert lat["barge_ins"] >= 1
