"""The dashboard's pieces without a browser: the event fan-out (slow readers dropped, never blocking), call
history from transcripts, the level meters, stereo recordings in step, and the routes (page open, data behind
the token, Host/Origin guard, Server-Sent Events of live calls and of one call's transcript)."""

import json
import os
import stat
import threading
import time
import wave
from types import SimpleNamespace

import numpy as np
import pytest
import requests

from voiceai_ari.call.recording import BOT, CALLER, AudioTap, Recording, dbfs, sweep
from voiceai_ari.call.transcript import CallLog
from voiceai_ari.operate.events import EventHub, call_listener
from voiceai_ari.operate.history import HistoryIndex

from tests.test_control import serve_in_thread, stop_in_thread

TOKEN = "dash-test-token-123"


# --- event fan-out ---------------------------------------------------------------------------------------------
async def test_a_slow_subscriber_is_dropped_and_counted_while_others_keep_up():
    hub = EventHub()
    slow, fast = hub.subscribe("calls", maxlen=3), hub.subscribe("calls", maxlen=100)
    other = hub.subscribe("call-1")
    for i in range(5):
        hub.publish("calls", {"n": i})   # never blocks, whoever does not read
    assert hub.dropped == 1 and slow.dropped and hub.subscribers == 2
    assert await slow.get(timeout=0.1) is None          # told, not hung
    assert [(await fast.get())[1]["n"] for _ in range(5)] == [0, 1, 2, 3, 4]
    assert other.pending() == 0                          # topics are separate
    hub.publish("call-1", {"event": "bot"})
    assert (await other.get())[1] == {"event": "bot"}
    fast.close()
    other.close()
    assert hub.subscribers == 0
    hub.publish("calls", {"n": 9})                       # nobody listening: nothing kept
    assert hub.published == 6


async def test_a_calls_transcript_reaches_its_topic_and_its_start_and_end_reach_calls():
    hub = EventHub()
    calls, one = hub.subscribe("calls"), hub.subscribe("c1")
    log = CallLog("", "c1")
    log.listener = call_listener(hub, "c1")
    log.write("call_start", caller_number="100")
    log.write("bot", text="hello")
    log.write("call_end", reason="caller hung up")
    assert [one.get_nowait()[1]["event"] for _ in range(3)] == ["call_start", "bot", "call_end"]
    assert [calls.get_nowait()[1] for _ in range(2)] == [{"type": "call_start", "id": "c1"},
                                                         {"type": "call_end", "id": "c1"}]


# --- history ---------------------------------------------------------------------------------------------------
def write_transcript(folder, name, records):
    folder.mkdir(exist_ok=True)
    with open(folder / f"{name}.jsonl", "w") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def a_call(day, number, said, cost, ended=True):
    recs = [{"ts": f"{day}T10:00:00.000+00:00", "t": 0, "event": "call_start", "caller_number": number,
             "caller_name": "Alice"},
            {"ts": f"{day}T10:00:02.000+00:00", "t": 2.0, "event": "caller", "text": said},
            {"ts": f"{day}T10:00:03.000+00:00", "t": 3.0, "event": "tool_call", "name": "hangup_call",
             "arguments": {}, "ok": True, "result": {"ok": True}}]
    if ended:
        recs.append({"ts": f"{day}T10:01:00.000+00:00", "t": 60.0, "event": "call_end", "reason": "caller hung up",
                     "usage": {"audio_in": 100}, "cost_usd": cost})
    return recs


def test_history_lists_finished_calls_newest_first_searches_and_totals_per_day(tmp_path):
    d = tmp_path / "t"
    write_transcript(d, "20261201T100000Z-a", a_call("2026-12-01", "+15550001", "my order is late", 0.02))
    write_transcript(d, "20261202T100000Z-b", a_call("2026-12-02", "+15550002", "change my address", 0.03))
    write_transcript(d, "20261202T110000Z-c", a_call("2026-12-02", "+15550003", "hello", 0.05) + ["{not json"])
    write_transcript(d, "20261203T100000Z-live", a_call("2026-12-03", "+15550004", "still talking", 0, ended=False))
    h = HistoryIndex(str(d))
    res = h.search()
    assert [c["name"] for c in res["calls"]] == ["20261202T110000Z-c", "20261202T100000Z-b", "20261201T100000Z-a"]
    assert res["calls"][0]["cost_usd"] == 0.05 and res["calls"][0]["duration_s"] == 60.0
    assert res["calls"][0]["tools"] == 1 and "text" not in res["calls"][0]
    assert h.bad_lines == 1
    assert res["days"] == [{"day": "2026-12-02", "calls": 2, "duration_s": 120.0, "cost_usd": 0.08},
                           {"day": "2026-12-01", "calls": 1, "duration_s": 60.0, "cost_usd": 0.02}]
    assert [c["name"] for c in h.search("0002")["calls"]] == ["20261202T100000Z-b"]
    assert [c["name"] for c in h.search("ORDER late")["calls"]] == ["20261201T100000Z-a"]
    assert h.search("nobody said this")["calls"] == []
    detail = h.detail("20261201T100000Z-a")
    assert [r["event"] for r in detail["records"]] == ["call_start", "caller", "tool_call", "call_end"]
    assert detail["usage"] == {"audio_in": 100}
    assert h.detail("../etc/passwd") is None and h.detail("20261203T100000Z-live") is None


# --- meters and recordings -------------------------------------------------------------------------------------
def tone(rate, seconds, hz=440.0, amp=8000):
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def test_level_meters_sample_the_latest_frame_and_fall_silent_without_frames():
    sent = []
    tap = AudioTap(sent.append, time.monotonic)
    assert tap.levels() == (-90.0, -90.0)
    loud = tone(24000, 0.02, amp=16384)
    tap.caller(loud)
    tap.bot(tone(16000, 0.02, amp=1638))
    level_in, level_out = tap.levels()
    assert sent == [loud]                       # the caller's audio goes on to the model, untouched
    assert -10 < level_in < -8 and -30 < level_out < -28
    assert tap.levels() == (-90.0, -90.0)       # nothing new since: silent
    assert dbfs(b"") == -90.0


def read_wav(path):
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (2, 2)
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
        return w.getframerate(), x[:, 0], x[:, 1]


def rms_at(x, rate, start, end):
    seg = x[int(start * rate):int(end * rate)].astype(float)
    return float(np.sqrt(np.mean(seg * seg))) if len(seg) else 0.0


@pytest.fixture
def umask0():
    old = os.umask(0)
    yield
    os.umask(old)


def test_a_recording_is_stereo_caller_left_bot_right_in_step_and_private(tmp_path, umask0):
    """The caller speaks 0-1 s; the bot answers 1.5-2.5 s after a silence in which it sent nothing (DTX):
    each side lands at its time on the call's timeline."""
    folder = tmp_path / "rec"
    t0 = 1000.0
    rec = Recording(str(folder), "20261204T100000Z-PJSIP/1-0001", t0=t0, caller_rate=24000, rate=16000)
    caller, bot = tone(24000, 1.0, 300), tone(16000, 1.0, 1000)
    silence24 = bytes(960)
    for k in range(125):                          # 2.5 s of caller frames (speech, then silence)
        frame = caller[k * 960:(k + 1) * 960] if k < 50 else silence24
        rec.put(CALLER, t0 + (k + 1) * 0.02, frame)
        if 75 <= k < 125:                         # bot frames only while it speaks, 1.5-2.5 s
            j = k - 75
            rec.put(BOT, t0 + (k + 1) * 0.02, bot[j * 640:(j + 1) * 640])
    done = threading.Event()
    rec.close(done)
    assert done.wait(5)
    path = folder / "20261204T100000Z-PJSIP_1-0001.wav"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(folder.stat().st_mode) == 0o700
    rate, left, right = read_wav(path)
    assert rate == 16000 and abs(len(left) / rate - 2.5) < 0.05
    assert rms_at(left, rate, 0.1, 0.9) > 3000 and rms_at(left, rate, 1.2, 2.4) < 50      # caller: left
    assert rms_at(right, rate, 0.1, 1.4) < 50 and rms_at(right, rate, 1.6, 2.4) > 3000    # bot: right, in step
    onset = int(np.argmax(np.abs(right) > 2000)) / rate
    assert abs(onset - 1.5) < 0.03, onset


def test_bot_audio_a_transport_says_was_heard_later_is_recorded_when_heard(tmp_path, umask0):
    """chan_websocket hands the bot's audio over early and says later when it was played: `bot(pcm, t)` puts it
    at `t` (in runs of frames, as views of what was sent), not at the time of the call."""
    folder = tmp_path / "rec"
    t0, now = 500.0, [500.0]
    rec = Recording(str(folder), "ws", t0=t0, caller_rate=24000, rate=24000)
    tap = AudioTap(lambda b: None, lambda: now[0], rec)
    bot = tone(24000, 1.0, 1000)
    runs = {73: (0, 20), 93: (20, 40), 103: (40, 50)}   # given 80 ms after their last frame was played
    for k in range(110):                          # 2.2 s of caller silence; the bot heard 1.0-2.0 s
        now[0] = t0 + (k + 1) * 0.02
        tap.caller(bytes(960))
        if k in runs:
            a, b = runs[k]
            tap.bot(memoryview(bot)[a * 960:b * 960], t=t0 + 1.0 + b * 0.02)
    assert tap.levels()[1] > -20
    done = threading.Event()
    rec.close(done)
    assert done.wait(5)
    rate, left, right = read_wav(folder / "ws.wav")
    assert rms_at(right, rate, 0.0, 0.98) < 50 and rms_at(right, rate, 1.02, 1.98) > 3000
    assert abs(int(np.argmax(np.abs(right) > 2000)) / rate - 1.0) < 0.005


def test_retention_deletes_only_old_recordings(tmp_path):
    old, new, other = tmp_path / "old.wav", tmp_path / "new.wav", tmp_path / "old.txt"
    for p in (old, new, other):
        p.write_bytes(b"x")
    week_ago = time.time() - 8 * 86400
    os.utime(old, (week_ago, week_ago))
    os.utime(other, (week_ago, week_ago))
    assert sweep(tmp_path, 7) == 1
    assert not old.exists() and new.exists() and other.exists()


# --- routes ----------------------------------------------------------------------------------------------------
class StubMedia:
    external_format = "slin24"
    encoder = SimpleNamespace(fmt=SimpleNamespace(name="g722"))


class StubCall:
    """What the dashboard reads of a call."""

    def __init__(self, cid, settings):
        self.id, self.settings, self.media = cid, settings, StubMedia()
        self.channel = SimpleNamespace(caller=SimpleNamespace(name="Alice", number="+15550100"))
        self.started, self.state, self.cost_usd = time.time() - 5, "talking", 0.0123
        self.agent = "support"
        self.tap = AudioTap(lambda pcm: None, time.monotonic)
        self.transcript = CallLog("", cid)


@pytest.fixture
def dash(tmp_path):
    tdir, rdir = tmp_path / "transcripts", tmp_path / "rec"
    write_transcript(tdir, "20261201T100000Z-a", a_call("2026-12-01", "+15550001", "my order is late", 0.02))
    rdir.mkdir()
    (rdir / "20261201T100000Z-a.wav").write_bytes(b"RIFF....WAVE")
    loop, box = serve_in_thread(control_token=TOKEN, transcript_dir=str(tdir), record_dir=str(rdir),
                                transfer_targets={"sales": "from-caller,200,1"})
    yield f"http://127.0.0.1:{box['api'].port}", box, loop
    stop_in_thread(loop, box)


def auth():
    return {"Authorization": f"Bearer {TOKEN}"}


def test_the_page_is_served_without_the_token_and_its_data_is_not(dash):
    url, _, _ = dash
    page = requests.get(f"{url}/dashboard/", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert TOKEN not in page.text and "static/app.js" in page.text
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for f, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        r = requests.get(f"{url}/dashboard/static/{f}", timeout=5)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith(kind)
        assert "http://" not in r.text and "https://" not in r.text    # no CDN, no external font
    assert requests.get(f"{url}/dashboard/static/..%2Fcontrol.py", timeout=5).status_code == 404
    for path in ("/dashboard/api/info", "/dashboard/api/events", "/dashboard/api/history",
                 "/dashboard/api/history/20261201T100000Z-a", "/dashboard/api/history/20261201T100000Z-a/recording"):
        assert requests.get(url + path, timeout=5).status_code == 401, path
    info = requests.get(f"{url}/dashboard/api/info", headers=auth(), timeout=5).json()
    assert info["transfer_targets"] == ["sales"] and info["token_required"] is True


def test_the_page_refuses_a_foreign_host_or_origin(dash):
    url, _, _ = dash
    assert requests.get(f"{url}/dashboard/", headers={"Host": "evil.example:80"}, timeout=5).status_code == 403
    r = requests.get(f"{url}/dashboard/api/info", headers={**auth(), "Origin": "http://evil.example"}, timeout=5)
    assert r.status_code == 403


def test_history_and_recording_routes(dash):
    url, _, _ = dash
    res = requests.get(f"{url}/dashboard/api/history", params={"q": "late"}, headers=auth(), timeout=5).json()
    assert [c["caller_number"] for c in res["calls"]] == ["+15550001"] and res["days"][0]["cost_usd"] == 0.02
    assert requests.get(f"{url}/dashboard/api/history", params={"q": "nope"}, headers=auth(), timeout=5).json()["calls"] == []
    d = requests.get(f"{url}/dashboard/api/history/20261201T100000Z-a", headers=auth(), timeout=5).json()
    assert d["recording"] is True and d["cost_usd"] == 0.02
    r = requests.get(f"{url}/dashboard/api/history/20261201T100000Z-a/recording", headers=auth(), timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "audio/wav" and r.content.startswith(b"RIFF")
    assert requests.get(f"{url}/dashboard/api/history/..%2F..%2Fx/recording", headers=auth(),
                        timeout=5).status_code == 404


def sse_events(resp, n):
    """The first n (event, data) of a text/event-stream response."""
    out, kind = [], None
    for line in resp.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            out.append((kind, json.loads(line[6:])))
            if len(out) == n:
                return out
    return out


def test_live_calls_stream_snapshots_with_meters_and_a_calls_transcript_as_it_is_written(dash):
    url, box, loop = dash
    app = box["app"]
    call = StubCall("c-1", app.settings)
    call.transcript.listener = call_listener(app.events, call.id)

    def add():
        app.calls[call.id] = call
        call.transcript.write("call_start", caller_number="+15550100")
    loop.call_soon_threadsafe(add)
    with requests.get(f"{url}/dashboard/api/events", headers=auth(), stream=True, timeout=5) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        t0 = time.monotonic()
        events = sse_events(r, 3)
        took = time.monotonic() - t0
    snaps = [d for k, d in events if k == "snapshot"]
    row = snaps[-1]["calls"][0]
    assert row["id"] == "c-1" and row["caller"]["number"] == "+15550100" and row["state"] == "talking"
    assert row["agent"] == "support"
    assert row["provider"] == "openai-realtime" and row["transport"] == "stub slin24 / g722"
    assert row["cost_usd"] == 0.0123 and "level_in_dbfs" in row and took < 1.5
    with requests.get(f"{url}/dashboard/api/calls/c-1/events", headers=auth(), stream=True, timeout=5) as r:
        loop.call_soon_threadsafe(lambda: call.transcript.write("bot", text="Hello, how can I help?"))
        loop.call_soon_threadsafe(lambda: call.transcript.write("call_end", reason="caller hung up"))
        events = sse_events(r, 4)
    assert [d["event"] for _, d in events] == ["meta", "call_start", "bot", "call_end"]
    assert events[2][1]["text"] == "Hello, how can I help?"
    loop.call_soon_threadsafe(app.calls.pop, "c-1")
    metrics = requests.get(f"{url}/metrics", headers=auth(), timeout=5).text
    assert "voiceai_dashboard_streams_dropped_total 0.0" in metrics
    assert requests.get(f"{url}/dashboard/api/calls/c-1/events", headers=auth(), timeout=5).status_code == 404


def test_stopping_the_api_ends_open_streams_at_once(tmp_path):
    """An open Server-Sent Events response must not hold the shutdown (SIGTERM would wait for the browser)."""
    loop, box = serve_in_thread(control_token=TOKEN, transcript_dir=str(tmp_path))
    url = f"http://127.0.0.1:{box['api'].port}"
    with requests.get(f"{url}/dashboard/api/events", headers=auth(), stream=True, timeout=5) as r:
        assert sse_events(r, 1)[0][0] == "snapshot"
        t0 = time.monotonic()
        stop_in_thread(loop, box)     # raises if the API is not stopped within 5 s
        took = time.monotonic() - t0
    assert took < 2.0, took


def test_without_a_token_the_page_works_from_its_own_origin_only(tmp_path):
    """Loopback with no token: the page's data and actions answer the API's own origin, never a foreign one."""
    loop, box = serve_in_thread(transcript_dir=str(tmp_path))
    url = f"http://127.0.0.1:{box['api'].port}"
    try:
        own = {"Origin": url}
        assert requests.get(f"{url}/dashboard/api/info", headers=own, timeout=5).json()["token_required"] is False
        evil = {"Origin": "http://evil.example"}
        assert requests.get(f"{url}/dashboard/api/info", headers=evil, timeout=5).status_code == 403
        assert requests.get(f"{url}/dashboard/api/events", headers=evil, timeout=5).status_code == 403
        assert requests.post(f"{url}/calls/x/hangup", json={}, headers=evil, timeout=5).status_code == 403
        assert requests.post(f"{url}/calls/x/hangup", json={}, headers=own, timeout=5).status_code == 404
    finally:
        stop_in_thread(loop, box)


async def test_an_agent_with_record_off_is_not_recorded_even_with_a_record_dir(tmp_path):
    """VOICEAI_RECORD_DIR is the process's folder; an agent's `record = false` keeps its calls out of it."""
    from voiceai_ari.call.recording import tap_call
    from voiceai_ari.config import load_settings

    def call_with(record: bool) -> SimpleNamespace:
        s = load_settings(record_dir=str(tmp_path / "rec"), record=record)
        return SimpleNamespace(settings=s, media=SimpleNamespace(), model=SimpleNamespace(send_audio=lambda b: None),
                               transcript=SimpleNamespace(stem=f"call-{record}"))

    assert tap_call(call_with(False)).recorder is None
    on = tap_call(call_with(True))
    assert on.recorder is not None
    done = threading.Event()
    on.recorder.close(done)
    assert done.wait(5)


def test_a_g711_passthrough_call_is_metered_and_recorded_as_audio_not_as_codes(tmp_path, umask0):
    """ulaw/alaw calls hand G.711 bytes both ways: the meters and the WAV decode them (a μ-law tone read as
    16-bit PCM is loud noise at the wrong rate, and μ-law silence 0xFF is not quiet as PCM)."""
    from voiceai_ari.media.codec import g711_encode
    caller = g711_encode(tone(8000, 1.0, 300), "ulaw")
    bot = g711_encode(tone(8000, 1.0, 1000), "ulaw")
    tap = AudioTap(lambda b: None, time.monotonic, law="ulaw")
    tap.caller(caller[:160])
    tap.bot(bytes([0xFF]) * 160)                     # μ-law silence
    lin, lbot = tap.levels()
    assert -20 < lin < -10 and lbot == -90.0, (lin, lbot)
    t0 = 50.0
    rec = Recording(str(tmp_path / "rec"), "g711", t0=t0, caller_rate=8000, rate=8000, law="ulaw")
    for k in range(50):
        rec.put(CALLER, t0 + (k + 1) * 0.02, caller[k * 160:(k + 1) * 160])
        rec.put(BOT, t0 + (k + 1) * 0.02, bot[k * 160:(k + 1) * 160])
    done = threading.Event()
    rec.close(done)
    assert done.wait(5)
    rate, left, right = read_wav(tmp_path / "rec" / "g711.wav")
    assert rate == 8000 and abs(len(left) / rate - 1.0) < 0.03
    for x, hz in ((left, 300), (right, 1000)):
        spec = np.abs(np.fft.rfft(x[800:7200].astype(float)))
        assert abs(np.argmax(spec) * rate / 6400 - hz) < 10
