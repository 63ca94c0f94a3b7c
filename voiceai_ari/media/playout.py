"""Outbound audio buffering and the 20 ms send schedule, both pure (time is passed in).

``Playout`` turns the model's audio deltas (any sizes, faster than real time) into exact 20 ms
frames and knows, per item, how much of it has actually been sent: on barge-in, ``clear()`` returns
the figure ``conversation.item.truncate`` needs as ``audio_end_ms``.

``PacingClock`` is the absolute-deadline schedule the send loop sleeps against: frame k is due at
``start + k * period`` computed from k (never accumulated), so late wake-ups cannot drift it
(aiortc's ``AudioStreamTrack.recv``); after a stall it re-anchors to now instead of bursting
(pipecat's ``_write_audio_sleep``).
"""

from __future__ import annotations

from collections import deque

__all__ = ["PacingClock", "Playout"]


class Playout:
    """Model audio in (PCM16 LE at ``rate``, any chunk sizes, tagged with the model's item_id),
    exact 20 ms frames out.

    Chunks are queued as received (``bytes`` are not copied) with a read offset into the first, so
    pushing a 60-second response at once is cheap and each ``pop`` copies only the 20 ms it returns.

    ``sample_bytes=1`` with a ``pad`` byte is G.711 passthrough (8 kHz, 160 bytes per frame, one byte a
    sample): no odd-byte carry, and the end-of-item padding is the law's silence code, not zeros.

    Call ``pop()`` once per send tick: a ``None`` is what marks the gap that makes the next frame
    start a talkspurt (RTP marker bit), and, while an item is mid-stream, counts an underrun
    (one per missed 20 ms slot).
    """

    def __init__(self, rate: int, sample_bytes: int = 2, pad: int = 0) -> None:
        if rate <= 0 or rate % 50:
            raise ValueError(f"sample rate {rate} is not a whole number of samples per 20 ms")
        if sample_bytes not in (1, 2):
            raise ValueError("sample_bytes must be 1 (G.711) or 2 (PCM16)")
        self.rate = rate
        self.sample_bytes = sample_bytes
        self._bytes_per_s = rate * sample_bytes
        self._pad = bytes((pad,))
        self.frame_bytes = rate // 50 * sample_bytes
        # (item_id, is_padding, even-length bytes); padding from end_item() is sent but is no item's audio
        self._chunks: deque[tuple[str | None, bool, bytes]] = deque()
        self._offset = 0  # bytes of _chunks[0] already popped
        self._queued = 0  # bytes queued, counting from _offset
        self._odd = b""  # a trailing odd byte waiting for its other half
        self._played: dict[str | None, int] = {}  # item_id -> bytes of its audio popped
        self._last_item: str | None = None  # item of the last audio popped
        self._open = False  # an item is mid-stream: pushed, not yet ended
        self._talking = False  # the previous pop returned a frame
        self.frames_out = 0
        self.underruns = 0

    @property
    def queued_ms(self) -> int:
        """Milliseconds queued, including a partial frame and end-of-item padding."""
        return self._queued * 1000 // self._bytes_per_s

    def push(self, pcm_le: bytes, item_id: str | None = None) -> None:
        """Queue audio; never drops any.  An odd trailing byte is held for the next push."""
        if self._odd:
            pcm_le = self._odd + pcm_le
            self._odd = b""
        if len(pcm_le) % 2 and self.sample_bytes == 2:
            self._odd = pcm_le[-1:]
            pcm_le = pcm_le[:-1]
        if pcm_le:
            self._chunks.append((item_id, False, bytes(pcm_le)))
            self._queued += len(pcm_le)
            self._played.setdefault(item_id, 0)
        self._open = True

    def end_item(self) -> None:
        """The response's audio is complete: pad the last partial frame with zeros so it can be sent.

        A held odd byte becomes the low byte of one last sample.
        """
        short = -(self._queued + len(self._odd)) % self.frame_bytes
        if self._odd or short:
            self._chunks.append((None, True, self._odd + self._pad * short))
            self._queued += len(self._odd) + short
            self._odd = b""
        self._open = False

    def pop(self) -> tuple[bytes, bool] | None:
        """``(frame, starts_talkspurt)``, or ``None`` if no complete frame is queued."""
        fb = self.frame_bytes
        if self._queued < fb:
            if self._open:
                self.underruns += 1
            self._talking = False
            return None
        item, pad, chunk = self._chunks[0]
        off = self._offset
        if len(chunk) - off >= fb:  # hot path: the frame lies within one chunk
            frame = chunk[off : off + fb]
            if not pad:
                self._played[item] += fb
                if item is not None:
                    self._last_item = item
            off += fb
            if off == len(chunk):
                self._chunks.popleft()
                off = 0
            self._offset = off
        else:
            frame = self._gather(fb)
        self._queued -= fb
        self.frames_out += 1
        starts = not self._talking
        self._talking = True
        if not self._queued and not self._open:
            self._talking = False  # the item ended and drained: the next audio is a new talkspurt
        return frame, starts

    def _gather(self, need: int) -> bytes:
        parts = []
        while need:
            item, pad, chunk = self._chunks[0]
            take = min(need, len(chunk) - self._offset)
            parts.append(chunk[self._offset : self._offset + take])
            if not pad:
                self._played[item] += take
                if item is not None:
                    self._last_item = item
            need -= take
            if self._offset + take == len(chunk):
                self._chunks.popleft()
                self._offset = 0
            else:
                self._offset += take
        return b"".join(parts)

    def clear(self) -> tuple[str | None, int]:
        """Barge-in: drop everything queued (partial frame and odd byte too).

        Returns ``(item_id, ms)``: the item whose audio is being played (the first tagged item still
        queued, else the last one popped; ``None`` if there is none) and how many ms of it were
        popped, i.e. sent.  That is ``audio_end_ms`` for ``conversation.item.truncate``.
        Untagged audio (``item_id=None``, e.g. a resampler tail) never hides a tagged item.
        """
        item = self._last_item
        for queued_item, pad, _ in self._chunks:
            if not pad and queued_item is not None:
                item = queued_item
                break
        self._chunks.clear()
        self._offset = self._queued = 0
        self._odd = b""
        self._open = self._talking = False
        return item, self.played_ms(item)

    def played_ms(self, item_id: str | None) -> int:
        """Milliseconds of ``item_id``'s audio popped (sent) so far; end-of-item padding excluded."""
        return self._played.get(item_id, 0) * 1000 // self._bytes_per_s


class PacingClock:
    """Absolute-deadline 20 ms schedule on a monotonic clock (aiortc style); re-anchors after a stall.

    Frame k after the anchor is due at ``anchor + k * period``.  The send loop sleeps until
    ``next_deadline()``, then sends ``due(now)`` frames.
    """

    def __init__(self, period: float = 0.020, max_late: float = 0.100) -> None:
        if period <= 0 or max_late < 0:
            raise ValueError("period must be positive and max_late non-negative")
        self.period = period
        self.max_late = max_late
        self.reanchors = 0
        self._anchor: float | None = None
        self._k = 0  # frames handed out since the anchor

    def start(self, now: float) -> None:
        """Anchor the schedule: frame 0 is due at ``now``."""
        self._anchor = now
        self._k = 0

    def due(self, now: float) -> int:
        """Number of frames due at ``now`` (0 or more), advancing the schedule past them.

        More than ``max_late`` behind the next deadline (a stall): re-anchor to ``now``, count it in
        ``reanchors`` and return 1, rather than bursting out the backlog.

        Raises:
            RuntimeError: called before ``start``.
        """
        anchor = self._anchor
        if anchor is None:
            raise RuntimeError("PacingClock.due() called before start()")
        k, period = self._k, self.period
        deadline = anchor + k * period
        if now < deadline:
            return 0
        if now - deadline > self.max_late:
            self._anchor, self._k = now, 1
            self.reanchors += 1
            return 1
        n = 0
        while anchor + k * period <= now:  # at most max_late / period + 1 turns
            k += 1
            n += 1
        self._k = k
        return n

    def next_deadline(self) -> float:
        """When the next frame is due (monotonic seconds).

        Raises:
            RuntimeError: called before ``start``.
        """
        if self._anchor is None:
            raise RuntimeError("PacingClock.next_deadline() called before start()")
        return self._anchor + self._k * self.period
