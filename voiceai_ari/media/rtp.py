"""RTP packets as values (RFC 3550), wraparound arithmetic, the outbound stamper and the inbound gate.

Sans-I/O: nothing here touches a socket, a clock or an event loop, and nothing logs per packet.

- ``parse_rtp`` / ``RtpPacket.to_bytes``: the fixed header (§5.1), CSRC list, header extension
  (§5.3.1) and padding.  Bad input raises ``RtpError`` whose message names the defect.
- ``seq_add`` / ``seq_diff`` / ``ts_add``: the only place that masks with 0xFFFF or 0xFFFFFFFF.
- ``RtpSender``: stamps outbound payloads; sequence and timestamp start random (§5.1) and advance
  whenever a packet leaves.  Pacing is the caller's job (see ``playout.PacingClock``).
- ``InboundFilter``: decides which datagrams from Asterisk carry the caller's audio, and counts why
  the others were dropped.  It never raises.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

__all__ = [
    "RTP_VERSION", "InboundFilter", "RtpError", "RtpPacket", "RtpSender",
    "parse_rtp", "seq_add", "seq_diff", "ts_add",
]

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")  # V|P|X|CC, M|PT, sequence, timestamp, SSRC
_EXT_HEADER = struct.Struct("!HH")  # profile-defined, length in 32-bit words


class RtpError(ValueError):
    """A datagram is not a valid RTP packet (or a packet cannot be serialized)."""


def seq_add(a: int, n: int) -> int:
    """Sequence number ``a`` advanced by ``n``, modulo 2**16."""
    return (a + n) & 0xFFFF


def seq_diff(a: int, b: int) -> int:
    """Signed shortest distance ``a - b`` modulo 2**16, in [-32768, 32767]."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def ts_add(a: int, n: int) -> int:
    """RTP timestamp ``a`` advanced by ``n``, modulo 2**32."""
    return (a + n) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile-defined 16 bits, data; len % 4 == 0)

    def to_bytes(self, padding: int = 0) -> bytes:
        """Serialize; ``padding`` (0..255) octets are appended per §5.1, the last one holding the count.

        Raises:
            RtpError: a field is out of range (PT > 127, more than 15 CSRCs, extension data whose
                length is not a multiple of 4, padding outside 0..255).
        """
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"RTP payload type {self.payload_type} is out of range 0..127")
        if len(self.csrc) > 15:
            raise RtpError(f"RTP CSRC count {len(self.csrc)} exceeds 15")
        if not 0 <= padding <= 255:
            raise RtpError(f"RTP padding length {padding} is out of range 0..255")
        first = RTP_VERSION << 6 | (0x20 if padding else 0) | (0x10 if self.extension else 0)
        parts = [
            _HEADER.pack(
                first | len(self.csrc),
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            )
        ]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise RtpError(f"RTP header extension length {len(data)} is not a multiple of 4")
            parts.append(_EXT_HEADER.pack(profile, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        if padding:
            parts.append(bytes(padding - 1) + bytes((padding,)))
        return b"".join(parts)


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP datagram; padding is stripped from the payload.

    Raises:
        RtpError: the message names the defect, e.g. "RTP packet shorter than 12 bytes".
    """
    if len(data) < 12:
        raise RtpError("RTP packet shorter than 12 bytes")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    version = first >> 6
    if version != RTP_VERSION:
        raise RtpError(f"RTP version {version} is not 2")
    pos = 12
    cc = first & 0x0F
    csrc: tuple[int, ...] = ()
    if cc:
        if len(data) < pos + 4 * cc:
            raise RtpError("RTP packet has truncated CSRC list")
        csrc = struct.unpack_from(f"!{cc}I", data, pos)
        pos += 4 * cc
    extension = None
    if first & 0x10:
        if len(data) < pos + 4:
            raise RtpError("RTP header extension truncated")
        profile, words = _EXT_HEADER.unpack_from(data, pos)
        pos += 4
        if len(data) < pos + 4 * words:
            raise RtpError("RTP header extension truncated")
        extension = (profile, bytes(data[pos : pos + 4 * words]))
        pos += 4 * words
    end = len(data)
    if first & 0x20:
        if end == pos:
            raise RtpError("RTP padding flag set but packet has no payload")
        pad = data[-1]
        if pad == 0:
            raise RtpError("RTP padding length 0 is invalid")
        if pad > end - pos:
            raise RtpError(f"RTP padding length {pad} exceeds payload")
        end -= pad
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[pos:end]),
        marker=bool(second & 0x80),
        csrc=csrc,
        extension=extension,
    )


class RtpSender:
    """Stamps outbound payloads for one stream: sequence +1 and timestamp +``ts_step`` per packet.

    Start values are random (RFC 3550 §5.1); the first sequence number comes from the lower half of
    the range so the first wrap is at least 32768 packets away (as aiortc does).
    """

    def __init__(
        self,
        payload_type: int,
        ts_step: int,
        *,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        if not 0 <= payload_type <= 127:
            raise ValueError(f"RTP payload type {payload_type} is out of range 0..127")
        self.payload_type = payload_type
        self.ts_step = ts_step
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc & 0xFFFFFFFF
        self.sequence = secrets.randbits(15) if sequence is None else sequence & 0xFFFF
        self.timestamp = secrets.randbits(32) if timestamp is None else timestamp & 0xFFFFFFFF
        self.packets_sent = 0
        self.octets_sent = 0  # payload octets, as in an RTCP sender report
        self._header = bytearray(12)  # rewritten in place for every packet

    def packet(self, payload: bytes, marker: bool = False) -> bytes:
        """The next packet carrying ``payload``; advances sequence and timestamp (both wrap)."""
        _HEADER.pack_into(
            self._header,
            0,
            0x80,
            (0x80 if marker else 0) | self.payload_type,
            self.sequence,
            self.timestamp,
            self.ssrc,
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + self.ts_step) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return b"".join((self._header, payload))  # one allocation: the datagram itself

    def skip(self, packets: int = 1) -> None:
        """Advance the timestamp by ``packets`` frames without sending (a gap the receiver can see)."""
        self.timestamp = (self.timestamp + packets * self.ts_step) & 0xFFFFFFFF


class InboundFilter:
    """The receive-side gate for the caller's audio from externalMedia.

    ``accept(data, addr)`` returns the payload of a packet worth playing, else ``None`` with the reason
    counted in ``drops``; ``received == accepted + sum(drops.values())`` always holds.

    Rules, in order:
    1. Source: until ``expected_source`` is set (Asterisk announced its address) every datagram is
       "source_unknown"; afterwards datagrams from any other (host, port) are "foreign_source".
       Dropping early costs nothing: the call sets the source before Asterisk's channel is bridged,
       and Asterisk sends nothing before that.  Accepting early would let one spoofed datagram to a
       predictable port fix the payload type below before Asterisk's first packet.
    2. Not parseable as RTP: "malformed".  Wrong payload type: "payload_type".  Payload size other
       than ``payload_bytes`` (if set): "bad_length".  With ``payload_type=None`` the gate learns
       the PT of the first packet that passes the checks above, if it is dynamic (96-127): Asterisk
       numbers formats such as slin24 itself, and only its announced address gets this far.
    3. A new SSRC re-syncs the sequence state (counted in ``ssrc_changes``) and is accepted.
    4. Sequence (RFC 3550 A.1, simplified; audio is consumed in order and a jitter buffer is not worth
       it here): a forward step is accepted and its gap counted in ``lost``; the highest sequence
       again is a "duplicate"; anything older is "late".  A backward jump of more than
       ``MAX_MISORDER`` followed by its exact successor means the sender restarted its sequence:
       that successor re-syncs (``seq_resyncs``) instead of being dropped for up to 32768 packets.
       A forward jump over ``MAX_DROPOUT`` is also a re-sync, not loss.
    """

    MAX_DROPOUT = 3000
    MAX_MISORDER = 100
    REASONS = ("source_unknown", "malformed", "foreign_source", "payload_type", "bad_length", "duplicate", "late")

    def __init__(self, payload_type: int | None = 118, payload_bytes: int | None = 640) -> None:
        self.payload_type = payload_type
        self.payload_bytes = payload_bytes
        self._expected_source: tuple[str, int] | None = None
        self.drops: dict[str, int] = dict.fromkeys(self.REASONS, 0)
        self.received = 0
        self.accepted = 0
        self.lost = 0
        self.ssrc_changes = 0
        self.seq_resyncs = 0
        self.ssrc: int | None = None
        self.highest_seq: int | None = None
        self._bad_seq: int | None = None  # RFC 3550 A.1: the sequence that would confirm a restart

    @property
    def expected_source(self) -> tuple[str, int] | None:
        return self._expected_source

    @expected_source.setter
    def expected_source(self, value: tuple[str, int | str] | None) -> None:
        # UNICASTRTP_LOCAL_PORT arrives from ARI as a string; compare against int ports.
        self._expected_source = None if value is None else (str(value[0]), int(value[1]))

    def accept(self, data: bytes, addr: tuple[str, int]) -> bytes | None:
        """The payload of ``data`` if it is the caller's next audio, else ``None`` (reason counted)."""
        self.received += 1
        expected = self._expected_source
        if expected is None:
            return self._drop("source_unknown")
        try:
            same = addr[0] == expected[0] and addr[1] == expected[1]
        except (TypeError, IndexError, KeyError):
            same = False
        if not same:
            return self._drop("foreign_source")
        try:
            if len(data) > 12 and data[0] == 0x80:   # what Asterisk sends: V=2, no padding/extension/CSRC
                second, seq, _, ssrc = _HEADER.unpack_from(data)[1:]
                pt, payload = second & 0x7F, data[12:]
            else:
                pkt = parse_rtp(data)
                pt, seq, ssrc, payload = pkt.payload_type, pkt.sequence, pkt.ssrc, pkt.payload
        except (RtpError, TypeError, struct.error):
            return self._drop("malformed")
        bad_length = self.payload_bytes is not None and len(payload) != self.payload_bytes
        if pt != self.payload_type:
            if self.payload_type is not None or not 96 <= pt <= 127:
                return self._drop("payload_type")
            if not bad_length:
                self.payload_type = pt   # learn Asterisk's dynamic PT from its first well-formed packet
        if bad_length:
            return self._drop("bad_length")
        if ssrc != self.ssrc or self.highest_seq is None:
            if self.ssrc is not None:
                self.ssrc_changes += 1
            self.ssrc = ssrc
            return self._sync(seq, payload)
        delta = seq_diff(seq, self.highest_seq)
        if 0 < delta <= self.MAX_DROPOUT:
            self.lost += delta - 1
            self.highest_seq = seq
            self._bad_seq = None
            self.accepted += 1
            return payload
        if delta == 0:
            return self._drop("duplicate")
        if delta > 0 or seq == self._bad_seq:  # restart confirmed (or a huge forward jump)
            self.seq_resyncs += 1
            return self._sync(seq, payload)
        if delta < -self.MAX_MISORDER:
            self._bad_seq = seq_add(seq, 1)
        return self._drop("late")

    def _sync(self, seq: int, payload: bytes) -> bytes:
        self.highest_seq = seq
        self._bad_seq = None
        self.accepted += 1
        return payload

    def _drop(self, reason: str) -> None:
        self.drops[reason] += 1
        return None
