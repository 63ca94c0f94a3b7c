"""Energy VAD for the fake Realtime server: a pure class, fed bytes, no clock, no asyncio.

It mimics ``server_vad`` timing, as the GA docstrings define the offsets:

* ``speech_started.audio_start_ms`` = onset of the first speech window, minus ``prefix_padding_ms``
  (clamped at the start of the current input buffer: the end of the previous turn, or the last
  clear/commit). It fires once ``min_speech_ms`` of
  consecutive speech windows have been seen.
* ``speech_stopped.audio_end_ms`` = the moment ``silence_duration_ms`` of consecutive silence has
  been seen, i.e. end of speech + silence duration ("includes the min silence duration").

Both count ms from the start of all audio fed in the session. A 20 ms window is speech when its
RMS level (see ``audio_gen.rms_dbfs``) is above ``threshold_dbfs``.
"""

from __future__ import annotations

from .audio_gen import rms_dbfs


def threshold_to_dbfs(threshold: float, base_dbfs: float) -> float:
    """Map the session's ``turn_detection.threshold`` (0..1, default 0.5) to a level in dBFS.

    0.5 maps to ``base_dbfs`` (the server's ``vad_threshold_dbfs``); each 0.1 step moves it by 4 dB,
    so 0.0 -> base - 20 dB (most sensitive) and 1.0 -> base + 20 dB (needs loud speech).
    """
    return base_dbfs + (float(threshold) - 0.5) * 40.0


class EnergyVad:
    """Window-by-window energy detector over 24 kHz int16 LE PCM."""

    def __init__(self, *, threshold_dbfs: float = -40.0, prefix_padding_ms: int = 300,
                 silence_duration_ms: int = 500, rate: int = 24000, window_ms: int = 20,
                 min_speech_ms: int = 60, start_sample: int = 0) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self.rate = rate
        self.window_ms = window_ms
        self.min_speech_ms = min_speech_ms
        self._win_bytes = 2 * rate * window_ms // 1000
        self._pending = bytearray()  # bytes of an incomplete window
        self._done_samples = start_sample  # samples already judged (whole windows)
        self.speaking = False
        self._floor_ms = self.ms(start_sample)  # start of the current input buffer
        self._run_windows = 0
        self._run_start = 0  # sample index of the first speech window in the current run
        self._silent_windows = 0

    def ms(self, sample_index: int) -> int:
        return int(round(sample_index * 1000 / self.rate))

    def reset(self) -> None:
        """Forget any speech in progress; the input buffer now starts at the current position."""
        self.speaking = False
        self._run_windows = 0
        self._silent_windows = 0
        self._floor_ms = self.ms(self._done_samples + len(self._pending) // 2)

    def feed(self, pcm: bytes) -> list[tuple[str, int]]:
        """Feed audio; return ``[("start", audio_start_ms) | ("stop", audio_end_ms), ...]`` in order."""
        self._pending += pcm
        events: list[tuple[str, int]] = []
        step = self._win_bytes
        n_win = len(self._pending) // step
        need_speech = max(1, -(-self.min_speech_ms // self.window_ms))
        need_silence = max(1, -(-self.silence_duration_ms // self.window_ms))
        for i in range(n_win):
            start = self._done_samples
            self._done_samples += step // 2
            loud = rms_dbfs(bytes(self._pending[i * step:(i + 1) * step])) > self.threshold_dbfs
            if not self.speaking:
                if not loud:
                    self._run_windows = 0
                    continue
                if self._run_windows == 0:
                    self._run_start = start
                self._run_windows += 1
                if self._run_windows >= need_speech:
                    self.speaking = True
                    self._silent_windows = 0
                    onset = max(self._floor_ms, self.ms(self._run_start) - self.prefix_padding_ms)
                    events.append(("start", max(0, onset)))
            elif loud:
                self._silent_windows = 0
            else:
                self._silent_windows += 1
                if self._silent_windows >= need_silence:
                    self.speaking = False
                    self._run_windows = 0
                    self._floor_ms = self.ms(self._done_samples)  # the turn is committed up to here
                    events.append(("stop", self._floor_ms))
        del self._pending[: n_win * step]
        return events
