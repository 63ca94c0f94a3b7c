"""media.py: `RtpMedia` (and `PortPool`) over real loopback UDP, with a test socket playing Asterisk.

No Asterisk here: the test socket sends what externalMedia sends (slin24 on PT 123, big-endian, 20 ms) and
receives what the bot sends back (G.722 PT 9, or L16 8 kHz PT 11), all in this test's event loop, so
``loop.time()`` is the one clock for everything. Timing bounds are generous: the machine is noisy.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from dataclasses import dataclass

import numpy as np
import pytest

from voiceai_ari.fakes.audio_gen import dominant_frequency, rms_dbfs, tone
from voiceai_ari.media.codec import G722Decoder, slin_be_to_le
from voiceai_ari.media.transport import DRAIN_MARGIN, PortPool, RtpMedia
from voiceai_ari.media.rtp import InboundFilter, RtpSender

HOST = "127.0.0.1"
FRAME_24K = 960   # bytes of 20 ms of 24 kHz PCM16
SLIN24_BYTES = 960  # payload of one 20 ms slin24 packet
SLIN24_PT = 123     # the dynamic PT Asterisk 22.10.1 gives slin24 (the gate learns it)


# ------------------------------------------------------------------------------------------------ helpers
def free_port_range(n: int) -> range:
    """``n`` consecutive UDP ports free on 127.0.0.1 right now (probed, then released)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000 - n)
        held = []
        try:
            for p in range(base, base + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind((HOST, p))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        return range(base, base + n)
    raise RuntimeError("no free UDP port range on 127.0.0.1")


def port_is_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


@dataclass(frozen=True)
class Rx:
    t: float
    pt: int
    marker: bool
    seq: int
    ts: int
    ssrc: int
    payload: bytes


class Endpoint(asyncio.DatagramProtocol):
    """A UDP socket on 127.0.0.1: records what it receives (with loop.time()), sends raw datagrams."""

    def __init__(self) -> None:
        self.rx: list[Rx] = []
        self.raw: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self._arrived = asyncio.Event()

    @classmethod
    async def open(cls) -> Endpoint:
        ep = cls()
        loop = asyncio.get_running_loop()
        ep.transport, _ = await loop.create_datagram_endpoint(lambda: ep, local_addr=(HOST, 0))
        ep.port = ep.transport.get_extra_info("sockname")[1]
        return ep

    @property
    def addr(self) -> tuple[str, int]:
        return HOST, self.port

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self.raw.append(data)
        b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
        assert b0 == 0x80, f"bot sent a packet with first byte {b0:#x}"
        self.rx.append(Rx(asyncio.get_running_loop().time(), b1 & 0x7F, bool(b1 & 0x80), seq, ts, ssrc, data[12:]))
        self._arrived.set()

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (HOST, port))

    async def wait_packets(self, n: int, timeout: float = 5.0) -> None:
        """Until at least ``n`` packets have arrived in total."""
        async with asyncio.timeout(timeout):
            while len(self.rx) < n:
                self._arrived.clear()
                await self._arrived.wait()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def slin24_packets(freq: float, n: int, sender: RtpSender, amplitude: float = 8000.0) -> list[bytes]:
    """``n`` 20 ms externalMedia packets (big-endian slin24) of a continuous tone."""
    t = np.arange(n * 480) / 24000
    be = np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(">i2").tobytes()
    return [sender.packet(be[k * SLIN24_BYTES:(k + 1) * SLIN24_BYTES]) for k in range(n)]


def uneven_chunks(pcm: bytes, seed: int, lo_ms: int = 10, hi_ms: int = 200) -> list[bytes]:
    """Cut 24 kHz PCM16 into chunks of lo..hi ms (whole samples, as the model's deltas are)."""
    rng, out, pos = random.Random(seed), [], 0
    while pos < len(pcm):
        n = 2 * rng.randint(lo_ms * 24, hi_ms * 24)
        out.append(pcm[pos:pos + n])
        pos += n
    return out


def g722_levels(packets: list[Rx]) -> tuple[bytes, list[float]]:
    """Decode G.722 payloads with ONE decoder, in order: (16 kHz PCM, per-packet level in dBFS). A packet's
    level skips its first 2 ms, where the previous frame's tail (QMF filter delay) still rings."""
    dec = G722Decoder()
    pcm, levels = [], []
    for p in packets:
        frame = dec.decode(p.payload)
        pcm.append(frame)
        levels.append(rms_dbfs(frame[64:]))
    return b"".join(pcm), levels


async def until(cond, timeout: float = 5.0, step: float = 0.002) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(step)


class LoopErrors:
    """Collects what the event loop's exception handler sees (e.g. a protocol callback that raised)."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self._loop = asyncio.get_running_loop()
        self._old = self._loop.get_exception_handler()
        self._loop.set_exception_handler(lambda loop, ctx: self.seen.append(ctx))

    def restore(self) -> None:
        self._loop.set_exception_handler(self._old)


@pytest.fixture(params=[False, True], ids=["read-per-packet", "read-per-tick"])
async def rig(request):
    """(media, asterisk endpoint, pool, loop errors): an opened RtpMedia (g722) and a socket playing Asterisk.
    Not yet connected: tests call ``media.set_remote(*ast.addr)`` when they want the clock to start.
    Every test runs twice: datagrams read as they arrive, and read once per 20 ms tick (VOICEAI_APPEND_MS > 20)."""
    made: list[tuple[RtpMedia, Endpoint]] = []
    errors = LoopErrors()

    async def make(return_codec: str = "g722", ports: int = 4, dtx: bool = False) -> tuple[RtpMedia, Endpoint, PortPool]:
        pool = PortPool(free_port_range(ports))
        media = RtpMedia(bind_host=HOST, advertise_host="localhost", pool=pool, return_codec=return_codec, dtx=dtx,
                         read_per_tick=request.param)
        await media.open()
        ast = await Endpoint.open()
        made.append((media, ast))
        return media, ast, pool

    yield make, errors
    for media, ast in made:
        await media.close()
        ast.close()
    errors.restore()
    assert not errors.seen, f"the event loop saw errors: {errors.seen}"


# ------------------------------------------------------------------------------------------------ set-up
async def test_binds_a_port_from_the_pool_skipping_taken_ones(rig):
    make, _ = rig
    pool = PortPool(free_port_range(3))
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind((HOST, pool._ports[0]))   # another process holds the first port
    try:
        media = RtpMedia(bind_host=HOST, advertise_host="localhost", pool=pool)
        await media.open()
        assert media.port == pool._ports[1]
        assert pool.in_use == 1
        assert media.external_host == f"127.0.0.1:{media.port}"   # the name is resolved for Asterisk
        assert not port_is_free(media.port)
        await media.close()
        await asyncio.sleep(0)   # asyncio closes the socket one loop turn after transport.close()
        assert pool.in_use == 0 and port_is_free(pool._ports[1])
    finally:
        blocker.close()


async def test_port_pool_exhausted():
    pool = PortPool(free_port_range(1))
    first = RtpMedia(bind_host=HOST, advertise_host=HOST, pool=pool)
    await first.open()
    second = RtpMedia(bind_host=HOST, advertise_host=HOST, pool=pool)
    with pytest.raises(RuntimeError, match="no free RTP port"):
        await second.open()
    await first.close()
    await second.close()
    assert pool.in_use == 0


# ------------------------------------------------------------------------------------------------ inbound
async def test_inbound_slin24_reaches_the_model_as_24k_pcm(rig):
    make, _ = rig
    media, ast, _ = await make()
    got: list[bytes] = []
    media.on_audio = got.append
    media.set_remote(*ast.addr)
    pkts = slin24_packets(1000, 50, RtpSender(SLIN24_PT, 480))
    for p in pkts:
        ast.send(p, media.port)
    await until(lambda: media.filter.received == 50)
    voice = b"".join(c for c in got if c != bytes(FRAME_24K))   # drop the uplink silence fill frames
    assert media.filter.accepted == 50 and sum(media.filter.drops.values()) == 0
    # 1 s at 24 kHz, byte-swapped to little-endian, nothing held back
    assert len(voice) == 50 * FRAME_24K
    assert media.filter.payload_type == SLIN24_PT   # learned from the first packet
    assert abs(dominant_frequency(voice, 24000) - 1000) < 3
    assert abs(rms_dbfs(voice[4800:]) - rms_dbfs(np.full(1, 8000 / np.sqrt(2), "<i2").tobytes())) < 0.5


async def test_read_per_tick_takes_a_burst_in_one_tick_in_order():
    """read_per_tick: no wake-up per datagram; the next 20 ms tick takes every packet that came, in order."""
    pool = PortPool(free_port_range(2))
    media = RtpMedia(bind_host=HOST, advertise_host=HOST, pool=pool, read_per_tick=True)
    await media.open()
    ast = await Endpoint.open()
    try:
        loop = asyncio.get_running_loop()
        got: list[tuple[int, bytes]] = []
        media.on_audio = lambda pcm: got.append((media.clock.ticks, pcm))
        media.set_remote(*ast.addr)
        await until(lambda: media.clock.ticks >= 2)
        while media.clock.until_next() < 0.008:      # send well before a tick is due
            await asyncio.sleep(0.002)
        del got[:]
        ticks_at_send = media.clock.ticks
        pkts = slin24_packets(1000, 5, RtpSender(SLIN24_PT, 480))
        for p in pkts:
            ast.send(p, media.port)
        for _ in range(3):
            await asyncio.sleep(0)                     # a per-packet reader would have them by now
        assert media.filter.received == 0 and media.clock.ticks == ticks_at_send
        t0 = loop.time()
        await until(lambda: media.filter.received == 5)
        assert loop.time() - t0 < 0.030
        voice = [(tick, pcm) for tick, pcm in got if pcm != bytes(FRAME_24K)]
        assert len({tick for tick, _ in voice}) == 1   # all five in one tick
        assert b"".join(pcm for _, pcm in voice) == b"".join(slin_be_to_le(p[12:]) for p in pkts)
    finally:
        await media.close()
        ast.close()
    assert pool.in_use == 0 and port_is_free(pool._ports[0])


async def test_uplink_silence_fills_caller_gaps(rig):
    """Asterisk forwards caller audio only while the caller sends: the model still gets 20 ms frames."""
    make, _ = rig
    media, ast, _ = await make()
    got: list[tuple[float, bytes]] = []
    loop = asyncio.get_running_loop()
    media.on_audio = lambda pcm: got.append((loop.time(), pcm))
    media.set_remote(*ast.addr)
    await asyncio.sleep(0.3)
    fill = [t for t, c in got if c == bytes(FRAME_24K)]
    assert len(fill) >= 5 and fill == [t for t, _ in got]
    assert media.uplink_fill_frames == len(fill)


async def test_packets_from_a_foreign_source_are_dropped_and_counted(rig):
    make, _ = rig
    media, ast, _ = await make()
    got: list[bytes] = []
    media.on_audio = got.append
    media.set_remote(*ast.addr)
    intruder = await Endpoint.open()
    try:
        for p in slin24_packets(5000, 40, RtpSender(SLIN24_PT, 480)):
            intruder.send(p, media.port)
        await until(lambda: media.filter.received == 40)
    finally:
        intruder.close()
    assert media.filter.drops["foreign_source"] == 40 and media.filter.accepted == 0
    assert all(c == bytes(FRAME_24K) for c in got)   # only the uplink silence fill reached the model


async def test_a_spoof_before_asterisks_address_is_known_does_not_silence_the_caller(rig):
    """Well-formed slin24 with another dynamic PT (96) reaches the port between bind and set_remote (the port
    range is predictable): dropped (as source_unknown when read at once; read per tick, it waits for the
    first tick and is dropped as foreign_source), and Asterisk's own stream (PT 123) is heard after."""
    make, _ = rig
    media, ast, _ = await make()
    got: list[bytes] = []
    media.on_audio = got.append
    intruder = await Endpoint.open()
    try:
        for p in slin24_packets(5000, 5, RtpSender(96, 480)):
            intruder.send(p, media.port)
        if not media._read_per_tick:
            await until(lambda: media.filter.received == 5)
    finally:
        intruder.close()
    media.set_remote(*ast.addr)
    for p in slin24_packets(700, 20, RtpSender(SLIN24_PT, 480)):
        ast.send(p, media.port)
    await until(lambda: media.filter.received == 25)
    heard = b"".join(c for c in got if c != bytes(FRAME_24K))
    assert len(heard) == 20 * 960 and abs(dominant_frequency(heard, 24000) - 700) < 5
    assert media.filter.accepted == 20 and media.filter.payload_type == SLIN24_PT
    reason = "foreign_source" if media._read_per_tick else "source_unknown"
    assert media.filter.drops.get(reason) == 5 and media.filter.drops["payload_type"] == 0


async def test_fuzz_from_the_expected_source_is_dropped_by_reason(rig):
    """Hostile datagrams from Asterisk's own address: counted under their reason, no exception, and the
    caller's audio (valid packets interleaved with them) still gets through."""
    make, errors = rig
    media, ast, _ = await make()
    got: list[bytes] = []
    media.on_audio = got.append
    media.set_remote(*ast.addr)
    rng = random.Random(20240607)

    def valid(seq: int, marker: bool = False) -> bytes:
        t = (seq * 480 + np.arange(480)) / 24000   # a 700 Hz tone, its phase following the sequence number
        payload = np.round(8000 * np.sin(2 * np.pi * 700 * t)).astype(">i2").tobytes()
        return (struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | SLIN24_PT, seq & 0xFFFF, seq * 480, 0x11223344)
                + payload)

    expect = dict.fromkeys(InboundFilter.REASONS, 0)
    highest = 1000
    datagrams: list[bytes] = [valid(highest)]   # Asterisk's stream starts first: the gate learns its PT
    accepted = 1
    for i in range(2400):
        kind = rng.choice(("valid", "valid", "random", "short", "version", "pt", "long", "dup", "late", "jump"))
        if kind == "valid" or kind == "jump":
            highest += 1 if kind == "valid" else rng.randint(2, 200)
            datagrams.append(valid(highest))
            accepted += 1
            continue
        if kind == "random":   # random bytes, never RTP version 2 (else it could be a valid packet)
            data = bytearray(rng.randbytes(rng.randint(0, 1500)))
            if data:
                data[0] = (data[0] & 0x3F) | (rng.choice((0, 1, 3)) << 6)
            datagrams.append(bytes(data))
            expect["malformed"] += 1
        elif kind == "short":
            datagrams.append(valid(highest + 1)[:rng.randint(1, 11)])
            expect["malformed"] += 1
        elif kind == "version":
            d = bytearray(valid(highest + 1))
            d[0] = (d[0] & 0x3F) | (rng.choice((0, 1, 3)) << 6)
            datagrams.append(bytes(d))
            expect["malformed"] += 1
        elif kind == "pt":
            d = bytearray(valid(highest + 1))
            d[1] = rng.choice((0, 8, 9, 127))
            datagrams.append(bytes(d))
            expect["payload_type"] += 1
        elif kind == "long":   # right PT, 3000-byte payload
            datagrams.append(valid(highest + 1)[:12] + rng.randbytes(3000))
            expect["bad_length"] += 1
        elif kind == "dup":
            datagrams.append(valid(highest))
            expect["duplicate"] += 1
        elif kind == "late":
            datagrams.append(valid(highest - rng.randint(1, 80)))
            expect["late"] += 1
    # the socket buffer is not the thing under test: send in batches the loop can keep up with
    for k in range(0, len(datagrams), 50):
        for d in datagrams[k:k + 50]:
            ast.send(d, media.port)
        await until(lambda: media.filter.received == min(k + 50, len(datagrams)))
    f = media.filter
    assert f.received == len(datagrams) == f.accepted + sum(f.drops.values())
    assert f.accepted == accepted
    assert f.drops == expect, (f.drops, expect)
    assert not errors.seen
    # the transport survived: the stream goes on, and the tone came through
    ast.send(valid(highest + 1), media.port)
    await until(lambda: f.accepted == accepted + 1)
    voice = b"".join(c for c in got if c != bytes(FRAME_24K))
    assert abs(dominant_frequency(voice, 24000) - 700) < 5


# ------------------------------------------------------------------------------------------------ outbound
async def test_idle_stream_is_paced_g722_silence(rig):
    make, _ = rig
    media, ast, _ = await make()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    media.set_remote(*ast.addr)
    await ast.wait_packets(1)
    first_after = ast.rx[0].t - t0
    await asyncio.sleep(1.0)
    rx = list(ast.rx)
    span = rx[-1].t - rx[0].t
    assert first_after < 0.1, first_after
    assert {p.pt for p in rx} == {9} and {len(p.payload) for p in rx} == {160}
    assert len({p.ssrc for p in rx}) == 1 and rx[0].ssrc == media.sender.ssrc
    assert all((b.seq - a.seq) & 0xFFFF == 1 and (b.ts - a.ts) & 0xFFFFFFFF == 160 for a, b in zip(rx, rx[1:]))
    # one packet per 20 ms on an absolute schedule: the count matches the elapsed time
    assert abs(len(rx) - 1 - span / 0.020) <= 2, (len(rx), span)
    assert 40 <= len(rx) <= 60
    assert not any(p.marker for p in rx)
    pcm, levels = g722_levels(rx)
    assert max(levels[2:]) < -60, max(levels)   # G.722 silence
    gaps = np.diff([p.t for p in rx]) * 1000
    print(f"\n[media] idle: {len(rx)} packets in {span * 1000:.0f} ms, interval median {np.median(gaps):.1f} ms, "
          f"max {gaps.max():.1f} ms")


async def test_play_sends_g722_voice_with_a_marker_then_silence(rig):
    make, _ = rig
    media, ast, _ = await make()
    media.set_remote(*ast.addr)
    await ast.wait_packets(3)
    start = len(ast.rx)
    for chunk in uneven_chunks(tone(440, 1.0, 24000, dbfs=-12.0), seed=5):
        media.play(chunk, "item_A")
    media.end_item()
    await media.drained()
    await asyncio.sleep(0.1)
    rx = list(ast.rx)
    assert all((b.seq - a.seq) & 0xFFFF == 1 and (b.ts - a.ts) & 0xFFFFFFFF == 160 for a, b in zip(rx, rx[1:]))
    pcm, levels = g722_levels(rx)
    voice_idx = [i for i, lv in enumerate(levels) if lv > -30]
    marked = [i for i, p in enumerate(rx) if p.marker]
    assert marked == [voice_idx[0]], (marked, voice_idx[:3])
    assert voice_idx[0] >= start
    assert voice_idx == list(range(voice_idx[0], voice_idx[-1] + 1)), "the voice must be one unbroken run"
    assert 50 <= len(voice_idx) <= 51, len(voice_idx)   # 1 s = 50 frames (+ the resampler's tail)
    voice = pcm[voice_idx[0] * 640:(voice_idx[-1] + 1) * 640]
    assert abs(dominant_frequency(voice, 16000) - 440) < 3
    assert abs(rms_dbfs(voice[3200:-3200]) - (-12 - 3.01)) < 1.0   # -12 dBFS peak sine, through G.722
    assert max(levels[voice_idx[-1] + 2:]) < -60   # silence again after it
    assert media.playout.underruns == 0


async def test_dtx_sends_a_keepalive_per_second_while_silent_and_speech_stays_decodable(rig):
    """VOICEAI_DTX: no packets between the bot's words but one per second; the skipped frames show as a
    timestamp gap, speech starts with the marker bit, and one G.722 decoder still decodes it cleanly
    (nothing unsent was ever encoded, so Asterisk's decoder stays in step)."""
    make, _ = rig
    media, ast, _ = await make(dtx=True)
    media.set_remote(*ast.addr)
    await asyncio.sleep(2.2)
    idle = list(ast.rx)
    assert 1 <= len(idle) <= 3, len(idle)                 # ~110 frames went by: 2 keepalives
    assert all((b.ts - a.ts) & 0xFFFFFFFF == 50 * 160 for a, b in zip(idle, idle[1:]))
    for chunk in uneven_chunks(tone(440, 0.6, 24000, dbfs=-12.0), seed=3):
        media.play(chunk, "item_D")
    media.end_item()
    await media.drained()
    await asyncio.sleep(0.3)
    rx = list(ast.rx)
    talk = rx[len(idle):]
    assert talk[0].marker and not any(p.marker for p in talk[1:])
    assert (talk[0].ts - idle[-1].ts) & 0xFFFFFFFF == 160 * round(
        (talk[0].t - idle[-1].t) / 0.020)                 # the gap is in the timestamps, in whole frames
    assert 30 <= len(talk) <= 32, len(talk)               # 0.6 s of speech (+ its tail), nothing after it
    pcm, levels = g722_levels(rx)
    voice = pcm[len(idle) * 640:]
    assert abs(dominant_frequency(voice, 16000) - 440) < 3
    assert abs(rms_dbfs(voice[3200:-3200]) - (-12 - 3.01)) < 1.0
    assert media.dtx_skipped > 100 and media.stats()["dtx_skipped"] == media.dtx_skipped


async def test_interrupt_stops_the_voice_within_one_packet(rig):
    make, _ = rig
    media, ast, _ = await make()
    media.set_remote(*ast.addr)
    await ast.wait_packets(2)
    for chunk in uneven_chunks(tone(440, 3.0, 24000, dbfs=-12.0), seed=9):
        media.play(chunk, "item_B")
    sent_before, seq_first = media.sender.packets_sent, media.sender.sequence   # the next packet is voice
    await until(lambda: media.sender.packets_sent >= sent_before + 15)
    sent_at_cut, seq_cut = media.sender.packets_sent, media.sender.sequence
    item_id, played_ms = media.interrupt()
    voice_sent = sent_at_cut - sent_before
    assert item_id == "item_B"
    assert played_ms == 20 * voice_sent, (played_ms, voice_sent)
    # the model keeps streaming the cut item until its cancel lands: none of it may play
    media.play(tone(440, 0.5, 24000), "item_B")
    media.end_item()
    await asyncio.sleep(0.3)
    rx = list(ast.rx)
    _, levels = g722_levels(rx)
    idx_first = next(i for i, p in enumerate(rx) if p.seq == seq_first)
    idx_cut = next(i for i, p in enumerate(rx) if p.seq == seq_cut)   # the first packet sent after the cut
    assert idx_cut - idx_first == voice_sent
    assert all(lv > -30 for lv in levels[idx_first:idx_cut]), levels[idx_first:idx_cut]
    assert rx[idx_first].marker and max(levels[:idx_first]) < -60
    assert max(levels[idx_cut:]) < -60, levels[idx_cut:idx_cut + 5]   # the very next packet is silence
    assert media.playout.queued_ms == 0
    # a new item plays again, starting a new talkspurt
    n = len(ast.rx)
    media.play(tone(880, 0.2, 24000, dbfs=-12.0), "item_C")
    media.end_item()
    await media.drained()
    await asyncio.sleep(0.05)
    rx2 = list(ast.rx)
    _, levels2 = g722_levels(rx2)
    new_voice = [i for i in range(n, len(rx2)) if levels2[i] > -30]
    assert 10 <= len(new_voice) <= 11 and rx2[new_voice[0]].marker


async def test_drained_returns_once_the_queue_is_empty(rig):
    make, _ = rig
    media, ast, _ = await make()
    media.set_remote(*ast.addr)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await media.drained()                       # nothing queued: only the margin
    assert loop.time() - t0 < DRAIN_MARGIN + 0.2
    media.play(tone(440, 0.6, 24000, dbfs=-12.0), "item_D")
    media.end_item()
    t0 = loop.time()
    await media.drained()
    took = loop.time() - t0
    assert media.playout.queued_ms == 0
    assert 0.55 <= took < 1.5, took            # 0.6 s of audio at real time (+ the 60 ms margin)
    _, levels = g722_levels(list(ast.rx))
    assert sum(lv > -30 for lv in levels) == 30   # every frame is on the wire when drained() returns


async def test_close_releases_the_port_and_stops_sending(rig):
    make, _ = rig
    media, ast, pool = await make()
    media.set_remote(*ast.addr)
    await ast.wait_packets(5)
    port = media.port
    await media.close()
    await asyncio.sleep(0.005)
    n = len(ast.rx)
    assert pool.in_use == 0 and port_is_free(port)
    await asyncio.sleep(0.2)
    assert len(ast.rx) == n, "packets after close()"
    await media.close()                          # idempotent
    assert pool.in_use == 0
    media.set_remote(*ast.addr)                  # a late set_remote does not restart the clock
    await asyncio.sleep(0.1)
    assert len(ast.rx) == n
    # the released port is handed out again
    again = RtpMedia(bind_host=HOST, advertise_host=HOST, pool=pool)
    await again.open()
    taken = {again.port}
    await again.close()
    assert taken <= set(pool._ports)


async def test_l16_8k_return_codec(rig):
    make, _ = rig
    media, ast, _ = await make(return_codec="l16-8k")
    media.set_remote(*ast.addr)
    await ast.wait_packets(5)
    assert {p.pt for p in ast.rx} == {11} and {p.payload for p in ast.rx} == {bytes(320)}   # silence = zeros
    media.play(tone(440, 0.5, 24000, dbfs=-12.0), "item_E")
    media.end_item()
    await media.drained()
    rx = list(ast.rx)
    assert {len(p.payload) for p in rx} == {320}
    assert all((b.seq - a.seq) & 0xFFFF == 1 and (b.ts - a.ts) & 0xFFFFFFFF == 160 for a, b in zip(rx, rx[1:]))
    voice = [p for p in rx if p.payload != bytes(320)]
    assert voice[0].marker and sum(p.marker for p in rx) == 1
    assert 25 <= len(voice) <= 26
    pcm = np.frombuffer(b"".join(p.payload for p in voice), ">i2").astype("<i2").tobytes()   # big-endian
    assert abs(dominant_frequency(pcm, 8000) - 440) < 3
    assert abs(rms_dbfs(pcm[800:-800]) - (-12 - 3.01)) < 0.5
    assert media.stats()["codec"] == "l16-8k" and media.stats()["tx_packets"] == media.sender.packets_sent


async def test_odd_length_model_deltas_are_carried_not_fatal():
    from voiceai_ari.media.transport import PortPool, RtpMedia
    media = RtpMedia(bind_host="127.0.0.1", advertise_host="127.0.0.1", pool=PortPool(range(47900, 47910)))
    await media.open()
    try:
        pcm = bytes(range(256)) * 40          # 10240 bytes, fed in odd-sized pieces
        for i in range(0, len(pcm), 961):
            media.play(pcm[i:i + 961], "item_1")
        media.end_item()
        assert media.playout.queued_ms > 0
    finally:
        await media.close()
