"""Sections 3 and 4, added latency and barge-in reaction, on one synthetic call (``callsim.SimCall``).

This process is the bot (pinned to the first CPU); the fake model (FakeRealtimeServer, tone mode: every
response is a 2 s tone streamed at 4x real time, no response delay) and "Asterisk" (bench.peers rtp) run as
their own processes on the second CPU. Asterisk sends digital silence, and every 1.5 s a 240 ms burst of a
loud 1 kHz tone: the fake model's VAD reports ``speech_started`` ~60 ms into the burst (the bot barges in:
``media.interrupt`` + ``conversation.item.truncate``, the model cancels its response), ``speech_stopped``
500 ms after it, and answers with a new tone, which the next burst interrupts 0.75 s in. Each cycle gives
one sample of each measure:

- inbound: RTP datagram handed to the bot (``datagram_received``) -> its ``input_audio_buffer.append``
  written to the WebSocket; also from the peer's ``sendto`` (its send time rides in the RTP timestamp).
- outbound: first ``response.output_audio.delta`` of an item read off the WebSocket -> the first RTP packet
  carrying that audio handed to ``sendto``. The 20 ms clock is free-running (it sends filler silence when
  there is nothing to play), so this is the wait for the next tick: 0..20 ms, plus the work.
- barge-in: ``speech_started`` read -> the first packet without bot audio (the last bot audio packet is the
  one before it); also counted: bot audio packets sent after ``speech_started`` was read (0 = the cut was
  immediate, the last audio packet had already left before the event arrived).
- the resampler's group delay: ``StreamResampler.latency_ms`` for 24->16 kHz, the only one left (a property of the
  filter, added to the audio in each direction; not included in the times above).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from voiceai_ari.media.transport import PortPool
from voiceai_ari.media.resample import StreamResampler

from .common import cpus, pinned, realtime, summary
from .capacity import Proc

CYCLE_S = 1.5
BURST_MS = 240
FIRST_BURST_S = 1.0


async def _run(cycles: int, bot_cpu: int | None, peer_cpu: int | None) -> dict[str, Any]:
    from .callsim import SimCall

    fake = Proc(["bench.peers", "fake", "--mode", "tone", "--tone-seconds", "2", "--speed", "4"], peer_cpu)
    peer = Proc(["bench.peers", "rtp"], peer_cpu)
    call = None
    try:
        url = await asyncio.to_thread(fake.line)
        peer_port = int(await asyncio.to_thread(peer.line))
        call = SimCall(url=url, api_key="bench", pool=PortPool(range(50500, 50600)))
        await call.start(("127.0.0.1", peer_port))
        call.tap_inbound()
        call.tap_model()
        call.session.request_response()  # the greeting: the bot talks until the first burst
        peer.send({"cmd": "start", "ports": [call.media.port],
                   "burst": {"first": FIRST_BURST_S, "every": CYCLE_S, "ms": BURST_MS}})
        await asyncio.sleep(FIRST_BURST_S + cycles * CYCLE_S + 0.3)
        peer.send({"cmd": "stop"})
        await asyncio.sleep(0.05)
        assert call.tx is not None
        times, audio = call.tx.times, call.tx.audio
        # outbound: first delta of each item -> first audio packet sent after it
        out_ms = []
        for t_delta in sorted(call.first_delta.values()):
            t_pkt = next((t for t, a in zip(times, audio) if a and t >= t_delta), None)
            if t_pkt is not None:
                out_ms.append((t_pkt - t_delta) / 1e6)
        # barge-in: speech_started -> first packet without audio; audio packets after the event
        barge_ms, late_audio, last_audio_ms = [], [], []
        for t_ss in call.speech_started:
            after = [(t, a) for t, a in zip(times, audio) if t >= t_ss]
            stop = next((t for t, a in after if not a), None)
            if stop is None:
                continue
            barge_ms.append((stop - t_ss) / 1e6)
            late_audio.append(sum(1 for t, a in after if a and t < stop))
            before = [t for t, a in zip(times, audio) if a and t < stop]
            if before:
                last_audio_ms.append((before[-1] - t_ss) / 1e6)
        in_ms = [x / 1e6 for x in call.in_lat_ns]
        wire_ms = [x / 1e3 for x in call.in_wire_us if x < 10_000_000]
        return {
            "pinned": {"bot_cpu": bot_cpu, "harness_cpu": peer_cpu}, "cycles": cycles,
            "inbound_ms": summary(in_ms), "inbound_wire_ms": summary(wire_ms),
            "outbound_first_audio_ms": summary(out_ms),
            "barge_in_ms": summary(barge_ms), "barge_in_audio_packets_after": sum(late_audio),
            "barge_in_last_audio_rel_ms": summary(last_audio_ms),
            "barge_ins": call.barge_ins, "uplink_fill_frames": call.media.uplink_fill_frames,
            "dropped_audio": call.session.dropped_audio,
            # inbound: none here (Asterisk sends slin24); outbound: the 24->16 kHz resampler before G.722
            "resampler_delay_ms": {"24to16": StreamResampler(24000, 16000).latency_ms},
            "targets_ms": {"inbound_p99": 1.0, "outbound": 25.0, "barge_in": 20.0},
        }
    finally:
        if call is not None:
            await call.close()
        peer.close()
        fake.close()


def run(quick: bool = False, rt: bool = False) -> dict[str, Any]:
    bot_cpu, peer_cpu = cpus()
    with pinned(bot_cpu), realtime(rt):
        res = asyncio.run(_run(2 if quick else 20, bot_cpu, peer_cpu))
    res["meets_targets"] = {
        "inbound_p99": res["inbound_ms"]["p99"] <= 1.0,
        "outbound_max": res["outbound_first_audio_ms"]["max"] <= 25.0,
        "barge_in_max": res["barge_in_ms"]["max"] <= 20.0,
    }
    return res


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=1))
