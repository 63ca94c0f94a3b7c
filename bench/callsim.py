"""A synthetic call: the bot's real per-call objects without Asterisk's control plane.

``SimCall`` builds what ``app.VoiceAiApp`` and ``call.Call`` build for a call, minus ARI: an ``RtpMedia`` (its
own UDP port from a ``PortPool``, the inbound gate, the resampler, the playout, the G.722 encoder and the
process-wide 20 ms clock) and a ``RealtimeSession`` to a (fake) Realtime server, wired the way
``Call._converse`` wires them: caller audio -> ``session.send_audio``; ``AudioDelta`` -> ``media.play``;
``AudioDone`` -> ``media.end_item``; ``SpeechStarted`` -> ``media.interrupt`` + ``session.interrupt``.

Measurement taps replace bound methods on the instances (nothing in voiceai_ari is changed):

- ``TimedTransport``: every ``sendto`` of the call's RTP, with its monotonic time and whether it carried bot
  audio (``Playout.pop`` returned a frame) or filler silence.
- inbound taps (``tap_inbound``): RTP arrival (``datagram_received``) -> the matching
  ``input_audio_buffer.append`` handed to the socket (inside ``send_audio`` when it is written at once, or
  when the send task's ``ClientConnection.send`` returns if it had to queue); the RTP
  timestamp field carries the peer's send time (bench.peers), so the wire-to-append time is known too.
- model taps (``tap_model``): when each server event was read off the socket (``RealtimeProtocol.receive``
  entered): the first ``output_audio.delta`` of each item and each ``speech_started``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from voiceai_ari.media.transport import PortPool, RtpMedia
from voiceai_ari.providers.base import AudioDelta, AudioDone, ModelClosed, ResponseDone, SpeechStarted
from voiceai_ari.providers.openai_realtime.protocol import SessionConfig
from voiceai_ari.providers.openai_realtime.session import RealtimeSession

now_ns = time.monotonic_ns  # the clock every tap uses (perf_counter is CLOCK_MONOTONIC too on Linux)
APPEND_PREFIX = '{"type":"input_audio_buffer.append"'


class TimedTransport:
    """Wraps the call's datagram transport: records (time ns, carried bot audio) for every sendto."""

    __slots__ = ("_t", "_sendto", "times", "audio", "_kind", "record")

    def __init__(self, transport: Any, kind: list[bool], record: bool = True) -> None:
        self._t = transport
        self._sendto = transport.sendto
        self.times: list[int] = []
        self.audio: list[bool] = []
        self._kind = kind
        self.record = record

    def sendto(self, data: bytes, addr: Any = None) -> None:
        if self.record:
            self.times.append(now_ns())
            self.audio.append(self._kind[0])
        self._sendto(data, addr)

    def reset(self) -> None:
        self.times = []
        self.audio = []

    def close(self) -> None:
        self._t.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


class SimCall:
    def __init__(self, *, url: str, api_key: str, pool: PortPool, config: SessionConfig | None = None,
                 talk_again_below_ms: int | None = None, caller_format: str = "slin24") -> None:
        self.media = RtpMedia(bind_host="127.0.0.1", advertise_host="127.0.0.1", pool=pool,
                              caller_format=caller_format)
        audio = {"ulaw": "pcmu", "alaw": "pcma"}.get(caller_format, "pcm")
        self.session = RealtimeSession(url, api_key, config or SessionConfig(audio_format=audio))
        self.talk_again_below_ms = talk_again_below_ms  # keep the bot talking: a new response when low
        self._pump: asyncio.Task[None] | None = None
        self._talker: asyncio.Task[None] | None = None
        self._kind = [False]
        self.tx: TimedTransport | None = None
        self.responses_done = 0
        self.barge_ins = 0
        self._done = asyncio.Event()
        # inbound taps
        self.in_fifo: deque[tuple[int, int] | None] = deque()
        self.in_lat_ns: list[int] = []        # datagram_received -> append written
        self.in_wire_us: list[int] = []       # peer sendto -> append written (RTP timestamp = peer µs)
        # model taps
        self.first_delta: dict[str, int] = {}     # item_id -> when its first delta was read
        self.speech_started: list[int] = []

    async def start(self, remote: tuple[str, int]) -> None:
        """Bind the port, connect the model, wire them, start the 20 ms clock towards ``remote``."""
        await self.media.open()
        await self.session.start()
        media = self.media
        pop = media.playout.pop
        kind = self._kind

        def tapped_pop() -> Any:
            item = pop()
            kind[0] = item is not None
            return item

        media.playout.pop = tapped_pop  # type: ignore[method-assign]
        media.on_audio = self.session.send_audio
        media.set_remote(*remote)
        assert media._transport is not None
        self.tx = TimedTransport(media._transport, kind)
        media._transport = self.tx  # type: ignore[assignment]
        self._pump = asyncio.create_task(self._converse())
        if self.talk_again_below_ms is not None:
            self._talker = asyncio.create_task(self._keep_talking())

    async def _converse(self) -> None:
        """call.Call._converse, the media and barge-in part."""
        media, model = self.media, self.session
        async for ev in model.events():
            if isinstance(ev, AudioDelta):
                media.play(ev.pcm, ev.item_id)
            elif isinstance(ev, AudioDone):
                media.end_item()
            elif isinstance(ev, SpeechStarted):
                item_id, played_ms = media.interrupt()
                model.interrupt(item_id, played_ms)
                self.barge_ins += 1
            elif isinstance(ev, ResponseDone):
                self.responses_done += 1
                self._done.set()
            elif isinstance(ev, ModelClosed):
                return

    async def _keep_talking(self) -> None:
        """Continuous bot speech with bounded queueing: ask for the next response once the queue is low."""
        low = self.talk_again_below_ms or 0
        self.session.request_response()
        while True:
            await self._done.wait()
            self._done.clear()
            q = self.media.playout.queued_ms
            if q > low:
                await asyncio.sleep((q - low) / 1000)
            self.session.request_response()

    # --- taps --------------------------------------------------------------------------------------------
    def tap_inbound(self) -> None:
        """RTP arrival -> append written. Call after start()."""
        media, session = self.media, self.session
        fifo = self.in_fifo
        orig_rx = media.datagram_received
        inside: list[tuple[int, int] | None] = [None]

        def datagram_received(data: bytes, addr: Any) -> None:
            inside[0] = (now_ns(), int.from_bytes(data[4:8], "big") if len(data) >= 8 else 0)
            try:
                orig_rx(data, addr)
            finally:
                inside[0] = None

        send_audio = session.send_audio

        def record(item: tuple[int, int] | None) -> None:
            if item is not None:
                t = now_ns()
                self.in_lat_ns.append(t - item[0])
                self.in_wire_us.append(((t // 1000) - item[1]) & 0xFFFFFFFF)

        def on_audio(pcm: bytes) -> None:
            dropped, queued = session.dropped_audio, session._outbox.queued
            send_audio(pcm)
            if session.dropped_audio != dropped:
                return
            if session._outbox.queued > queued:
                fifo.append(inside[0])   # queued: timed when the send task writes it
            else:
                record(inside[0])        # written to the socket inside send_audio

        media.datagram_received = datagram_received  # type: ignore[method-assign]
        media.on_audio = on_audio
        ws = session._ws
        assert ws is not None
        ws_send = ws.send

        async def send(message: Any, *args: Any, **kw: Any) -> None:
            await ws_send(message, *args, **kw)
            if isinstance(message, str) and message.startswith(APPEND_PREFIX) and fifo:
                record(fifo.popleft())

        ws.send = send  # type: ignore[method-assign]

    def tap_model(self) -> None:
        """When server events are read: first delta per item, speech_started."""
        proto = self.session.proto
        receive = proto.receive
        first = self.first_delta
        starts = self.speech_started

        def tapped(text: str | bytes) -> Any:
            t = now_ns()
            events = receive(text)
            for ev in events:
                if isinstance(ev, AudioDelta):
                    if ev.item_id not in first:
                        first[ev.item_id] = t
                elif isinstance(ev, SpeechStarted):
                    starts.append(t)
            return events

        proto.receive = tapped  # type: ignore[method-assign]

    async def close(self) -> None:
        for task in (self._talker, self._pump):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._talker, self._pump) if t is not None), return_exceptions=True)
        await self.session.close()
        await self.media.close()
