"""Streaming polyphase resampler for 20 ms telephone frames (numpy only, no scipy at runtime).

The design is the one measured in the dependency study (dependencies.md §4 and Appendix A): a Kaiser
windowed-sinc low-pass at the intermediate rate ``in_rate * L`` (70 dB), split into ``L`` phases and
applied to all output phases of a block in one GEMM.  Per 20 ms frame the output size is exact
(320 in → 480 out for 16→24 kHz), so no re-framing FIFO is needed.

One change from Appendix A: the taps are quantized to multiples of 2**-Q and the GEMM runs in
float64.  Every product and partial sum is then a multiple of 2**-Q below 2**17, which float64 holds
exactly (41 significant bits), so the result does not depend on the order BLAS sums in.  With the
appendix's float32, OpenBLAS picks kernels by block shape and a chunked stream differed from the
one-shot result by 1 LSB in places.  Now feeding a signal in any chunk sizes gives exactly the bytes
of one call on the whole signal, which are also the bytes of ``scipy.signal.upfirdn(h, x, L, M)``
rounded to int16.  Quantizing the taps at 2**-24 adds error below -130 dB.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["StreamResampler", "design_filter", "kaiser_lowpass"]

Q = 24  # fractional bits of the taps; per phase sum|h| < 4, so |sums| < 2**17 on a 2**-24 grid

# Keyed by the pair of rates: (taps at the intermediate rate, pass edge Hz, stop edge Hz).
# The stop edge is the narrower rate's Nyquist; 216 and 180 taps are the measured designs,
# 120 keeps the 600 Hz transition of the 24 kHz design at a 16 kHz intermediate rate.
_DESIGNS: dict[frozenset[int], tuple[int, int, int]] = {
    frozenset((16000, 24000)): (216, 7000, 8000),
    frozenset((8000, 24000)): (180, 3400, 4000),
    frozenset((8000, 16000)): (120, 3400, 4000),
}


def kaiser_lowpass(num_taps: int, cutoff_hz: float, fs_hz: float, atten_db: float = 70.0) -> np.ndarray:
    """Kaiser windowed-sinc low-pass, unit DC gain (float64)."""
    beta = 0.1102 * (atten_db - 8.7)  # Kaiser's formula for atten > 50 dB
    n = np.arange(num_taps) - (num_taps - 1) / 2
    h = 2 * cutoff_hz / fs_hz * np.sinc(2 * cutoff_hz / fs_hz * n) * np.kaiser(num_taps, beta)
    return h / h.sum()


def design_filter(in_rate: int, out_rate: int) -> tuple[int, int, np.ndarray]:
    """``(L, M, h)``: up factor, down factor and the prototype filter (gain L) for the pair.

    ``h`` holds the quantized taps (multiples of 2**-Q) that the resampler actually applies.

    Raises:
        ValueError: the pair is not supported.
    """
    design = _DESIGNS.get(frozenset((in_rate, out_rate)))
    if design is None or in_rate == out_rate:
        raise ValueError(f"unsupported resampling {in_rate} Hz -> {out_rate} Hz")
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    taps, f_pass, f_stop = design
    taps = -(-taps // up) * up  # a whole number of taps per phase
    h = kaiser_lowpass(taps, (f_pass + f_stop) / 2, in_rate * up) * up
    return up, down, np.rint(h * 2.0**Q) / 2.0**Q


class StreamResampler:
    """Stateful int16 resampler for one direction of one call; ``process`` is the hot path.

    Input is int16 little-endian (or big-endian with ``big_endian=True``, as RTP slin is), output is
    always int16 little-endian.  Fewer than one input sample's worth is ever held back beyond the
    filter history; the group delay is ``latency_ms`` (2.2 ms for 16<->24 kHz, 3.7 ms for 8<->24 kHz).
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        L, M, h = design_filter(in_rate, out_rate)
        T = len(h) // L  # taps per phase
        Wd = T + ((L - 1) * M) // L  # input window that feeds one block of L outputs
        Hc = np.zeros((Wd, L), np.float64)  # one column per output phase, taps reversed
        for r in range(L):
            off, p = (r * M) // L, (r * M) % L
            Hc[off : off + T, r] = h[p::L][::-1]
        self.in_rate, self.out_rate = in_rate, out_rate
        self._L, self._M, self._T, self._Wd, self._Hc = L, M, T, Wd, Hc
        self.latency_ms = (len(h) - 1) / 2 / (in_rate * L) * 1e3
        self.reset()

    def reset(self) -> None:
        """Forget all history, as if freshly constructed."""
        self._buf = np.zeros(self._T - 1, np.float64)  # history + input not yet consumed
        self._x_start = -(self._T - 1)  # global input index of _buf[0]
        self._n = 0  # next output index, always a multiple of L

    def process(self, pcm: bytes, big_endian: bool = False) -> bytes:
        """Resample a chunk of any (even) byte length; returns int16 LE bytes (possibly empty).

        Raises:
            ValueError: ``pcm`` has an odd number of bytes.
        """
        x = np.frombuffer(pcm, ">i2" if big_endian else "<i2")
        buf = np.concatenate((self._buf, x), dtype=np.float64)
        L, M, T, Wd = self._L, self._M, self._T, self._Wd
        g0 = self._n // L
        # Blocks whose whole input window has arrived: block g reads buf from g*M - T + 1 on.
        g_end = (self._x_start + len(buf) - 1 - (Wd - T)) // M + 1
        if g_end <= g0:
            self._buf = buf
            return b""
        start = g0 * M - T + 1 - self._x_start
        win = np.ndarray((g_end - g0, Wd), np.float64, buffer=buf, offset=start * 8, strides=(M * 8, 8))
        y = (np.ascontiguousarray(win) @ self._Hc).ravel()  # one GEMM for every phase of every block
        self._n = g_end * L
        drop = g_end * M - T + 1 - self._x_start
        self._buf, self._x_start = buf[drop:], self._x_start + drop
        np.rint(y, out=y)
        np.minimum(np.maximum(y, -32768.0, out=y), 32767.0, out=y)  # np.clip costs 2 µs more
        return y.astype("<i2").tobytes()

    def flush(self) -> bytes:
        """Push the filter tail out by feeding ``T`` zero samples; returns that output.

        Afterwards the state is exactly as after those zeros (call ``reset`` to start clean).
        """
        return self.process(bytes(2 * self._T))
