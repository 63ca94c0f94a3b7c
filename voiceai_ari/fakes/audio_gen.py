"""Small PCM helpers for tests and the fake Realtime server (numpy only).

All PCM here is mono, signed 16-bit, little-endian ("int16 LE").
"""

from __future__ import annotations

import wave

import numpy as np

FULL_SCALE = 32768.0
SILENCE_FLOOR_DBFS = -120.0  # rms_dbfs() of empty or all-zero input


def tone(freq_hz: float, seconds: float, rate: int, dbfs: float = -12.0, fade_ms: float = 5) -> bytes:
    """A sine at ``freq_hz`` whose peak is ``dbfs`` below full scale, with linear fades in and out."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    x = np.sin(2 * np.pi * freq_hz * t) * (32767.0 * 10 ** (dbfs / 20))
    nf = min(int(round(fade_ms * rate / 1000)), n // 2)
    if nf > 0:
        ramp = np.linspace(0.0, 1.0, nf, endpoint=False)
        x[:nf] *= ramp
        x[n - nf:] *= ramp[::-1]
    return np.round(x).astype("<i2").tobytes()


def silence(seconds: float, rate: int) -> bytes:
    """Digital silence: ``seconds`` of zero samples."""
    return bytes(2 * int(round(seconds * rate)))


def samples(pcm_le: bytes) -> np.ndarray:
    """int16 LE bytes -> float64 array (a trailing odd byte is ignored)."""
    return np.frombuffer(pcm_le[: len(pcm_le) // 2 * 2], dtype="<i2").astype(np.float64)


def rms_dbfs(pcm: bytes) -> float:
    """RMS level in dBFS, 20*log10(rms / 32768): a full-scale sine reads about -3 dBFS.

    Empty or all-zero input returns ``SILENCE_FLOOR_DBFS`` (-120), never -inf.
    """
    x = samples(pcm)
    if x.size == 0:
        return SILENCE_FLOOR_DBFS
    rms = float(np.sqrt(np.mean(x * x)))
    if rms <= 0.0:
        return SILENCE_FLOOR_DBFS
    return max(SILENCE_FLOOR_DBFS, 20 * np.log10(rms / FULL_SCALE))


def dominant_frequency(pcm_le: bytes, rate: int) -> float:
    """Frequency (Hz) of the strongest spectral peak: Hann window, rFFT, parabolic interpolation
    on the log magnitude. Returns 0.0 for input shorter than 4 samples or pure silence."""
    x = samples(pcm_le)
    if x.size < 4:
        return 0.0
    x = x - x.mean()
    mag = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    k = int(np.argmax(mag[1:])) + 1 if mag.size > 1 else 0
    if mag[k] <= 0.0:
        return 0.0
    shift = 0.0
    if 0 < k < mag.size - 1:
        a, b, c = np.log(mag[k - 1 : k + 2] + 1e-12)
        den = a - 2 * b + c
        if den != 0.0:
            shift = 0.5 * (a - c) / den
    return float((k + shift) * rate / x.size)


def read_wav_24k_mono(path: str) -> bytes:
    """PCM frames of a 24 kHz mono 16-bit WAV file. Anything else raises ``ValueError`` (no resampling)."""
    try:
        with wave.open(str(path), "rb") as w:
            got = (w.getframerate(), w.getnchannels(), w.getsampwidth() * 8)
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a PCM WAV file ({exc}); need 24000 Hz mono 16-bit PCM") from exc
    if got != (24000, 1, 16):
        raise ValueError(
            f"{path}: need a 24000 Hz mono 16-bit PCM WAV, got {got[0]} Hz, {got[1]} channel(s), "
            f"{got[2]}-bit (convert it first, e.g. sox in.wav -r 24000 -c 1 -b 16 out.wav)"
        )
    return frames


def write_wav(path: str, pcm_le: bytes, rate: int) -> None:
    """Write mono int16 LE PCM as a WAV file (test helper)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm_le)
