"""Return-path payload formats and encoders, plus the byte-order helpers for slin.

Asterisk drops slin16 sent back on PT 118 (no receive mapping for dynamic PTs on a UnicastRTP
channel) but accepts static payload types, so the app sends either:

- ``g722``: G.722 at 64 kbit/s, static PT 9.  16 kHz audio, but the RTP clock is 8000 Hz (RFC 3551
  §4.5.2), so the timestamp steps 160 per 20 ms; 320 samples encode to 160 bytes.
- ``l16-8k``: L16 mono 8 kHz, static PT 11, big-endian (network order), 320 bytes per 20 ms.

G.722 is ADPCM, so encoders and decoders are stateful: one encoder per outgoing stream, one decoder
per incoming stream (a fresh encoder per frame drops the decoded SNR from ~30 dB to ~9 dB).
The ``G722`` package treats a ``bytes`` argument as one sample per byte, so PCM is always wrapped
with ``np.frombuffer(b, "<i2")`` first.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Protocol

import G722
import numpy as np

__all__ = [
    "ALAW_SILENCE", "G711_DECODE", "G722_PT9", "ULAW_SILENCE", "g711_decode", "g711_encode", "L16_8K_PT11", "RETURN_FORMATS", "FrameEncoder", "G722Decoder", "G722Encoder", "L16Encoder",
    "ReturnFormat", "make_encoder", "pcm_le_to_be", "slin_be_to_le",
]


@dataclass(frozen=True)
class ReturnFormat:
    """What one outgoing 20 ms RTP packet carries."""

    name: str
    payload_type: int
    sample_rate: int  # of the PCM the encoder takes
    ts_step: int  # RTP timestamp increment per 20 ms packet
    payload_bytes: int  # per 20 ms

    @property
    def frame_samples(self) -> int:
        """PCM samples per 20 ms frame fed to the encoder."""
        return self.sample_rate // 50

    @property
    def frame_bytes(self) -> int:
        """PCM16 bytes per 20 ms frame fed to the encoder."""
        return 2 * self.frame_samples


G722_PT9 = ReturnFormat("g722", 9, 16000, 160, 160)
L16_8K_PT11 = ReturnFormat("l16-8k", 11, 8000, 160, 320)
RETURN_FORMATS = {f.name: f for f in (G722_PT9, L16_8K_PT11)}


def _swap16(data: bytes) -> bytes:
    """Both bytes of every 16-bit sample swapped: big-endian <-> little-endian, whatever the host's order.

    ``array.byteswap`` is 0.6 µs for 20 ms of 24 kHz audio where numpy's ``astype`` is 1.5 µs.

    Raises:
        ValueError: odd byte count.
    """
    a = array("H")
    a.frombytes(data)
    a.byteswap()
    return a.tobytes()


def slin_be_to_le(payload: bytes) -> bytes:
    """Big-endian int16 (RTP slin) to little-endian int16 (the model's PCM).

    Raises:
        ValueError: odd byte count.
    """
    return _swap16(payload)


def pcm_le_to_be(pcm: bytes) -> bytes:
    """Little-endian int16 to big-endian int16 (network order for L16 payloads).

    Raises:
        ValueError: odd byte count.
    """
    return _swap16(pcm)


class FrameEncoder(Protocol):
    """Turns 20 ms of PCM16 LE at ``fmt.sample_rate`` into one RTP payload."""

    fmt: ReturnFormat

    def encode(self, pcm_le: bytes) -> bytes: ...

    @property
    def silence(self) -> bytes:
        """One 20 ms payload of silence, ready to send."""
        ...


class G722Encoder:
    """G.722 64 kbit/s encoder for one outgoing stream: 640 B of 16 kHz PCM16 LE → 160 B."""

    fmt = G722_PT9

    def __init__(self) -> None:
        self._codec = G722.G722(16000, 64000)
        self._zeros = np.zeros(self.fmt.frame_samples, np.int16)

    def encode(self, pcm_le: bytes) -> bytes:
        """Encode PCM16 LE (an even number of samples; normally 320) to half as many bytes.

        Raises:
            ValueError: the byte count is not a multiple of 4 (G.722 codes samples in pairs).
        """
        if len(pcm_le) % 4:
            raise ValueError(f"G.722 input of {len(pcm_le)} bytes is not a whole number of sample pairs")
        return self._codec.encode(np.frombuffer(pcm_le, "<i2"))

    @property
    def silence(self) -> bytes:
        """20 ms of silence *encoded through this stream's encoder* (advances its state).

        A precomputed payload is not valid for ADPCM: the far decoder would drift from this encoder's
        state.  Read it only when the payload is about to be sent.
        """
        return self._codec.encode(self._zeros)


class L16Encoder:
    """L16 8 kHz for PT 11: 320 B of PCM16 LE in → the same samples big-endian out."""

    fmt = L16_8K_PT11
    silence = bytes(L16_8K_PT11.payload_bytes)

    def encode(self, pcm_le: bytes) -> bytes:
        """Byteswap LE → BE.

        Raises:
            ValueError: odd byte count.
        """
        return pcm_le_to_be(pcm_le)


def make_encoder(name: str) -> FrameEncoder:
    """A fresh encoder for one outgoing stream, by ``RETURN_FORMATS`` name.

    Raises:
        ValueError: unknown name.
    """
    if name == G722_PT9.name:
        return G722Encoder()
    if name == L16_8K_PT11.name:
        return L16Encoder()
    raise ValueError(f"unknown return format {name!r}; expected one of {sorted(RETURN_FORMATS)}")


class G722Decoder:
    """G.722 64 kbit/s decoder for one incoming stream (tests, or a caller-side simulator)."""

    def __init__(self) -> None:
        self._codec = G722.G722(16000, 64000)

    def decode(self, payload: bytes) -> bytes:
        """160 B of G.722 → 320 samples of 16 kHz PCM16 LE (640 B)."""
        # array('h') without g722-numpy, ndarray with it; either way native int16.
        return np.asarray(self._codec.decode(payload), np.int16).astype("<i2", copy=False).tobytes()


# --- G.711 (ITU-T G.711 μ-law and A-law), for the fake model, tests and benchmarks --------------------------
# The bot itself never encodes or decodes G.711: with VOICEAI_CALLER_FORMAT=ulaw|alaw the payloads go between
# Asterisk and the model untouched. The tables are built once with numpy (audioop is gone in Python 3.13).

ULAW_SILENCE = 0xFF   # μ-law code of 0 (positive zero)
ALAW_SILENCE = 0xD5   # A-law code of 0 (positive zero, after the 0x55 toggle)


def _ulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << np.maximum(seg - 1, 0)))
    return np.where(a & 0x80, t, -t).astype(np.int16)


G711_DECODE = {"ulaw": _ulaw_decode_table(), "alaw": _alaw_decode_table()}
# encoding by table: every int16 value -> the code whose decoded value is nearest (ties to the larger
# magnitude's segment do not matter at these step sizes); 64 KiB per law, built on first use
_ENCODE: dict[str, np.ndarray] = {}


def _encode_table(law: str) -> np.ndarray:
    table = _ENCODE.get(law)
    if table is None:
        dec = G711_DECODE[law].astype(np.int32)
        order = np.argsort(dec, kind="stable")
        values = dec[order]
        x = np.arange(-32768, 32768, dtype=np.int32)
        i = np.clip(np.searchsorted(values, x), 1, 255)
        nearer_low = (x - values[i - 1]) <= (values[i] - x)
        codes = np.where(nearer_low, order[i - 1], order[i])
        # zero encodes to the law's positive zero (what a silent line carries)
        codes[32768] = ULAW_SILENCE if law == "ulaw" else ALAW_SILENCE
        table = _ENCODE[law] = codes.astype(np.uint8)
    return table


def g711_encode(pcm_le: bytes, law: str) -> bytes:
    """PCM16 LE (8 kHz) to G.711 ``law`` ("ulaw" or "alaw"), one byte per sample.

    Raises:
        ValueError: odd byte count, or an unknown law.
    """
    if law not in G711_DECODE:
        raise ValueError(f"unknown G.711 law {law!r}")
    x = np.frombuffer(pcm_le, "<i2").astype(np.int32) + 32768
    return _encode_table(law)[x].tobytes()


def g711_decode(payload: bytes, law: str) -> bytes:
    """G.711 ``law`` bytes to PCM16 LE (8 kHz), two bytes per input byte.

    Raises:
        ValueError: an unknown law.
    """
    if law not in G711_DECODE:
        raise ValueError(f"unknown G.711 law {law!r}")
    return G711_DECODE[law][np.frombuffer(payload, np.uint8)].astype("<i2", copy=False).tobytes()
