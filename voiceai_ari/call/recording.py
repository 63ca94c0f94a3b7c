"""What a call's audio looks like from outside: level meters for the dashboard, and opt-in stereo recordings.

`AudioTap` sits on both audio paths of a call: `caller(pcm)` for what Asterisk delivered (then handed on to
the model), `bot(pcm)` for each frame as it is sent to the caller, or `bot(pcm, t)` for audio the transport
knows the caller heard at loop time `t` (chan_websocket: Asterisk re-times what the bot hands over early). Per frame it keeps a reference to the
frame and counts it: no copy, no maths, no I/O. The dashboard samples `levels()` a few times a second.

With `VOICEAI_RECORD_DIR`, the tap also queues each frame, stamped with the loop's clock, for `Recorder`: one
writer thread for every call's recording (as transcripts have), which places each frame on the call's
timeline (a gap in one direction becomes silence, so caller and bot stay in step), resamples the caller's
side to the bot's rate, and writes a stereo 16-bit WAV, caller left, bot right. Files are 0600 in a 0700
folder; recordings older than `VOICEAI_RECORD_RETENTION_DAYS` are deleted when a new one starts (at most
once an hour).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .writer_thread import Shared, WriterThread

from ..media.codec import g711_decode
from ..media.resample import StreamResampler

log = logging.getLogger("voiceai.recording")

FOLDER_MODE, FILE_MODE = 0o700, 0o600
JITTER_S = 0.060          # a frame later than this on its side's timeline leaves silence before it
MAX_SKEW_S = 1.0          # one side silent this long is filled with silence so the other can be written,
LATE_S = 0.25             # up to this far behind: room for audio stamped earlier than it is given (websocket)
SWEEP_EVERY_S = 3600.0    # retention sweep at most this often
CALLER, BOT = 0, 1


def dbfs(pcm: bytes | None) -> float:
    """RMS level of 16-bit little-endian PCM in dBFS (-90 for silence or nothing)."""
    if not pcm or len(pcm) < 2:
        return -90.0
    x = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2).astype(np.float32)
    rms = float(np.sqrt(np.mean(x * x)))
    return max(-90.0, 20 * math.log10(rms / 32768)) if rms > 0 else -90.0


class AudioTap:
    def __init__(self, send: Callable[[bytes], None], clock: Callable[[], float],
                 recorder: Recording | None = None, law: str | None = None) -> None:
        self._send, self._clock, self.recorder = send, clock, recorder
        self.law = law     # G.711 passthrough: both sides are ulaw/alaw bytes, decoded only when looked at
        self._last = [b"", b""]
        self._frames = [0, 0]
        self._seen = [0, 0]

    def caller(self, pcm: bytes) -> None:
        self._last[CALLER] = pcm
        self._frames[CALLER] += 1
        if self.recorder is not None:
            self.recorder.put(CALLER, self._clock(), pcm)
        self._send(pcm)

    def bot(self, pcm: bytes | memoryview, t: float | None = None) -> None:
        """Bot audio (one frame or a run of them) that reached the caller at `t` (its end; default: now)."""
        self._last[BOT] = pcm
        self._frames[BOT] += 1
        if self.recorder is not None:
            self.recorder.put(BOT, self._clock() if t is None else t, pcm)

    def levels(self) -> tuple[float, float]:
        """(caller, bot) dBFS of the latest frame of each side; -90 for a side with no frame since the
        last call (the bot sends nothing new, or only silence, while it is quiet)."""
        out = []
        for side in (CALLER, BOT):
            fresh = self._frames[side] != self._seen[side]
            self._seen[side] = self._frames[side]
            pcm = self._last[side]
            if fresh and self.law is not None and pcm:
                pcm = g711_decode(pcm, self.law)
            out.append(round(dbfs(pcm), 1) if fresh else -90.0)
        return out[0], out[1]

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None


# --- recording -------------------------------------------------------------------------------------------
class _Track:
    """The writer thread's state for one recording."""

    def __init__(self, rec: Recording) -> None:
        self.rec = rec
        self.rate = rec.rate
        self.up = (StreamResampler(rec.caller_rate, rec.rate) if rec.caller_rate != rec.rate else None)
        self.pending = [bytearray(), bytearray()]   # mono samples per side, from sample `written` on
        self.written = 0
        self.wav: wave.Wave_write | None = None
        self.file: Any = None
        self.failed = False

    def open(self) -> None:
        try:
            folder = self.rec.path.parent
            if not folder.is_dir():
                os.makedirs(folder, mode=FOLDER_MODE, exist_ok=True)
                os.chmod(folder, FOLDER_MODE)
            fd = os.open(self.rec.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            os.fchmod(fd, FILE_MODE)
            self.file = os.fdopen(fd, "wb")
            self.wav = wave.open(self.file, "wb")
            self.wav.setnchannels(2)
            self.wav.setsampwidth(2)
            self.wav.setframerate(self.rate)
        except OSError as exc:
            self.failed = True
            log.error("! recording %s cannot be written: %s", self.rec.path, exc)

    def frame(self, side: int, t: float, pcm: bytes) -> None:
        if self.rec.law is not None:                    # G.711 passthrough: decoded here, off the loop
            pcm = g711_decode(pcm, self.rec.law)
        if side == CALLER and self.up is not None:
            pcm = self.up.process(pcm)
        n = len(pcm) // 2
        end = round((t - self.rec.t0) * self.rate)
        start, at = end - n, self.written + len(self.pending[side]) // 2
        if start - at > JITTER_S * self.rate:           # a gap on this side: silence, to stay in step
            self.pending[side].extend(bytes(2 * (start - at)))
        self.pending[side].extend(pcm[:2 * n])
        other = self.pending[1 - side]
        lag = self.written + len(self.pending[side]) // 2 - (self.written + len(other) // 2)
        if lag > MAX_SKEW_S * self.rate:                # the other side is quiet: fill it up to near this one
            other.extend(bytes(2 * (lag - int(LATE_S * self.rate))))
        self.emit()

    def emit(self, final: bool = False) -> None:
        a, b = self.pending
        if final:
            m = max(len(a), len(b))
            a.extend(bytes(m - len(a)))
            b.extend(bytes(m - len(b)))
        m = min(len(a), len(b)) // 2
        if m == 0:
            return
        stereo = np.empty(2 * m, dtype="<i2")
        stereo[0::2] = np.frombuffer(a, dtype="<i2", count=m)
        stereo[1::2] = np.frombuffer(b, dtype="<i2", count=m)
        del a[:2 * m], b[:2 * m]
        self.written += m
        if self.wav is not None and not self.failed:
            try:
                self.wav.writeframesraw(stereo.tobytes())
            except OSError as exc:
                self.failed = True
                log.error("! recording %s: write failed: %s", self.rec.path, exc)

    def close(self) -> None:
        self.emit(final=True)
        if self.wav is not None:
            try:
                self.wav.close()   # writes the header's lengths (the file object stays ours to close)
            except OSError as exc:
                log.error("! recording %s: close failed: %s", self.rec.path, exc)
            self.wav = None
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
            self.file = None


class _Writer(WriterThread):
    def __init__(self) -> None:
        self._tracks: dict[int, _Track] = {}
        self._swept: dict[Path, float] = {}
        super().__init__("recording-writer")

    def _run(self) -> None:
        while True:
            op = self._q.get()
            if op is None:
                for track in self._tracks.values():
                    track.close()
                return
            try:
                self._do(op)
            except Exception:  # noqa: BLE001 - one recording's failure must not end the others
                log.exception("! recording writer: %s failed", op[0])

    def _do(self, op: tuple[Any, ...]) -> None:
        kind, rec = op[0], op[1]
        if kind == "frame":
            track = self._tracks.get(id(rec))
            if track is not None:
                track.frame(op[2], op[3], op[4])
        elif kind == "open":
            self._sweep(rec.path.parent, rec.retention_days)
            track = self._tracks[id(rec)] = _Track(rec)
            track.open()
        elif kind == "close":
            track = self._tracks.pop(id(rec), None)
            if track is not None:
                track.close()
            if op[2] is not None:
                op[2].set()

    def _sweep(self, folder: Path, days: int) -> None:
        now = time.time()
        if days <= 0 or now - self._swept.get(folder, 0.0) < SWEEP_EVERY_S:
            return
        self._swept[folder] = now
        sweep(folder, days, now)


def sweep(folder: Path, days: int, now: float | None = None) -> int:
    """Delete recordings (*.wav) in `folder` older than `days`; returns how many."""
    cutoff = (time.time() if now is None else now) - days * 86400
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        try:
            if e.name.endswith(".wav") and e.is_file() and e.stat().st_mtime < cutoff:
                os.unlink(e.path)
                removed += 1
        except OSError:
            pass
    if removed:
        log.info("= recordings: %d older than %d days deleted from %s", removed, days, folder)
    return removed


_get_writer = Shared(_Writer).get


SAFE = re.compile(r"[^A-Za-z0-9._-]")


class Recording:
    """One call's recording, written by the shared writer thread. `put` is called from the event loop."""

    def __init__(self, folder: str, stem: str, *, t0: float, caller_rate: int, rate: int,
                 retention_days: int = 0, law: str | None = None) -> None:
        self.path = Path(folder) / f"{SAFE.sub('_', stem)}.wav"
        self.t0, self.caller_rate, self.rate, self.retention_days = t0, caller_rate, rate, retention_days
        self.law = law     # "ulaw"/"alaw": frames of both sides are G.711 bytes (8 kHz), decoded by the writer
        self._w = _get_writer()
        self._w.put(("open", self))
        self.closed = False

    def put(self, side: int, t: float, pcm: bytes) -> None:
        self._w.put(("frame", self, side, t, pcm))

    def close(self, done: threading.Event | None = None) -> None:
        if not self.closed:
            self.closed = True
            self._w.put(("close", self, done))
        elif done is not None:
            done.set()


def tap_call(call: Any) -> AudioTap:
    """The tap of a call whose media is up: caller audio goes on to the model; bot audio comes from the
    transport's `on_sent`, as RTP paces it out or as chan_websocket's marks say the caller heard it (a
    transport without it would show no bot meter and record the bot side silent)."""
    import asyncio
    from ..providers.base import MODEL_RATE
    s, media = call.settings, call.media
    clock = asyncio.get_running_loop().time
    rate = getattr(media, "sent_rate", MODEL_RATE)
    law = getattr(media, "audio_law", None)   # G.711 passthrough: what passes both ways is ulaw/alaw, 8 kHz
    caller_rate = 8000 if law else MODEL_RATE
    recorder = None
    if s.record_dir and s.record:   # the process has a folder and the call's agent records
        recorder = Recording(s.record_dir, call.transcript.stem, t0=clock(), caller_rate=caller_rate, rate=rate,
                             retention_days=s.record_retention_days, law=law)
    tap = AudioTap(call.model.send_audio, clock, recorder, law)
    if hasattr(media, "on_sent"):
        media.on_sent = tap.bot
    return tap
