"""Audio and RTP analysis for the end-to-end tests (numpy only; scipy for 8 <-> 16 kHz resampling).

Level convention: **dBFS of a sine's peak**, i.e. a full-scale sine (amplitude 32768) reads 0 dBFS and a
sine of amplitude A reads 20*log10(A/32768) (amplitude 5000 -> -16.3 dBFS). For any signal that is
RMS dB re 32768/sqrt(2). Silence (all zeros) reads -inf.

PCM arguments accept ``bytes`` (int16 little-endian, the format the tests use everywhere) or a numpy array.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

FULL_SCALE = 32768.0


# --------------------------------------------------------------------------------------------- PCM basics
def as_array(pcm: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """int16 LE bytes (or any array) -> float64 samples (int16 scale)."""
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        return np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return np.asarray(pcm, dtype=np.float64)


def to_bytes(samples: np.ndarray) -> bytes:
    """float/int samples (int16 scale) -> clipped int16 LE bytes."""
    return np.clip(np.round(np.asarray(samples, dtype=np.float64)), -32768, 32767).astype("<i2").tobytes()


def tone(freq: float, seconds: float, rate: int = 16000, amplitude: float = 8000.0, phase: float = 0.0) -> bytes:
    """A sine as int16 LE bytes."""
    n = int(round(seconds * rate))
    return to_bytes(amplitude * np.sin(2 * np.pi * freq * np.arange(n) / rate + phase))


def silence(seconds: float, rate: int = 16000) -> bytes:
    return bytes(2 * int(round(seconds * rate)))


def rms_dbfs(pcm) -> float:
    """RMS level in dBFS (sine-peak convention, see module doc); -inf for digital silence."""
    x = as_array(pcm)
    if x.size == 0:
        return -math.inf
    rms = math.sqrt(float(np.mean(x * x)))
    return 20 * math.log10(rms * math.sqrt(2) / FULL_SCALE) if rms > 0 else -math.inf


def _slice(x: np.ndarray, rate: int, start: float, end: float | None) -> np.ndarray:
    a = max(0, int(round(start * rate)))
    b = x.size if end is None else min(x.size, int(round(end * rate)))
    return x[a:b]


def _spectrum(x: np.ndarray, rate: int, min_fft: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Hann-windowed power spectrum, zero-padded to at least ``min_fft`` points."""
    n_fft = max(min_fft, 1 << (max(1, x.size) - 1).bit_length())
    w = np.hanning(x.size) if x.size > 1 else np.ones(x.size)
    spec = np.abs(np.fft.rfft(x * w, n_fft)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    return freqs, spec


def dominant_freq(pcm, rate: int, start: float = 0.0, end: float | None = None) -> float:
    """Frequency (Hz) of the strongest spectral peak between ``start`` and ``end`` seconds (DC excluded),
    refined by parabolic interpolation on the log spectrum. 0.0 for silence or an empty span."""
    x = _slice(as_array(pcm), rate, start, end)
    if x.size < 8 or not np.any(x):
        return 0.0
    x = x - x.mean()
    freqs, spec = _spectrum(x, rate)
    spec[: max(1, int(20 / (freqs[1] - freqs[0])))] = 0.0  # ignore < 20 Hz
    k = int(np.argmax(spec))
    if 0 < k < spec.size - 1 and spec[k - 1] > 0 and spec[k + 1] > 0:
        a, b, c = np.log(spec[k - 1]), np.log(spec[k]), np.log(spec[k + 1])
        denom = a - 2 * b + c
        delta = 0.5 * (a - c) / denom if denom != 0 else 0.0
        return float(freqs[k] + delta * (freqs[1] - freqs[0]))
    return float(freqs[k])


def band_share(pcm, rate: int, freq: float, bw_hz: float = 60.0, start: float = 0.0, end: float | None = None) -> float:
    """Share (0..1) of the spectral power within ``freq`` +- ``bw_hz`` (0.5 s of a clean tone: > 0.9)."""
    x = _slice(as_array(pcm), rate, start, end)
    if x.size < 8 or not np.any(x):
        return 0.0
    freqs, spec = _spectrum(x - x.mean(), rate)
    total = float(spec.sum())
    band = float(spec[(freqs >= freq - bw_hz) & (freqs <= freq + bw_hz)].sum())
    return band / total if total > 0 else 0.0


def tone_level_dbfs(pcm, rate: int, freq: float, bw_hz: float = 60.0, start: float = 0.0,
                    end: float | None = None) -> float:
    """Level (dBFS, sine-peak convention) of the component within ``freq`` +- ``bw_hz``: the signal's RMS
    level scaled by that band's share of the power. Lets you measure one tone of a mixture."""
    x = _slice(as_array(pcm), rate, start, end)
    share = band_share(x, rate, freq, bw_hz)
    if share <= 0:
        return -math.inf
    return rms_dbfs(x) + 10 * math.log10(share)


# --------------------------------------------------------------------------------------------- windows
@dataclass(frozen=True)
class Window:
    t: float  # start of the window, seconds from the start of the signal
    dbfs: float  # RMS level (sine-peak convention); -inf for digital silence
    freq: float  # dominant frequency, Hz (0.0 for silence)


def windows(pcm, rate: int, win_s: float = 0.02) -> list[Window]:
    """Cut into consecutive ``win_s`` windows (the last partial window is dropped); level + dominant
    frequency of each. At 20 ms the FFT is zero-padded and peak-interpolated: a clean tone reads within a
    few Hz."""
    x = as_array(pcm)
    n = max(1, int(round(win_s * rate)))
    out = []
    for i in range(x.size // n):
        seg = x[i * n:(i + 1) * n]
        out.append(Window(t=i * n / rate, dbfs=rms_dbfs(seg), freq=dominant_freq(seg, rate)))
    return out


def sound_seconds(pcm, rate: int, min_dbfs: float = -40.0, win_s: float = 0.02) -> float:
    """How long there was sound: ``win_s`` windows above ``min_dbfs`` (an announcement's or an apology's length)."""
    return sum(1 for w in windows(pcm, rate, win_s) if w.dbfs > min_dbfs) * win_s


@dataclass(frozen=True)
class ToneCoverage:
    freq: float
    start_s: float | None  # first window holding the tone (None: never found)
    end_s: float | None  # end of the last window holding the tone
    windows_total: int  # windows inside [start_s, end_s)
    windows_with_tone: int
    coverage: float  # windows_with_tone / windows_total (0.0 when the tone never appears)
    longest_gap_ms: float  # longest run of windows inside the span without the tone
    win_s: float

    @property
    def tone_seconds(self) -> float:
        return self.windows_with_tone * self.win_s


def tone_segments(pcm, rate: int, freq: float, tol_hz: float = 30.0, min_dbfs: float = -40.0,
                  win_s: float = 0.02, start: float | None = None, end: float | None = None) -> ToneCoverage:
    """Where ``freq`` is present: a window counts when its level is >= ``min_dbfs`` and its dominant
    frequency is within ``tol_hz``. The span is [start, end) if given, else from the first to the last
    window holding the tone. Returns the coverage of the tone over that span and the longest gap inside it."""
    ws = windows(pcm, rate, win_s)
    hit = [w.dbfs >= min_dbfs and abs(w.freq - freq) <= tol_hz for w in ws]
    if start is not None or end is not None:
        lo = 0 if start is None else int(math.floor(start / win_s + 1e-9))
        hi = len(ws) if end is None else min(len(ws), int(math.ceil(end / win_s - 1e-9)))
    else:
        idx = [i for i, h in enumerate(hit) if h]
        if not idx:
            return ToneCoverage(freq, None, None, 0, 0, 0.0, 0.0, win_s)
        lo, hi = idx[0], idx[-1] + 1
    span = hit[lo:hi]
    longest = run = 0
    for h in span:
        run = 0 if h else run + 1
        longest = max(longest, run)
    n_hit = sum(span)
    return ToneCoverage(
        freq=freq,
        start_s=lo * win_s if span else None,
        end_s=hi * win_s if span else None,
        windows_total=len(span),
        windows_with_tone=n_hit,
        coverage=n_hit / len(span) if span else 0.0,
        longest_gap_ms=longest * win_s * 1000.0,
        win_s=win_s,
    )


def longest_gap_ms(arrival_times: Sequence[float]) -> float:
    """Longest interval between consecutive arrival times (seconds in, milliseconds out)."""
    if len(arrival_times) < 2:
        return 0.0
    return float(np.max(np.diff(np.asarray(arrival_times, dtype=np.float64)))) * 1000.0


def jitter_stats_ms(arrival_times: Sequence[float], ptime_s: float = 0.02) -> dict[str, float]:
    """Inter-arrival statistics (ms): median, p99 and max interval, and max deviation from ``ptime``."""
    if len(arrival_times) < 2:
        return {"median": 0.0, "p99": 0.0, "max": 0.0, "max_dev": 0.0}
    d = np.diff(np.asarray(arrival_times, dtype=np.float64)) * 1000.0
    return {"median": float(np.median(d)), "p99": float(np.percentile(d, 99)), "max": float(d.max()),
            "max_dev": float(np.max(np.abs(d - ptime_s * 1000.0)))}


# --------------------------------------------------------------------------------------------- codecs
def _alaw_decode_table() -> np.ndarray:
    t = np.zeros(256, dtype=np.int16)
    for a in range(256):
        v = a ^ 0x55
        exp = (v >> 4) & 0x07
        mant = v & 0x0F
        mag = (mant << 4) + 8 if exp == 0 else ((mant << 4) + 0x108) << (exp - 1)
        t[a] = mag if v & 0x80 else -mag
    return t


def _alaw_encode_table() -> np.ndarray:
    seg_end = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
    t = np.zeros(65536, dtype=np.uint8)
    for i in range(65536):
        pcm = (i - 65536 if i >= 32768 else i) >> 3
        if pcm >= 0:
            mask = 0xD5
        else:
            mask = 0x55
            pcm = -pcm - 1
        seg = next((s for s, e in enumerate(seg_end) if pcm <= e), 8)
        if seg >= 8:
            t[i] = 0x7F ^ mask
            continue
        aval = seg << 4
        aval |= (pcm >> 1) & 0x0F if seg < 2 else (pcm >> seg) & 0x0F
        t[i] = aval ^ mask
    return t


ALAW_DECODE = _alaw_decode_table()  # G.711 A-law byte -> int16 (same values as audioop.alaw2lin)
ALAW_ENCODE = _alaw_encode_table()  # int16 (as uint16 index) -> A-law byte (same as audioop.lin2alaw)


def alaw_encode(samples) -> bytes:
    x = np.clip(np.round(as_array(samples)), -32768, 32767).astype(np.int16)
    return ALAW_ENCODE[x.view(np.uint16)].tobytes()


def alaw_decode(payload: bytes) -> np.ndarray:
    return ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def resample(samples, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy) of int16-scale samples, float64 out."""
    from scipy.signal import resample_poly

    x = as_array(samples)
    if from_rate == to_rate or x.size == 0:
        return x
    g = math.gcd(from_rate, to_rate)
    return resample_poly(x, to_rate // g, from_rate // g)


# --------------------------------------------------------------------------------------------- RTP
class RtpLike(Protocol):
    pt: int
    seq: int
    ssrc: int
    payload: bytes


def in_sequence_order(packets: Iterable[RtpLike]) -> list[RtpLike]:
    """Packets (given in arrival order) sorted by sequence number (with 16-bit wrap-around), per SSRC run:
    a new SSRC starts a new run, runs stay in arrival order."""
    runs: list[list[tuple[int, int, RtpLike]]] = []
    prev_ssrc = prev_seq = ext = None
    for i, p in enumerate(packets):
        if p.ssrc != prev_ssrc:
            runs.append([])
            ext = p.seq
        else:
            ext += ((p.seq - prev_seq + 32768) % 65536) - 32768
        prev_ssrc, prev_seq = p.ssrc, p.seq
        runs[-1].append((ext, i, p))
    return [p for run in runs for _, _, p in sorted(run, key=lambda r: (r[0], r[1]))]


def _dedup_and_gaps(packets: list[RtpLike]) -> list[tuple[RtpLike, int]]:
    """(packet, number of missing packets before it) in order, dropping duplicates (same SSRC + seq)."""
    out: list[tuple[RtpLike, int]] = []
    prev = None
    for p in packets:
        if prev is not None and p.ssrc == prev.ssrc:
            d = (p.seq - prev.seq) % 65536
            if d == 0:
                continue
            out.append((p, d - 1 if d < 32768 else 0))
        else:
            out.append((p, 0))
        prev = p
    return out


def decode_g722(packets: Iterable[RtpLike], pt: int = 9, fill_gaps: bool = False) -> bytes:
    """Decode the G.722 packets (payload type ``pt``) with ONE decoder, in sequence order -> int16 LE at
    16 kHz (320 samples per 20 ms packet). ``fill_gaps`` inserts 20 ms of silence per missing sequence
    number (keeps the timeline; the decoder state simply continues)."""
    import G722

    dec = G722.G722(16000, 64000)
    ordered = in_sequence_order([p for p in packets if p.pt == pt])
    chunks = []
    for p, missing in _dedup_and_gaps(ordered):
        if fill_gaps and missing:
            chunks.append(np.zeros(missing * 2 * len(p.payload), dtype="<i2"))
        chunks.append(np.asarray(dec.decode(p.payload), dtype="<i2"))
    return np.concatenate(chunks).astype("<i2").tobytes() if chunks else b""


def decode_pcma(packets: Iterable[RtpLike], pt: int = 8, fill_gaps: bool = False) -> bytes:
    """Decode the PCMA packets in sequence order -> int16 LE at **8 kHz**."""
    ordered = in_sequence_order([p for p in packets if p.pt == pt])
    chunks = []
    for p, missing in _dedup_and_gaps(ordered):
        if fill_gaps and missing:
            chunks.append(np.zeros(missing * len(p.payload), dtype=np.int16))
        chunks.append(alaw_decode(p.payload))
    return np.concatenate(chunks).astype("<i2").tobytes() if chunks else b""


DTMF_EVENTS = "0123456789*#ABCD"


def dtmf_event(payload: bytes) -> tuple[str, bool, int]:
    """RFC 4733 payload -> (digit, end bit, duration in timestamp units)."""
    code = payload[0]
    digit = DTMF_EVENTS[code] if code < len(DTMF_EVENTS) else f"event{code}"
    return digit, bool(payload[1] & 0x80), int.from_bytes(payload[2:4], "big")
