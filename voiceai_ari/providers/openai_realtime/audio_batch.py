"""Caller audio gathered into fewer, larger ``input_audio_buffer.append`` events (``VOICEAI_APPEND_MS``), sans I/O.

Each append is a JSON text frame on the model's WebSocket: one per 20 ms frame costs a base64 encode, a
WebSocket frame and a socket write 50 times a second per call. Gathering N ms before sending divides that
by N/20. The price is latency: the server's VAD hears the caller up to N ms later (barge-in, end of turn).

`AudioBatch` only keeps bytes: ``add`` returns a full batch once ``target`` bytes are in, ``take`` empties
it early (before any other client event, so nothing is reordered; at a deadline; at close). Bytes come out
exactly as they went in, in order, none lost and none repeated.
"""

from __future__ import annotations

APPEND_MS_MIN, APPEND_MS_MAX = 20, 200


class AudioBatch:
    """Bytes of caller audio until ``target`` are in (``target`` <= one frame: every frame goes alone)."""

    __slots__ = ("_buf", "target")

    def __init__(self, target: int) -> None:
        self.target = target
        self._buf = bytearray()

    @classmethod
    def of_ms(cls, append_ms: int, bytes_per_ms: int) -> AudioBatch:
        return cls(append_ms * bytes_per_ms)

    def __len__(self) -> int:
        return len(self._buf)

    def add(self, pcm: bytes) -> bytes | None:
        """Keep ``pcm``; the whole batch once it holds ``target`` bytes or more, else None."""
        buf = self._buf
        if not buf and len(pcm) >= self.target:
            return bytes(pcm)          # a frame as large as a batch goes as it is (no copy into the buffer)
        buf += pcm
        if len(buf) < self.target:
            return None
        out = bytes(buf)
        buf.clear()
        return out

    def take(self) -> bytes | None:
        """What is kept, now (None if nothing is)."""
        if not self._buf:
            return None
        out = bytes(self._buf)
        self._buf.clear()
        return out
