"""resample.py: streaming is bit-exact, frames are exact, and the filter does its job."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import upfirdn

from voiceai_ari.media.resample import StreamResampler, design_filter

PAIRS = [(16000, 24000), (24000, 16000), (8000, 24000), (24000, 8000), (16000, 8000), (8000, 16000)]


def noise(n: int, seed: int = 0, level: float = 9000) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).standard_normal(n) * level, -32768, 32767).astype("<i2")


def tone(freq: float, rate: int, seconds: float = 0.5, amp: float = 16000) -> np.ndarray:
    return np.rint(amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype("<i2")


def run(r: StreamResampler, x: np.ndarray, chunk_sizes: list[int]) -> np.ndarray:
    out, pos, i = [], 0, 0
    while pos < len(x):
        n = chunk_sizes[i % len(chunk_sizes)]
        out.append(r.process(x[pos : pos + n].tobytes()))
        pos, i = pos + n, i + 1
    return np.frombuffer(b"".join(out), "<i2")


def fit_tone(y: np.ndarray, freq: float, rate: int) -> tuple[float, float]:
    """Least-squares sine fit on the steady middle: (amplitude, rms of what is not that tone)."""
    y = y[len(y) // 5 : -len(y) // 5].astype(np.float64)
    t = np.arange(len(y)) / rate
    basis = np.column_stack((np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)))
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return float(np.hypot(*coef)), float(np.sqrt(np.mean((y - basis @ coef) ** 2)))


def db(ratio: float) -> float:
    return 20 * np.log10(max(ratio, 1e-12))


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
class TestStreaming:
    def test_frame_by_frame_equals_one_shot(self, in_rate: int, out_rate: int) -> None:
        x = noise(in_rate)  # 1 s
        one_shot = np.frombuffer(StreamResampler(in_rate, out_rate).process(x.tobytes()), "<i2")
        framed = run(StreamResampler(in_rate, out_rate), x, [in_rate // 50])
        assert np.array_equal(framed, one_shot)

    def test_irregular_chunks_equal_one_shot(self, in_rate: int, out_rate: int) -> None:
        x = noise(in_rate, seed=1)
        one_shot = np.frombuffer(StreamResampler(in_rate, out_rate).process(x.tobytes()), "<i2")
        chunked = run(StreamResampler(in_rate, out_rate), x, [1, 7, 333, 2, 5000, 0, 3])
        assert np.array_equal(chunked, one_shot)

    def test_equals_upfirdn_of_the_same_filter(self, in_rate: int, out_rate: int) -> None:
        x = noise(in_rate // 2, seed=2, level=14000)
        y = np.frombuffer(StreamResampler(in_rate, out_rate).process(x.tobytes()), "<i2")
        up, down, h = design_filter(in_rate, out_rate)
        ref = upfirdn(h, x.astype(np.float64), up, down)[: len(y)]
        assert len(y) == len(x) * out_rate // in_rate
        assert np.array_equal(y, np.clip(np.rint(ref), -32768, 32767).astype(np.int16))

    def test_exact_output_per_20ms_frame(self, in_rate: int, out_rate: int) -> None:
        r = StreamResampler(in_rate, out_rate)
        x = noise(in_rate, seed=3)
        n_in, n_out = in_rate // 50, out_rate // 50
        sizes = {len(r.process(x[k : k + n_in].tobytes())) for k in range(0, len(x), n_in)}
        assert sizes == {2 * n_out}

    def test_big_endian_input_equals_little_endian_of_swapped(self, in_rate: int, out_rate: int) -> None:
        x = noise(in_rate // 10, seed=4)
        le = StreamResampler(in_rate, out_rate).process(x.tobytes())
        be = StreamResampler(in_rate, out_rate).process(x.astype(">i2").tobytes(), big_endian=True)
        assert be == le

    def test_flush_and_reset(self, in_rate: int, out_rate: int) -> None:
        x = noise(in_rate // 10, seed=5)
        r = StreamResampler(in_rate, out_rate)
        body = r.process(x.tobytes())
        tail = r.flush()
        up, down, h = design_filter(in_rate, out_rate)
        taps_per_phase = len(h) // up
        assert len(tail) == 2 * taps_per_phase * out_rate // in_rate
        reference = StreamResampler(in_rate, out_rate).process(x.tobytes() + bytes(2 * taps_per_phase))
        assert body + tail == reference
        r.reset()
        assert r.process(x.tobytes()) == body

    def test_impulse_peaks_at_the_stated_latency(self, in_rate: int, out_rate: int) -> None:
        x = np.zeros(in_rate // 50, "<i2")
        x[0] = 10000
        r = StreamResampler(in_rate, out_rate)
        y = np.frombuffer(r.process(x.tobytes()) + r.flush(), "<i2")
        assert abs(np.argmax(y) / out_rate * 1e3 - r.latency_ms) <= 1e3 / out_rate


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(PAIRS),
    st.lists(st.integers(0, 700), min_size=1, max_size=30),
    st.integers(0, 2**31),
)
def test_any_chunking_is_bit_exact(pair: tuple[int, int], sizes: list[int], seed: int) -> None:
    in_rate, out_rate = pair
    x = noise(sum(sizes), seed=seed, level=20000)
    one_shot = StreamResampler(in_rate, out_rate).process(x.tobytes())
    r = StreamResampler(in_rate, out_rate)
    chunks, pos = [], 0
    for n in sizes:
        chunks.append(r.process(x[pos : pos + n].tobytes()))
        pos += n
    assert b"".join(chunks) == one_shot


def test_latency_values() -> None:
    assert StreamResampler(16000, 24000).latency_ms == pytest.approx(2.24, abs=0.01)
    assert StreamResampler(24000, 8000).latency_ms == pytest.approx(3.73, abs=0.01)


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(16000, 48000), (16000, 16000), (44100, 24000), (24000, 12000)]
)
def test_unsupported_rates(in_rate: int, out_rate: int) -> None:
    with pytest.raises(ValueError, match="unsupported resampling"):
        StreamResampler(in_rate, out_rate)


def test_odd_byte_count_raises_and_empty_is_empty() -> None:
    r = StreamResampler(16000, 24000)
    assert r.process(b"") == b""
    with pytest.raises(ValueError):
        r.process(b"\x00\x01\x02")


def test_full_scale_clips_instead_of_wrapping() -> None:
    square = np.tile(np.r_[np.full(20, 32767), np.full(20, -32768)], 100).astype("<i2")
    y = np.frombuffer(StreamResampler(16000, 24000).process(square.tobytes()), "<i2")
    assert y.max() == 32767 and y.min() == -32768  # Gibbs overshoot saturates
    assert np.all(np.abs(np.diff(y.astype(int))) < 40000)  # no wrap-around jumps


PASSBAND = [
    (16000, 24000, [300, 1000, 3000, 5000, 6500]),
    (24000, 16000, [300, 1000, 3000, 5000, 6500]),
    (8000, 24000, [300, 1000, 2000, 3200]),
    (24000, 8000, [300, 1000, 2000, 3200]),
]


@pytest.mark.parametrize(("in_rate", "out_rate", "freqs"), PASSBAND)
def test_passband_is_flat_and_clean(in_rate: int, out_rate: int, freqs: list[int]) -> None:
    for f in freqs:
        x = tone(f, in_rate)
        y = np.frombuffer(StreamResampler(in_rate, out_rate).process(x.tobytes()), "<i2")
        in_amp, _ = fit_tone(x, f, in_rate)
        out_amp, residual = fit_tone(y, f, out_rate)
        assert abs(db(out_amp / in_amp)) <= 0.5, f
        # Images (up) or aliases (down) and interpolation error are what remains besides the tone.
        assert db(residual / (out_amp / np.sqrt(2))) <= -60, f


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "freqs"),
    [(24000, 16000, [9000, 10000, 11000]), (24000, 8000, [5000, 7000, 10000]), (16000, 8000, [5000, 7000])],
)
def test_tones_above_output_nyquist_do_not_alias(in_rate: int, out_rate: int, freqs: list[int]) -> None:
    for f in freqs:
        x = tone(f, in_rate)
        y = np.frombuffer(StreamResampler(in_rate, out_rate).process(x.tobytes()), "<i2")
        rms_in = np.sqrt(np.mean(x.astype(np.float64) ** 2))
        rms_out = np.sqrt(np.mean(y[len(y) // 5 : -len(y) // 5].astype(np.float64) ** 2))
        assert db(rms_out / rms_in) <= -60, f


def test_upsampling_images_are_suppressed() -> None:
    """A 7 kHz tone at 16 kHz: the first image lands at 9 kHz, inside the 24 kHz output band."""
    x = tone(7000, 16000)
    y = np.frombuffer(StreamResampler(16000, 24000).process(x.tobytes()), "<i2")
    amp, _ = fit_tone(y, 7000, 24000)
    image_amp, _ = fit_tone(y, 9000, 24000)
    assert db(image_amp / amp) <= -60
