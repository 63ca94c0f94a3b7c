"""VOICEAI_APPEND_MS: caller audio reaches the Realtime model in fewer, larger appends, byte for byte and in
order, and nothing kept in a batch is held back behind another client event, a pause or the end of the call."""

import asyncio

import pytest

from tests.session_io import feed
from voiceai_ari.config import ConfigError, load_settings
from voiceai_ari.fakes.realtime.server import FakeRealtimeServer
from voiceai_ari.providers.openai_realtime.audio_batch import AudioBatch
from voiceai_ari.providers.openai_realtime.protocol import SessionConfig
from voiceai_ari.providers.openai_realtime.session import RealtimeSession

FRAME = 960   # 20 ms of 24 kHz PCM16


def frames(n, size=FRAME):
    return [bytes([(k * 7 + i) % 251 for i in range(size)]) for k in range(n)]


# --- AudioBatch (sans I/O) ------------------------------------------------------------------------------------
def test_batches_to_the_target_and_keeps_bytes_and_order():
    b = AudioBatch.of_ms(100, 48)
    fs = frames(12)
    out = [x for f in fs if (x := b.add(f)) is not None]
    assert [len(x) for x in out] == [4800, 4800]          # 5 frames each
    assert len(b) == 2 * FRAME
    rest = b.take()
    assert b"".join(out) + rest == b"".join(fs)
    assert b.take() is None and len(b) == 0


def test_uneven_frames_lose_nothing():
    b = AudioBatch(1000)
    chunks = [bytes([k]) * n for k, n in enumerate((1, 999, 1000, 333, 2500, 7, 160))]
    out = [x for c in chunks if (x := b.add(c)) is not None]
    assert all(len(x) >= 1000 for x in out)
    tail = b.take() or b""
    assert b"".join(out) + tail == b"".join(chunks)


def test_a_target_of_one_frame_sends_every_frame_as_it_comes():
    b = AudioBatch.of_ms(20, 48)
    fs = frames(3)
    assert [b.add(f) for f in fs] == fs
    assert b.take() is None


def test_g711_batches_count_a_byte_a_sample():
    b = AudioBatch.of_ms(100, 8)
    out = [x for f in frames(10, 160) if (x := b.add(f)) is not None]
    assert [len(x) for x in out] == [800, 800]


# --- RealtimeSession with a batch, against the fake model -----------------------------------------------------
@pytest.fixture
async def fake():
    server = FakeRealtimeServer(mode="tone", tone_seconds=0.2, speed=20, seed=1, api_key="sk-test")
    await server.start()
    yield server
    await server.stop()


async def until(cond, timeout=3.0):
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


async def test_session_sends_a_fifth_as_many_appends_with_the_same_bytes(fake):
    s = RealtimeSession(fake.url, "sk-test", SessionConfig(vad_threshold=0.99, append_ms=100))
    await s.start()
    try:
        fs = await fake.wait_for_session()
        fs_ = frames(50)
        for f in fs_:
            s.send_audio(f)
        await until(lambda: len(fs.audio) >= 50 * FRAME)
        appends = fs.events_of("input_audio_buffer.append")
        assert [a["audio_bytes"] for a in appends] == [4800] * 10
        assert bytes(fs.audio) == b"".join(fs_)
    finally:
        await s.close()


async def test_kept_audio_goes_before_the_next_client_event(fake):
    s = RealtimeSession(fake.url, "sk-test", SessionConfig(vad_threshold=0.99, append_ms=200))
    await s.start()
    try:
        fs = await fake.wait_for_session()
        fs_ = frames(3)
        for f in fs_:
            s.send_audio(f)
        s.send_text("The caller pressed 5")
        await fs.wait_for("conversation.item.create")
        types = [e["type"] for e in fs.received if e["type"] != "session.update"]
        assert types == ["input_audio_buffer.append", "conversation.item.create"]
        assert bytes(fs.audio) == b"".join(fs_)
    finally:
        await s.close()


async def test_audio_that_stops_mid_batch_goes_after_the_batch_length(fake):
    s = RealtimeSession(fake.url, "sk-test", SessionConfig(vad_threshold=0.99, append_ms=100))
    await s.start()
    try:
        fs = await fake.wait_for_session()
        loop = asyncio.get_running_loop()
        feed(s, b"\x01\x02" * (2 * FRAME // 2))      # 40 ms, then the caller's audio stops
        t0 = loop.time()
        await until(lambda: len(fs.audio) == 2 * FRAME)
        assert loop.time() - t0 < 0.3                 # 100 ms + the grace, not "never"
    finally:
        await s.close()


async def test_close_sends_what_is_kept(fake):
    s = RealtimeSession(fake.url, "sk-test", SessionConfig(vad_threshold=0.99, append_ms=100))
    await s.start()
    fs = await fake.wait_for_session()
    feed(s, b"\x03\x04" * FRAME)                      # 40 ms
    await s.close()
    await until(lambda: len(fs.audio) == 2 * FRAME)


# --- the setting ---------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("value", ["10", "201", "abc"])
def test_append_ms_out_of_range_is_refused(monkeypatch, value):
    monkeypatch.setenv("VOICEAI_APPEND_MS", value)
    with pytest.raises(ConfigError, match="VOICEAI_APPEND_MS"):
        load_settings()


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("provider", ["gemini-live", "openai-live"])
def test_append_ms_is_refused_with_other_providers(monkeypatch, provider):
    monkeypatch.setenv("VOICEAI_PROVIDER", provider)
    monkeypatch.setenv("VOICEAI_APPEND_MS", "100")
    with pytest.raises(ConfigError, match="VOICEAI_APPEND_MS"):
        load_settings()
    monkeypatch.delenv("VOICEAI_APPEND_MS")
    load_settings()                                   # unset: the provider's own 20 ms frames


@pytest.mark.usefixtures("clean_env")
def test_append_ms_reaches_the_session_config(monkeypatch):
    monkeypatch.setenv("VOICEAI_APPEND_MS", "100")
    assert SessionConfig.from_settings(load_settings(), []).append_ms == 100
