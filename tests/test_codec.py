"""codec.py: return-path formats, the G.722 and L16 encoders, byte-order helpers."""

from __future__ import annotations

import numpy as np
import pytest

from voiceai_ari.media.codec import (
    G722_PT9,
    L16_8K_PT11,
    RETURN_FORMATS,
    G722Decoder,
    G722Encoder,
    L16Encoder,
    make_encoder,
    pcm_le_to_be,
    slin_be_to_le,
)


def tone(freq: float, rate: int = 16000, seconds: float = 1.0, amp: float = 8000) -> np.ndarray:
    return np.rint(amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype("<i2")


def frames(pcm: bytes, size: int) -> list[bytes]:
    return [pcm[k : k + size] for k in range(0, len(pcm), size)]


def snr_and_peak(x: np.ndarray, y: np.ndarray, rate: int = 16000) -> tuple[float, float]:
    """SNR of ``y`` against ``x`` after aligning the codec delay, and ``y``'s dominant frequency."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    skip = rate // 10  # let the ADPCM adapt
    best = max(range(0, 64), key=lambda d: float(np.dot(x[skip : -64], y[skip + d : len(y) - 64 + d])))
    ref, out = x[skip:-64], y[skip + best : len(y) - 64 + best]
    snr = 10 * np.log10(np.sum(ref**2) / np.sum((out - ref) ** 2))
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    return float(snr), float(np.fft.rfftfreq(len(out), 1 / rate)[np.argmax(spectrum)])


def test_formats() -> None:
    assert G722_PT9 == RETURN_FORMATS["g722"]
    g = G722_PT9
    assert (g.payload_type, g.sample_rate, g.ts_step, g.payload_bytes) == (9, 16000, 160, 160)
    assert (L16_8K_PT11.payload_type, L16_8K_PT11.sample_rate, L16_8K_PT11.ts_step) == (11, 8000, 160)
    assert L16_8K_PT11.payload_bytes == 320
    assert (G722_PT9.frame_samples, G722_PT9.frame_bytes, L16_8K_PT11.frame_bytes) == (320, 640, 320)


def test_make_encoder() -> None:
    g, l16 = make_encoder("g722"), make_encoder("l16-8k")
    assert isinstance(g, G722Encoder) and g.fmt is G722_PT9
    assert isinstance(l16, L16Encoder) and l16.fmt is L16_8K_PT11
    assert make_encoder("g722") is not g  # one encoder per stream
    with pytest.raises(ValueError, match="unknown return format 'pcmu'"):
        make_encoder("pcmu")


def test_g722_frame_is_160_bytes() -> None:
    enc = make_encoder("g722")
    assert len(enc.encode(tone(1000)[:320].tobytes())) == 160
    assert len(enc.encode(bytes(640))) == 160


def test_g722_rejects_partial_sample_pairs() -> None:
    with pytest.raises(ValueError, match="sample pairs"):
        make_encoder("g722").encode(bytes(642))


@pytest.mark.parametrize(("freq", "min_snr"), [(1000, 40), (6000, 22)])  # measured 47 and 27 dB
def test_g722_round_trip_keeps_the_tone(freq: int, min_snr: float) -> None:
    x = tone(freq)
    enc, dec = make_encoder("g722"), G722Decoder()
    y = np.frombuffer(b"".join(dec.decode(enc.encode(f)) for f in frames(x.tobytes(), 640)), "<i2")
    assert len(y) == len(x)
    snr, peak = snr_and_peak(x, y)
    assert abs(peak - freq) <= 5
    assert snr >= min_snr


def test_g722_is_stateful_frame_by_frame_equals_one_shot() -> None:
    pcm = (tone(1000) // 2 + tone(5000) // 2).tobytes()
    one_shot = G722Encoder().encode(pcm)
    enc = G722Encoder()
    framed = b"".join(enc.encode(f) for f in frames(pcm, 640))
    assert framed == one_shot
    fresh_each_time = b"".join(G722Encoder().encode(f) for f in frames(pcm, 640))
    assert fresh_each_time != one_shot  # why each stream keeps one encoder


def test_g722_silence_goes_through_the_stream_encoder() -> None:
    enc, twin, dec = G722Encoder(), G722Encoder(), G722Decoder()
    speech = tone(1000)[:640].tobytes()
    payload = enc.encode(speech)
    assert payload == twin.encode(speech)
    dec.decode(payload)  # the far decoder, in step with `enc`
    first = enc.silence  # each read encodes (and must be sent): here, 10 reads for 10 frames
    assert len(first) == 160
    assert first == twin.encode(bytes(640))  # same bytes, same state as encoding zeros
    decoded = [dec.decode(first)] + [dec.decode(enc.silence) for _ in range(9)]
    tail = np.frombuffer(b"".join(decoded[2:]), "<i2")  # after the speech has decayed
    assert np.abs(tail).max() <= 4


def test_g722_precomputed_silence_is_not_silent() -> None:
    """Why ``silence`` is encoded live: replaying one payload drives the far decoder off course."""
    canned = G722Encoder().silence
    dec = G722Decoder()
    decoded = np.frombuffer(b"".join(dec.decode(canned) for _ in range(10)), "<i2")
    assert np.abs(decoded).max() > 100


def test_l16_8k_is_big_endian() -> None:
    pcm = np.array([1, -2, 0x1234, -32768, 32767] * 32, "<i2")
    enc = make_encoder("l16-8k")
    out = enc.encode(pcm.tobytes())
    assert len(out) == 320
    assert out[:4] == b"\x00\x01\xff\xfe"
    assert np.array_equal(np.frombuffer(out, ">i2"), pcm)
    assert enc.silence == bytes(320)


def test_byteswap_helpers() -> None:
    be = bytes.fromhex("0001fffe1234")
    assert slin_be_to_le(be) == bytes.fromhex("0100feff3412")
    assert pcm_le_to_be(slin_be_to_le(be)) == be
    assert slin_be_to_le(b"") == b""
    with pytest.raises(ValueError):
        slin_be_to_le(b"\x00\x01\x02")


def test_decoder_output_is_16k_pcm_le() -> None:
    out = G722Decoder().decode(bytes(160))
    assert isinstance(out, bytes) and len(out) == 640
