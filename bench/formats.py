"""Section 1 per media path: the per-frame cost of each `VOICEAI_TRANSPORT` / `VOICEAI_CALLER_FORMAT` side by
side, from one run.

Each path's own sans-I/O stages are timed here, on its own frame sizes, with the same objects `RtpMedia` builds
for that format; the stages every path shares (`RtpSender.packet`, `sendto`, and for the slin paths the return
path's 24->16 kHz resampler and G.722 encoder) are taken from the main section-1 rows of the same run, and the
WebSocket write from the run's own measurement for that message size. The total per path is the issue's
stages (event-loop plumbing excluded, as in the main total).

A new path is one more entry in ``PATHS`` (the hook for ``websocket``: its stages are the inbound append and
the outbound delta with no RTP, no clock and no codec; fill in ``_websocket`` when the transport exists).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from voiceai_ari.media.codec import g711_encode, slin_be_to_le
from voiceai_ari.media.formats import caller_format
from voiceai_ari.media.playout import Playout
from voiceai_ari.media.resample import StreamResampler
from voiceai_ari.media.rtp import InboundFilter, RtpPacket
from voiceai_ari.providers.openai_realtime.protocol import RealtimeProtocol, SessionConfig

from .peers import delta_event

ADDR = ("127.0.0.1", 40000)
G711_TARGET_US = 25.0
# row name -> (transport, caller format); the websocket transport is added here by whoever builds it
PATHS: dict[str, tuple[str, str]] = {"rtp-slin24": ("rtp", "slin24"), "rtp-slin16": ("rtp", "slin16"),
                                     "rtp-ulaw": ("rtp", "ulaw")}


def _tone(rate: int, offset: int) -> np.ndarray:
    t = (np.arange(rate // 50) + offset) / rate
    return (np.sin(2 * np.pi * 440 * t) * 9000 + np.sin(2 * np.pi * 1700 * t) * 3000).astype(np.int16)


def _payloads(fmt: str) -> list[bytes]:
    """64 consecutive 20 ms frames as Asterisk sends them in ``fmt``."""
    cf = caller_format(fmt)
    if cf.passthrough:
        return [g711_encode(_tone(8000, i * 160).astype("<i2").tobytes(), fmt) for i in range(64)]
    return [_tone(cf.rate, i * cf.rate // 50).astype(">i2").tobytes() for i in range(64)]


def path_stages(timed: Callable[..., float], shared: dict[str, float], ws_send_us: dict[int, float],
                name: str) -> dict[str, Any]:
    """{stage key: p50 µs} and the total for one path. ``timed(fn)`` returns a stage's p50 in µs."""
    transport, fmt = PATHS[name]
    if transport != "rtp":
        raise NotImplementedError(f"{transport}: add its stages here when the transport is built")
    cf = caller_format(fmt)
    payloads = _payloads(fmt)
    n = 4096
    pkts = [RtpPacket(cf.payload_type if cf.payload_type is not None else 118, (1000 + i) & 0xFFFF,
                      (cf.rate // 50) * i, 0x1234, payloads[i % 64]).to_bytes() for i in range(n)]
    filt = InboundFilter(payload_type=cf.payload_type, payload_bytes=cf.payload_bytes)
    filt.expected_source = ADDR
    it = iter(pkts * 64)
    st: dict[str, float] = {"rtp_accept": timed(lambda: filt.accept(next(it), ADDR))}
    assert filt.accepted > 0, filt.drops

    cyc = _cycle(payloads)
    if cf.passthrough:                      # the payload is the model's audio: nothing to do
        model_in = payloads
    elif fmt == "slin24":
        st["byte_swap"] = timed(lambda: slin_be_to_le(next(cyc)))
        model_in = [slin_be_to_le(p) for p in payloads]
    else:
        up = StreamResampler(cf.rate, 24000)
        st["resample_up"] = timed(lambda: up.process(next(cyc), big_endian=True))
        model_in = [up.process(p, big_endian=True) for p in payloads]
    frame = model_in[-1]
    assert len(frame) == cf.model_frame_bytes, (fmt, len(frame))
    st["append_json"] = timed(lambda: RealtimeProtocol.append_audio(frame))
    st["ws_send"] = ws_send_us[cf.model_frame_bytes]

    proto = RealtimeProtocol(SessionConfig(audio_format={"ulaw": "pcmu", "alaw": "pcma"}.get(fmt, "pcm")))
    texts = _cycle([delta_event(cf.model_frame_bytes, i) for i in range(64)])
    st["receive_delta"] = timed(lambda: proto.receive(next(texts)))
    if not cf.passthrough:
        st["resample_down"] = shared["resample_down"]
        st["g722_encode"] = shared["g722_encode"]
    st["rtp_packet"] = shared["rtp_packet"]
    st["udp_sendto"] = shared["udp_sendto"]
    total = sum(st.values())
    # reported, not in the total (as in the main rows): the playout queue at this path's frame size
    playout = Playout(8000, sample_bytes=1, pad=cf.silence_byte) if cf.passthrough else Playout(16000)
    out_frame = payloads[0] if cf.passthrough else bytes(640)

    def push_pop() -> Any:
        playout.push(out_frame, "item_1")
        return playout.pop()
    return {"transport": transport, "caller_format": fmt, "stages_p50_us": st, "both_core_p50_us": total,
            "playout_p50_us": timed(push_pop),
            "target_us": G711_TARGET_US if cf.passthrough else None}


def run_paths(timed: Callable[..., float], shared: dict[str, float], ws_send_small_us: float) -> dict[str, Any]:
    """Every path of ``PATHS``: ``shared`` = the main rows' p50 by key, ``ws_send_small_us`` = the WebSocket
    write of a 160-byte append, measured in the same run."""
    ws = {960: shared["ws_send"], 160: ws_send_small_us}
    return {name: path_stages(timed, shared, ws, name) for name in PATHS}


def _cycle(items: list[Any]):
    import itertools
    return itertools.cycle(items)
