"""`WebSocketMedia` against an in-process /media server that talks like chan_websocket: the dial and its
subprotocol, slin16 resampled to and from the model's 24 kHz, a barge-in's FLUSH_MEDIA, an Asterisk too old
for JSON control refused with a clear reason, and a bad text frame counted, not fatal."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.server import serve

from voiceai_ari.fakes.audio_gen import dominant_frequency
from voiceai_ari.media.websocket_channel import WebSocketMedia, media_url


def tone(rate: int, seconds: float, hz: float = 440.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()


class FakeMediaServer:
    def __init__(self, fmt: str = "slin16", plain: bool = False) -> None:
        self.fmt, self.plain = fmt, plain
        self.paths: list[str] = []
        self.subprotocols: list[str | None] = []
        self.binary = bytearray()
        self.texts: list[str] = []
        self.ws = None

    async def handler(self, ws) -> None:
        self.ws = ws
        self.paths.append(ws.request.path)
        self.subprotocols.append(ws.subprotocol)
        fb = 640 if self.fmt == "slin16" else 960
        if self.plain:
            await ws.send(f"MEDIA_START connection_id:x channel:WebSocket/INCOMING/0x1 channel_id:1 format:{self.fmt} "
                          f"optimal_frame_size:{fb} ptime:20")
        else:
            await ws.send(json.dumps({"event": "MEDIA_START", "channel_id": "1", "format": self.fmt,
                                      "optimal_frame_size": fb, "ptime": 20}))
        async for msg in ws:
            if isinstance(msg, bytes):
                self.binary += msg
            else:
                self.texts.append(msg)


@pytest.fixture
async def server():
    made = []

    async def make(**kw):
        srv = FakeMediaServer(**kw)
        s = await serve(srv.handler, "127.0.0.1", 0, subprotocols=["media"])
        made.append(s)
        srv.url = f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}"
        return srv

    yield make
    for s in made:
        s.close()
        await s.wait_closed()


def test_media_url_follows_the_ari_url():
    assert media_url("http://pbx:8088", "abc") == "ws://pbx:8088/media/abc"
    assert media_url("https://pbx.example:8089/", "abc") == "wss://pbx.example:8089/media/abc"


async def test_slin16_both_ways_through_the_resampler(server):
    srv = await server(fmt="slin16")
    media = WebSocketMedia(ari_url=srv.url, fmt="slin16")
    heard = bytearray()
    media.on_audio = heard.extend
    await media.connect({"MEDIA_WEBSOCKET_CONNECTION_ID": "conn-1"})
    assert srv.paths == ["/media/conn-1"] and srv.subprotocols == ["media"]
    assert media.ari_params()["transport_data"] == "f(json)"
    pcm16 = tone(16000, 0.5, 1000)
    for i in range(0, len(pcm16), 640):            # Asterisk's 20 ms frames of the caller
        await srv.ws.send(pcm16[i:i + 640])
    media.play(tone(24000, 0.5), "item_1")         # the model's reply, at once
    media.end_item()
    await asyncio.sleep(0.3)
    assert abs(dominant_frequency(bytes(heard), 24000) - 1000) < 5 and len(heard) >= 24000
    assert len(srv.binary) % 640 == 0 and len(srv.binary) >= 16000   # whole slin16 frames, 0.5 s
    assert abs(dominant_frequency(bytes(srv.binary), 16000) - 440) < 5
    marks = [json.loads(t) for t in srv.texts]
    assert marks and all(m["command"] == "MARK_MEDIA" for m in marks)
    assert media.busy                               # nothing came back: Asterisk has not played it
    item, heard_ms = media.interrupt()
    await asyncio.sleep(0.05)
    assert (item, heard_ms) == ("item_1", 0) and json.loads(srv.texts[-1]) == {"command": "FLUSH_MEDIA"}
    await media.close()


async def test_an_asterisk_without_json_control_is_refused_clearly(server):
    srv = await server(plain=True)
    media = WebSocketMedia(ari_url=srv.url, fmt="slin16")
    with pytest.raises(RuntimeError, match="22.8"):
        await media.connect({"MEDIA_WEBSOCKET_CONNECTION_ID": "c"})
    await media.close()


async def test_a_format_other_than_asked_is_refused(server):
    srv = await server(fmt="slin16")
    media = WebSocketMedia(ari_url=srv.url, fmt="slin24")
    with pytest.raises(RuntimeError, match="slin16"):
        await media.connect({"MEDIA_WEBSOCKET_CONNECTION_ID": "c"})
    await media.close()


async def test_unreadable_text_is_counted_and_the_call_goes_on(server):
    srv = await server(fmt="slin24")
    media = WebSocketMedia(ari_url=srv.url, fmt="slin24")
    got = bytearray()
    media.on_audio = got.extend
    await media.connect({"MEDIA_WEBSOCKET_CONNECTION_ID": "c"})
    await srv.ws.send("{not json")
    await srv.ws.send(json.dumps({"event": "DTMF_END", "digit": "5", "channel_id": "1"}))
    await srv.ws.send(bytes(960))
    await asyncio.sleep(0.1)
    st = media.stats()
    assert st["bad_messages"] == 1 and st["dtmf_events"] == 1 and st["rx_frames"] == 1 and len(got) >= 960
    assert st["codec"] == "slin24" and st["rx_packets"] == 1 and st["tx_packets"] == 0   # what /metrics sums
    await media.close()


def test_g711_is_not_a_websocket_format():
    with pytest.raises(ValueError):
        WebSocketMedia.__new__(WebSocketMedia).__init__(ari_url="http://x", fmt="ulaw")


async def test_a_refused_media_socket_is_a_connection_error_with_its_status():
    """The call's set-up treats it like any network failure (an OSError), with the HTTP status kept."""
    from voiceai_ari.media.websocket_channel import MediaSocketRefused

    async def refuse(connection, request):   # what Asterisk answers for an unknown connection id
        return connection.respond(404, "WebSocket instance not found\n")

    s = await serve(FakeMediaServer().handler, "127.0.0.1", 0, process_request=refuse)
    media = WebSocketMedia(ari_url=f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}", fmt="slin16")
    try:
        with pytest.raises(OSError) as exc:
            await media.connect({"MEDIA_WEBSOCKET_CONNECTION_ID": "gone"})
        assert isinstance(exc.value, MediaSocketRefused) and exc.value.status == 404
    finally:
        await media.close()
        s.close()
        await s.wait_closed()


async def test_a_farewell_waits_for_play_time_when_marks_do_not_come_back(server):
    """The stand-in never answers MARK_MEDIA: drained() waits as long as Asterisk needs to play what was sent
    (our own send times) plus the grace, then goes on: not forever, and not before the audio could play."""
    from voiceai_ari.media.websocket_channel import DRAIN_MARGIN, MARK_GRACE

    srv = await server(fmt="slin24")
    media = WebSocketMedia(ari_url=srv.url, fmt="slin24")
    await media.connect({"MEDIA_WEBSOCKET_CONNECTION_ID": "c"})
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    media.play(tone(24000, 0.5), "item_1")
    media.end_item()
    await asyncio.wait_for(media.drained(), 5.0)
    waited = loop.time() - t0
    assert 0.5 + MARK_GRACE <= waited < 0.5 + MARK_GRACE + DRAIN_MARGIN + 0.3, waited
    assert media.stats()["mark_timeouts"] == 1
    await media.close()
