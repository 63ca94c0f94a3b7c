"""Section 1 for the websocket transport: microseconds of CPU per 20 ms frame through `WebSocketMedia`
(chan_websocket), the same way `frames.py` times the RTP path.

The media socket is the bot's real `WebSocketMedia` (websockets' sans-I/O client protocol) wired to an
in-process websockets `ServerProtocol` playing Asterisk: the handshake, MEDIA_START and every frame are real
WebSocket bytes. The stages:

Inbound (caller -> model): a 960-byte binary frame from Asterisk -> `data_received` (frame parse) ->
``on_audio`` (slin24 is the model's format: handed over as is). Then the same append (base64 + JSON) and
WebSocket write to the model as the RTP path (frames.py rows ``append_json`` / ``ws_send``).
Outbound (model -> caller): the same delta parse as RTP, then `play` of a 20 ms delta (the mark, client
framing with its mask, the write to a TCP socket another process drains), and the MEDIA_MARK_PROCESSED that
comes back for it. No resampler, no G.722, no Playout, no 20 ms tick: Asterisk re-times. Model deltas are
usually 40-200 ms, so per-delta work (the mark and its answer) costs less per frame than timed here.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from typing import Any

from websockets.http11 import Request
from websockets.server import ServerProtocol

from voiceai_ari.media.websocket_channel import WebSocketMedia

from .common import cpus, pct
from .frames import Stages, _tone

SINK = ("import os,socket,sys\nif sys.argv[1:]: os.sched_setaffinity(0, {int(sys.argv[1])})\n"
        "s=socket.socket();s.bind(('127.0.0.1',0));s.listen(1)\n"
        "print(s.getsockname()[1],flush=True)\nc,_=s.accept()\nwhile c.recv(1<<16):pass\n")


class _Asterisk:
    """The server side of one media socket, in process: handshake and frames as chan_websocket sends them."""

    def __init__(self, media: WebSocketMedia) -> None:
        self.media = media
        self.server = ServerProtocol(subprotocols=["media"])   # type: ignore[list-item]

    def to_server(self, data: bytes) -> list[Any]:
        self.server.receive_data(data)
        return self.server.events_received()

    def push(self) -> None:
        for data in self.server.data_to_send():
            if data:
                self.media.data_received(data)

    def text(self, obj: dict[str, Any]) -> bytes:
        self.server.send_text(json.dumps(obj).encode())
        return b"".join(self.server.data_to_send())

    def binary(self, payload: bytes) -> bytes:
        self.server.send_binary(payload)
        return b"".join(self.server.data_to_send())


class _Capture(asyncio.Transport):
    def __init__(self, sock: socket.socket | None = None) -> None:
        super().__init__()
        self.sock = sock
        self.chunks: list[bytes] = []

    def write(self, data: Any) -> None:
        if self.sock is not None:
            self.sock.send(data)
        else:
            self.chunks.append(bytes(data))

    def is_closing(self) -> bool:
        return False


def _open(media: WebSocketMedia, ast: _Asterisk, transport: _Capture) -> None:
    """Drive the handshake and MEDIA_START by hand (what `connect` does over a socket)."""
    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    media._proto = ClientProtocol(parse_uri("ws://127.0.0.1:8088/media/x"), subprotocols=["media"])  # type: ignore[list-item]
    media._transport = transport
    media._proto.send_request(media._proto.connect())
    [req] = ast.to_server(b"".join(media._proto.data_to_send()))
    assert isinstance(req, Request)
    ast.server.send_response(ast.server.accept(req))
    ast.push()
    media.data_received(ast.text({"event": "MEDIA_START", "format": "slin24", "optimal_frame_size": 960,
                                  "ptime": 20, "channel_id": "1"}))
    assert media.core.control == "json" and media._handshake.done()


def run_stages(st: Stages, quick: bool) -> None:
    async def main() -> None:
        peer_cpu = cpus()[1]
        sink = subprocess.Popen([sys.executable, "-c", SINK] + ([str(peer_cpu)] if peer_cpu is not None else []),
                                stdout=subprocess.PIPE, text=True)
        try:
            assert sink.stdout is not None
            port = int(sink.stdout.readline())
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.setblocking(True)
            media = WebSocketMedia(ari_url="http://127.0.0.1:8088", fmt="slin24")
            ast = _Asterisk(media)
            cap = _Capture()
            _open(media, ast, cap)
            got = [0]
            media.on_audio = lambda pcm: got.__setitem__(0, got[0] + len(pcm))
            frames = [ast.binary(_tone(24000, offset=i * 480).astype("<i2").tobytes()) for i in range(64)]
            it = iter(frames * (st.n // 64 + 10))
            st.timed("in", "ws_media_rx", "media WebSocket frame parse + hand-over (slin24: no conversion)",
                     lambda: media.data_received(next(it)))
            assert got[0] >= 960 * st.n

            # outbound, per 20 ms delta: play (the mark, client framing with its mask) into a capturing
            # transport, its MEDIA_MARK_PROCESSED coming back (JSON parse, window bookkeeping), and apart from
            # both the TCP write of the ~1 KB that play produced to a socket another process drains
            pcm = [_tone(24000, offset=i * 480).astype("<i2").tobytes() for i in range(64)]
            first = media.core._seq + 1
            total = st.n + 300
            answers = [ast.text({"event": "MEDIA_MARK_PROCESSED", "channel_id": "1", "correlation_id": str(s)})
                       for s in range(first, first + total)]
            pc = time.perf_counter_ns
            play_ns, mark_ns = [], []
            for i in range(total):
                t0 = pc()
                media.play(pcm[i % 64], "item_1")
                t1 = pc()
                media.data_received(answers[i])
                t2 = pc()
                if i >= 300:
                    play_ns.append(t1 - t0)
                    mark_ns.append(t2 - t1)
                if len(cap.chunks) > 1000:
                    cap.chunks.clear()
            assert media.core.frames_sent == total and not media.core._queue, "every delta went out at once"
            for key, label, ns in (("ws_media_tx", "play 20 ms: MARK_MEDIA + binary frame (client mask)", play_ns),
                                   ("ws_media_mark", "MEDIA_MARK_PROCESSED receive + parse (one per delta)", mark_ns)):
                us = [max(0.0, (x - st.overhead_ns) / 1000) for x in ns]
                st.rows.append({"direction": "out", "key": key, "stage": label, "p50_us": pct(us, 50),
                                "p90_us": pct(us, 90), "n": len(us), "method": "per call", "core": True})
            written = cap.chunks[-1] if cap.chunks else bytes(1000)
            wire = b"".join(cap.chunks[-2:]) if len(cap.chunks) >= 2 else written
            st.timed("out", "ws_media_write", f"TCP write of one delta's {len(wire)} bytes (another process drains)",
                     lambda: sock.send(wire))
            sock.close()
        finally:
            sink.kill()
            sink.wait(5)

    asyncio.run(main())


def run(quick: bool = False) -> dict[str, Any]:
    """The websocket transport's rows, plus its totals with the shared model-side rows from ``frames``."""
    st = Stages(2000 if quick else 30000)
    run_stages(st, quick)
    return {"stages": st.rows}


def totals(ws_rows: list[dict[str, Any]], rtp_rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per-frame cost of the websocket transport: its own stages plus the model side it shares with RTP
    (append + write to the model inbound, delta parse outbound)."""
    shared = {r["key"]: r["p50_us"] for r in rtp_rows}
    own = {r["key"]: r["p50_us"] for r in ws_rows}
    inbound = own.get("ws_media_rx", 0.0) + shared.get("append_json", 0.0) + shared.get("ws_send", 0.0)
    outbound = (shared.get("receive_delta", 0.0) + own.get("ws_media_tx", 0.0) + own.get("ws_media_mark", 0.0)
                + own.get("ws_media_write", 0.0))
    return {"in_p50_us": inbound, "out_p50_us": outbound, "both_p50_us": inbound + outbound}


if __name__ == "__main__":
    from .frames import inbound_sansio, outbound_sansio

    st = Stages(3000)
    inbound_sansio(st)
    outbound_sansio(st)
    ws = run()
    print(json.dumps({"ws": ws["stages"], "totals": totals(ws["stages"], st.rows)}, indent=1))
