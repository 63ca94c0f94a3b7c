"""What Asterisk's WebSocket media channel (chan_websocket, 22.10.1 in the sandbox) really honours, asked
directly over ARI and the /media socket, without the bot: the facts the bot's websocket transport and
docs/existing-pbx.md rely on. One externalMedia channel in a Stasis app of this test's own."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import pytest
import websockets

from .caller import ARI_URL, _ari_headers, ari

pytestmark = pytest.mark.e2e
APP = "voiceai-wsprobe"
FB = 960     # slin24: 20 ms


class Probe:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.events: list[tuple[float, dict]] = []

    async def next_event(self, name: str, timeout: float = 3.0) -> tuple[float, dict]:
        end = time.monotonic() + timeout
        while True:
            for i, (t, ev) in enumerate(self.events):
                if ev.get("event") == name:
                    del self.events[: i + 1]
                    return t, ev
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {name} in {timeout} s")
            try:
                msg = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                continue
            if isinstance(msg, str):
                self.events.append((time.monotonic(), json.loads(msg)))

    async def command(self, name: str, **fields) -> None:
        await self.ws.send(json.dumps({"command": name, **fields}))

    async def frames(self, n: int) -> None:
        """n silent frames, 50 per message (Asterisk closes the socket on a frame over 64 KiB)."""
        while n > 0:
            await self.ws.send(bytes(FB * min(n, 50)))
            n -= 50

    async def status(self) -> dict:
        await self.command("GET_STATUS")
        return (await self.next_event("STATUS"))[1]


@pytest.fixture
async def probe(sandbox):
    """An externalMedia websocket channel (slin24, JSON control) in our own Stasis app, its socket open."""
    async with aiohttp.ClientSession(headers=_ari_headers()) as s:
        async with s.ws_connect(f"{ARI_URL.replace('http', 'ws', 1)}/events?app={APP}") as events:
            em_id = f"wsprobe-{uuid.uuid4().hex[:12]}"
            status, em = await ari("POST", "/channels/externalMedia", app=APP, format="slin24",
                                   encapsulation="none", transport="websocket", connection_type="server",
                                   direction="both", transport_data="f(json)", channelId=em_id)
            assert status == 200, em
            conn = em["channelvars"]["MEDIA_WEBSOCKET_CONNECTION_ID"]
            host = ARI_URL.split("://", 1)[1].split("/", 1)[0]
            try:
                async with websockets.connect(f"ws://{host}/media/{conn}", subprotocols=["media"]) as ws:
                    # ARI acts on the channel (DTMF, play) only once it is in the app: MEDIA_START on the
                    # socket can come first, and a request then may get 409 "not in Stasis"
                    async with asyncio.timeout(3.0):
                        async for msg in events:
                            if em_id in msg.data and '"StasisStart"' in msg.data:
                                break
                    p = Probe(ws)
                    p.em_id = em_id
                    p.ari_events = events
                    yield p
            finally:
                await ari("DELETE", f"/channels/{em_id}")


async def test_json_control_marks_flush_and_partial_frames(probe):
    _, start = await probe.next_event("MEDIA_START")
    assert start["format"] == "slin24" and start["optimal_frame_size"] == FB and start["ptime"] == 20

    # a partial frame at the end of a message is dropped: 1.5 frames queue one
    await probe.ws.send(bytes(FB + FB // 2))
    st = await probe.status()
    assert st["queue_length"] <= 1 and st["xoff_level"] == 900 and st["xon_level"] == 800

    # MARK_MEDIA behind 10 frames comes back when they have been played: ~200 ms later
    await probe.command("FLUSH_MEDIA")
    await probe.ws.send(bytes(FB * 10))
    t0 = time.monotonic()
    await probe.command("MARK_MEDIA", correlation_id="m1")
    t1, ev = await probe.next_event("MEDIA_MARK_PROCESSED")
    print(f"\n[e2e] chan_websocket: MARK_MEDIA behind 10 frames processed after {(t1 - t0) * 1000:.0f} ms")
    assert ev["correlation_id"] == "m1" and 0.15 <= t1 - t0 <= 0.5

    # FLUSH_MEDIA empties the queue, marks included
    await probe.frames(200)
    await probe.command("MARK_MEDIA", correlation_id="m2")
    assert (await probe.status())["queue_length"] >= 190
    await probe.command("FLUSH_MEDIA")
    assert (await probe.status())["queue_length"] == 0
    with pytest.raises(AssertionError):
        await probe.next_event("MEDIA_MARK_PROCESSED", timeout=0.5)


async def test_xoff_at_900_frames_and_xon_below_800(probe):
    await probe.next_event("MEDIA_START")
    await probe.frames(905)
    await probe.next_event("MEDIA_XOFF")
    st = await probe.status()
    assert st["queue_full"] is True and st["queue_length"] >= 890
    await probe.frames(150)                       # a message is refused only once 1000 are queued
    n = (await probe.status())["queue_length"]
    assert 1000 <= n < 1060, n
    await probe.frames(10)                        # at 1000 queued frames a message is dropped whole
    assert (await probe.status())["queue_length"] <= n
    await probe.command("FLUSH_MEDIA")
    t0 = time.monotonic()
    t1, _ = await probe.next_event("MEDIA_XON")
    assert t1 - t0 < 0.2, "XON on the next tick once the queue is under 800"


async def test_dtmf_to_the_channel_arrives_as_dtmf_end_and_hangup_ends_the_channel(probe):
    await probe.next_event("MEDIA_START")
    status, _ = await ari("POST", f"/channels/{probe.em_id}/dtmf", dtmf="5", duration="100")
    assert status == 204
    _, ev = await probe.next_event("DTMF_END")
    assert ev["digit"] == "5"
    await probe.command("HANGUP")
    for _ in range(30):
        status, _ = await ari("GET", f"/channels/{probe.em_id}")
        if status == 404:
            break
        await asyncio.sleep(0.1)
    assert status == 404, "HANGUP hung the channel up"
    with pytest.raises(websockets.ConnectionClosed):
        for _ in range(50):
            await asyncio.wait_for(probe.ws.recv(), 2.0)


async def test_a_websocket_frame_over_64k_closes_the_socket_with_1009(probe):
    await probe.next_event("MEDIA_START")
    await probe.ws.send(bytes(FB * 70))           # 67200 bytes
    with pytest.raises(websockets.ConnectionClosed) as exc:
        for _ in range(50):
            await asyncio.wait_for(probe.ws.recv(), 2.0)
    assert exc.value.rcvd is not None and exc.value.rcvd.code == 1009


# ------------------------------------------------------------------------------------------ through the bot
@pytest.mark.parametrize("fmt", ["slin24", "slin16"])
async def test_a_reply_over_chan_websocket_is_whole_wideband_and_at_level(make_bot, fake_model, tmp_path, fmt):
    """The caller's speech reaches the model at 24 kHz, and a 2 s 6 kHz reply (above narrowband) reaches a
    G.722 caller whole: every 20 ms window, no gap, at the model's level. No partial frame was dropped, no
    byte order swapped, nothing resampled to narrowband on the way."""
    from . import analysis as A
    from .caller import Phone, place_call
    from .conftest import E2E_KEY, ended_media_stats
    from .test_call import no_leftovers, reply_coverage

    fake = await fake_model(mode="tone", tone_hz=6000, tone_seconds=2.0, speed=4, seed=5)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, VOICEAI_TRANSPORT="websocket",
                         VOICEAI_CALLER_FORMAT=fmt)
    phone = Phone("g722")
    phone.play(A.tone(1000, 1.0, amplitude=5000))
    res = await place_call("100", phone=phone, call_seconds=5.0, workdir=tmp_path)
    assert res.ok and not res.got_bye, res.summary()
    fs = fake.sessions[0]
    speech = A.tone_segments(bytes(fs.audio), 24000, 1000, tol_hz=10, min_dbfs=-30)
    assert speech.start_s is not None and abs(speech.tone_seconds - 1.0) < 0.06, speech
    pcm, cov = reply_coverage(res, 6000)
    level = A.tone_level_dbfs(pcm, 16000, 6000, start=cov.start_s + 0.1, end=cov.end_s - 0.1)
    times = res.rx_times()
    print(f"\n[e2e] websocket {fmt}: reply at the caller {cov}; level {level:.1f} dBFS; "
          f"packet gaps max {A.longest_gap_ms(times):.1f} ms; {len(times)} packets in "
          f"{res.t_end - res.t_answered:.1f} s of call")
    # while the bot is silent chan_websocket has nothing queued and Asterisk sends the caller no RTP (like
    # VOICEAI_DTX): the caller's packets are the reply's, give or take the edges
    assert 95 <= len(times) <= 115, len(times)
    assert 0.95 * 2.0 <= cov.tone_seconds <= 2.0 + 0.06 and cov.coverage >= 0.95 and cov.longest_gap_ms <= 20, cov
    assert abs(level - (-12.0)) < 2.0
    await bot.wait_for_log("x call ended")
    [stats] = ended_media_stats(bot)
    assert stats["format"] == fmt and stats["tx_frames"] >= 100 and stats["marks_processed"] == stats["marks_sent"]
    assert (await no_leftovers(bot)) == ([], [], [])
