"""rtp.py: packets as values, wraparound math, the sender and the inbound gate."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voiceai_ari.media.rtp import (
    InboundFilter,
    RtpError,
    RtpPacket,
    RtpSender,
    parse_rtp,
    seq_add,
    seq_diff,
    ts_add,
)

ASTERISK = ("127.0.0.1", 10928)

# 20 ms of a 1 kHz tone at 16 kHz, big-endian: what externalMedia format=slin16 sends.
TONE_BE = (np.sin(2 * np.pi * 1000 * np.arange(320) / 16000) * 8000).astype(">i2").tobytes()
# As captured: V=2, PT 118, seq 0x1a2b, ts 123456, SSRC 0x7f3e9a01, 640 B payload.
SLIN16_PACKET = bytes.fromhex("80761a2b0001e2407f3e9a01") + TONE_BE


def assert_round_trip(data: bytes, padding: int = 0) -> RtpPacket:
    """Parse, re-serialize, and require the original bytes back (websockets' assertFrameData)."""
    pkt = parse_rtp(data)
    assert pkt.to_bytes(padding) == data
    return pkt


class TestParse:
    def test_slin16_packet(self) -> None:
        pkt = assert_round_trip(SLIN16_PACKET)
        assert pkt.payload_type == 118
        assert pkt.sequence == 0x1A2B
        assert pkt.timestamp == 123456
        assert pkt.ssrc == 0x7F3E9A01
        assert pkt.marker is False
        assert pkt.csrc == ()
        assert pkt.extension is None
        assert pkt.payload == TONE_BE and len(pkt.payload) == 640

    def test_marker(self) -> None:
        data = bytes.fromhex("80f6ffff00000140deadbeef") + TONE_BE
        pkt = assert_round_trip(data)
        assert (pkt.marker, pkt.payload_type, pkt.sequence, pkt.timestamp, pkt.ssrc) == (
            True,
            118,
            65535,
            320,
            0xDEADBEEF,
        )

    def test_csrc_list(self) -> None:
        data = bytes.fromhex("8209000100000002000000030000000a0000000b") + b"\x55" * 160
        pkt = assert_round_trip(data)
        assert pkt.csrc == (10, 11)
        assert (pkt.payload_type, pkt.sequence, pkt.timestamp, pkt.ssrc) == (9, 1, 2, 3)
        assert pkt.payload == b"\x55" * 160

    def test_header_extension(self) -> None:
        # RFC 8285 one-byte form: profile 0xBEDE, 1 word: id 1, len 0 (1 byte) value 0x42, then padding.
        data = bytes.fromhex("90760005000000640000000b" "bede0001" "10420000") + TONE_BE
        pkt = assert_round_trip(data)
        assert pkt.extension == (0xBEDE, bytes.fromhex("10420000"))
        assert pkt.payload == TONE_BE

    def test_empty_header_extension(self) -> None:
        pkt = assert_round_trip(bytes.fromhex("90000000000000000000000012340000") + b"x")
        assert pkt.extension == (0x1234, b"")
        assert pkt.payload == b"x"

    def test_padding_is_stripped(self) -> None:
        data = bytes.fromhex("a0760007000001180000000c") + TONE_BE + bytes.fromhex("00000004")
        pkt = assert_round_trip(data, padding=4)
        assert pkt.payload == TONE_BE
        assert pkt.to_bytes() == SLIN16_PACKET[:2] + data[2:12] + TONE_BE

    def test_everything_at_once(self) -> None:
        data = (
            bytes.fromhex("b1f600090000000a0000000b" "0000000c" "abcd0002" "0102030405060708")
            + b"payload"
            + bytes.fromhex("0000")
            + b"\x03"
        )
        pkt = assert_round_trip(data, padding=3)
        assert pkt == RtpPacket(118, 9, 10, 11, b"payload", True, (12,), (0xABCD, bytes(range(1, 9))))

    def test_accepts_bytearray_and_memoryview(self) -> None:
        expected = parse_rtp(SLIN16_PACKET)
        assert parse_rtp(bytearray(SLIN16_PACKET)) == parse_rtp(memoryview(SLIN16_PACKET)) == expected

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"", "RTP packet shorter than 12 bytes"),
            (SLIN16_PACKET[:11], "RTP packet shorter than 12 bytes"),
            (b"\x40" + SLIN16_PACKET[1:], "RTP version 1 is not 2"),
            (b"\x00" + SLIN16_PACKET[1:], "RTP version 0 is not 2"),
            (b"\xc0" + SLIN16_PACKET[1:], "RTP version 3 is not 2"),
            (b"\x82" + SLIN16_PACKET[1:12] + b"\0\0\0\1", "RTP packet has truncated CSRC list"),
            (b"\x8f" + SLIN16_PACKET[1:12] + bytes(56), "RTP packet has truncated CSRC list"),
            (b"\x90" + SLIN16_PACKET[1:12] + b"\xbe\xde", "RTP header extension truncated"),
            (b"\x90" + SLIN16_PACKET[1:12] + b"\xbe\xde\x00\x02" + bytes(7), "RTP header extension truncated"),
            (b"\xa0" + SLIN16_PACKET[1:12], "RTP padding flag set but packet has no payload"),
            (b"\xa0" + SLIN16_PACKET[1:12] + bytes(99) + b"\xc8", "RTP padding length 200 exceeds payload"),
            (b"\xa0" + SLIN16_PACKET[1:12] + b"\x01\x00", "RTP padding length 0 is invalid"),
        ],
    )
    def test_errors_name_the_defect(self, data: bytes, message: str) -> None:
        with pytest.raises(RtpError) as exc_info:
            parse_rtp(data)
        assert str(exc_info.value) == message
        assert isinstance(exc_info.value, ValueError)

    def test_padding_may_fill_the_whole_payload(self) -> None:
        pkt = parse_rtp(b"\xa0" + SLIN16_PACKET[1:12] + b"\x00\x00\x03")
        assert pkt.payload == b""

    @pytest.mark.parametrize(
        ("pkt", "padding", "message"),
        [
            (RtpPacket(128, 0, 0, 0, b""), 0, "RTP payload type 128 is out of range 0..127"),
            (RtpPacket(0, 0, 0, 0, b"", csrc=tuple(range(16))), 0, "RTP CSRC count 16 exceeds 15"),
            (
                RtpPacket(0, 0, 0, 0, b"", extension=(1, b"abc")),
                0,
                "RTP header extension length 3 is not a multiple of 4",
            ),
            (RtpPacket(0, 0, 0, 0, b""), 256, "RTP padding length 256 is out of range 0..255"),
        ],
    )
    def test_to_bytes_rejects_unencodable(self, pkt: RtpPacket, padding: int, message: str) -> None:
        with pytest.raises(RtpError) as exc_info:
            pkt.to_bytes(padding)
        assert str(exc_info.value) == message


u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=u16,
    timestamp=u32,
    ssrc=u32,
    payload=st.binary(max_size=700),
    marker=st.booleans(),
    csrc=st.lists(u32, max_size=15).map(tuple),
    extension=st.none() | st.tuples(u16, st.binary(max_size=64).map(lambda b: b[: len(b) // 4 * 4])),
)


@given(st.binary(max_size=200))
def test_parse_arbitrary_bytes_returns_packet_or_rtp_error(data: bytes) -> None:
    try:
        pkt = parse_rtp(data)
    except RtpError:
        return
    assert isinstance(pkt, RtpPacket)
    assert len(pkt.to_bytes()) <= len(data)


@given(packets, st.integers(0, 255))
def test_round_trip_generated_packets(pkt: RtpPacket, padding: int) -> None:
    data = pkt.to_bytes(padding)
    assert parse_rtp(data) == pkt
    assert parse_rtp(data).to_bytes(padding) == data


def test_wraparound_helpers() -> None:
    assert seq_add(65535, 1) == 0
    assert seq_add(65000, 1000) == 464
    assert seq_add(0, -1) == 65535
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(5, 5) == 0
    assert seq_diff(32767, 0) == 32767
    assert seq_diff(32768, 0) == -32768
    assert ts_add(2**32 - 1, 1) == 0
    assert ts_add(2**32 - 160, 320) == 160


@given(u16, st.integers(-32768, 32767))
def test_seq_diff_inverts_seq_add(a: int, n: int) -> None:
    assert seq_diff(seq_add(a, n), a) == n


class TestRtpSender:
    def test_stamps_and_steps(self) -> None:
        sender = RtpSender(9, 160, ssrc=0x01020304, sequence=100, timestamp=1000)
        first = parse_rtp(sender.packet(b"\x11" * 160, marker=True))
        second = parse_rtp(sender.packet(b"\x22" * 160))
        assert first == RtpPacket(9, 100, 1000, 0x01020304, b"\x11" * 160, marker=True)
        assert second == RtpPacket(9, 101, 1160, 0x01020304, b"\x22" * 160, marker=False)
        assert (sender.sequence, sender.timestamp) == (102, 1320)
        assert (sender.packets_sent, sender.octets_sent) == (2, 320)

    def test_header_bytes(self) -> None:
        sender = RtpSender(11, 160, ssrc=0xAABBCCDD, sequence=0x1234, timestamp=0x01020304)
        assert sender.packet(b"pq", marker=True) == bytes.fromhex("808b123401020304aabbccdd") + b"pq"

    def test_sequence_and_timestamp_wrap(self) -> None:
        sender = RtpSender(9, 160, ssrc=1, sequence=65535, timestamp=2**32 - 160)
        a, b = parse_rtp(sender.packet(b"a")), parse_rtp(sender.packet(b"b"))
        assert (a.sequence, a.timestamp) == (65535, 2**32 - 160)
        assert (b.sequence, b.timestamp) == (0, 0)
        assert seq_diff(b.sequence, a.sequence) == 1

    def test_returned_packets_are_independent_of_the_reused_buffer(self) -> None:
        sender = RtpSender(9, 160, ssrc=1, sequence=1, timestamp=1)
        first = sender.packet(b"\x01" * 160)
        sender.packet(b"\x02" * 160)
        assert isinstance(first, bytes) and first[12:] == b"\x01" * 160

    def test_large_payload(self) -> None:
        sender = RtpSender(11, 160, ssrc=1, sequence=1, timestamp=1)
        assert parse_rtp(sender.packet(bytes(5000))).payload == bytes(5000)
        assert parse_rtp(sender.packet(b"x")).payload == b"x"

    def test_skip_advances_timestamp_only(self) -> None:
        sender = RtpSender(9, 160, ssrc=1, sequence=7, timestamp=0)
        sender.skip(3)
        pkt = parse_rtp(sender.packet(b""))
        assert (pkt.sequence, pkt.timestamp) == (7, 480)

    def test_random_start_values(self) -> None:
        senders = [RtpSender(9, 160) for _ in range(64)]
        assert all(0 <= s.sequence < 32768 for s in senders)  # lower half: first wrap far away
        assert all(0 <= s.timestamp < 2**32 and 0 <= s.ssrc < 2**32 for s in senders)
        assert len({s.ssrc for s in senders}) > 60

    def test_rejects_bad_payload_type(self) -> None:
        with pytest.raises(ValueError, match="out of range"):
            RtpSender(200, 160)


def slin(seq: int, ssrc: int = 0x1111, pt: int = 118, size: int = 640, ts: int | None = None) -> bytes:
    ts = seq * 320 if ts is None else ts
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + bytes([seq & 0xFF]) * size


def assert_counters_add_up(f: InboundFilter) -> None:
    assert f.received == f.accepted + sum(f.drops.values())


def gate(**kw) -> InboundFilter:
    """A filter that knows Asterisk's address (as after ``RtpMedia.set_remote``)."""
    f = InboundFilter(**kw)
    f.expected_source = ASTERISK
    return f


class TestInboundFilter:
    def test_accepts_in_order_stream(self) -> None:
        f = gate()
        out = [f.accept(slin(s), ASTERISK) for s in range(10, 20)]
        assert out == [bytes([s]) * 640 for s in range(10, 20)]
        assert (f.received, f.accepted, f.lost, f.ssrc_changes) == (10, 10, 0, 0)
        assert not any(f.drops.values())

    def test_foreign_source(self) -> None:
        f = gate()
        f.expected_source = ("127.0.0.1", "10928")  # ARI channel variables are strings
        assert f.expected_source == ASTERISK
        assert f.accept(slin(1), ("127.0.0.1", 10929)) is None
        assert f.accept(slin(1), ("10.0.0.1", 10928)) is None
        assert f.accept(slin(1), ASTERISK) is not None
        assert f.drops["foreign_source"] == 2
        assert_counters_add_up(f)

    def test_nothing_is_accepted_before_the_source_is_known(self) -> None:
        f = InboundFilter()
        assert f.accept(slin(1), ("192.0.2.7", 4000)) is None
        assert f.accept(slin(2), ASTERISK) is None      # not even from Asterisk's address: not announced yet
        assert f.drops["source_unknown"] == 2
        f.expected_source = ASTERISK
        assert f.accept(slin(3), ASTERISK) == b"\x03" * 640
        assert_counters_add_up(f)

    def test_a_spoofed_packet_before_the_source_is_known_does_not_fix_the_payload_type(self) -> None:
        """One well-formed datagram with another dynamic PT reaches the port before Asterisk's address is
        known (the port range is predictable): Asterisk's own packets must still be heard."""
        f = InboundFilter(payload_type=None, payload_bytes=640)
        assert f.accept(slin(7, ssrc=0xBAD, pt=96), ("127.0.0.1", 40000)) is None
        f.expected_source = ASTERISK
        heard = [f.accept(slin(s, pt=123), ASTERISK) for s in range(1, 6)]
        assert heard == [bytes([s]) * 640 for s in range(1, 6)]
        assert f.payload_type == 123
        assert (f.drops["source_unknown"], f.drops["payload_type"], f.accepted) == (1, 0, 5)
        assert_counters_add_up(f)

    def test_wrong_payload_type_malformed_and_bad_length(self) -> None:
        f = gate()
        assert f.accept(slin(1, pt=0, size=160), ASTERISK) is None
        assert f.accept(b"\x80\x76", ASTERISK) is None
        assert f.accept(slin(1, size=320), ASTERISK) is None
        assert f.drops == {
            "source_unknown": 0,
            "malformed": 1,
            "foreign_source": 0,
            "payload_type": 1,
            "bad_length": 1,
            "duplicate": 0,
            "late": 0,
        }
        assert f.accept(slin(1, size=320), ASTERISK) is None
        assert gate(payload_bytes=None).accept(slin(1, size=320), ASTERISK) == b"\x01" * 320

    def test_learns_the_dynamic_payload_type_from_the_first_good_packet(self) -> None:
        f = gate(payload_type=None, payload_bytes=640)
        assert f.accept(slin(1, pt=0, size=640), ASTERISK) is None       # static PT: never learned
        assert f.accept(slin(2, pt=123, size=320), ASTERISK) is None     # wrong size: not learned either
        assert f.payload_type is None
        assert f.accept(slin(3, pt=123), ASTERISK) == b"\x03" * 640     # learned here
        assert f.payload_type == 123
        assert f.accept(slin(4, pt=118), ASTERISK) is None               # locked from now on
        assert f.accept(slin(5, pt=123), ASTERISK) == b"\x05" * 640
        assert (f.drops["payload_type"], f.drops["bad_length"], f.accepted) == (2, 1, 2)
        assert_counters_add_up(f)

    def test_duplicate_and_late(self) -> None:
        f = gate()
        for s in (1, 2, 2, 4, 3, 5, 1):
            f.accept(slin(s), ASTERISK)
        assert f.accepted == 4  # 1, 2, 4, 5
        assert f.drops["duplicate"] == 1
        assert f.drops["late"] == 2  # 3 (reordered past 4), then 1
        assert f.lost == 1  # the gap at 3, counted when 4 arrived
        assert_counters_add_up(f)

    def test_sequence_wrap(self) -> None:
        f = gate()
        seqs = [65533, 65534, 65535, 0, 1, 3]
        accepted = [f.accept(slin(s), ASTERISK) is not None for s in seqs]
        assert accepted == [True] * 6
        assert f.lost == 1
        assert f.accept(slin(65535), ASTERISK) is None
        assert f.drops["late"] == 1

    def test_ssrc_change_resyncs(self) -> None:
        f = gate()
        f.accept(slin(5000, ssrc=1), ASTERISK)
        f.accept(slin(5001, ssrc=1), ASTERISK)
        assert f.accept(slin(17, ssrc=2), ASTERISK) is not None  # would be "late" under the old SSRC
        assert f.accept(slin(18, ssrc=2), ASTERISK) is not None
        assert (f.ssrc_changes, f.lost, f.ssrc, f.highest_seq) == (1, 0, 2, 18)
        assert_counters_add_up(f)

    def test_sequence_restart_with_same_ssrc_resyncs_after_two_packets(self) -> None:
        f = gate()
        f.accept(slin(20000), ASTERISK)
        assert f.accept(slin(100), ASTERISK) is None  # far behind: late, but remembered
        assert f.accept(slin(101), ASTERISK) == b"\x65" * 640  # its successor confirms the restart
        assert f.accept(slin(102), ASTERISK) is not None
        assert (f.seq_resyncs, f.lost, f.drops["late"]) == (1, 0, 1)

    def test_small_reorder_does_not_resync(self) -> None:
        f = gate()
        for s in (10, 11, 12):
            f.accept(slin(s), ASTERISK)
        assert f.accept(slin(8), ASTERISK) is None
        assert f.accept(slin(9), ASTERISK) is None
        assert f.seq_resyncs == 0

    def test_huge_forward_jump_is_resync_not_loss(self) -> None:
        f = gate()
        f.accept(slin(0), ASTERISK)
        assert f.accept(slin(10000), ASTERISK) is not None
        assert (f.lost, f.seq_resyncs) == (0, 1)

    def test_never_raises_on_odd_inputs(self) -> None:
        f = gate()
        assert f.accept(slin(1), ()) is None  # type: ignore[arg-type]
        assert f.accept(None, ASTERISK) is None  # type: ignore[arg-type]
        assert (f.drops["foreign_source"], f.drops["malformed"]) == (1, 1)
        assert_counters_add_up(f)


datagrams = st.one_of(
    st.binary(max_size=40),
    st.builds(
        slin,
        seq=st.integers(0, 0xFFFF),
        ssrc=st.sampled_from([1, 2]),
        pt=st.sampled_from([118, 118, 118, 0, 9]),
        size=st.sampled_from([640, 640, 640, 0, 320]),
    ),
)
sources = st.sampled_from([ASTERISK, ASTERISK, ASTERISK, ("127.0.0.1", 5), ("::1", 10928, 0, 0)])


@settings(max_examples=200)
@given(st.lists(st.tuples(datagrams, sources), max_size=60), st.integers(0, 61), st.booleans())
def test_fuzz_accept_never_raises_and_counters_add_up(
    traffic: list[tuple[bytes, tuple[str, int]]], pin_at: int, learn: bool
) -> None:
    """Any traffic, with Asterisk's address announced after ``pin_at`` datagrams (or never): nothing is
    accepted before it, and a learning gate learns only from it."""
    f = InboundFilter(payload_type=None) if learn else InboundFilter()
    for k, (data, addr) in enumerate(traffic):
        if k == pin_at:
            f.expected_source = ASTERISK
        out = f.accept(data, addr)
        assert out is None or len(out) == 640
        assert out is None or (k >= pin_at and addr == ASTERISK)
    assert f.received == len(traffic)
    assert f.drops["source_unknown"] == min(pin_at, len(traffic))
    assert_counters_add_up(f)
    assert all(v >= 0 for v in f.drops.values()) and f.lost >= 0


@given(packets, st.integers(0, 255))
def test_accept_returns_exactly_the_parsed_payload(pkt: RtpPacket, padding: int) -> None:
    """The gate's fast header path (plain V=2 packets) and the full parser agree on every packet."""
    f = gate(payload_type=pkt.payload_type, payload_bytes=None)
    data = pkt.to_bytes(padding)
    assert f.accept(data, ASTERISK) == parse_rtp(data).payload
    assert (f.ssrc, f.highest_seq) == (pkt.ssrc, pkt.sequence)
