"""Asterisk's WebSocket media channel (chan_websocket), sans-I/O: its control messages and the bot's
side of its frame queue. Nothing here reads a clock or a socket; times are passed in, and what must be
written goes to `MediaSocketCore.out` in order (``bytes``: a binary frame, ``str``: a text frame).

What chan_websocket does (channels/chan_websocket.c, Asterisk 22.10.1):
- Binary messages from the app are cut into frames of ``optimal_frame_size`` bytes (20 ms of the channel
  format) and queued; outside START_MEDIA_BUFFERING a partial frame at a message's end is **dropped**, so
  every message we send is a whole number of frames. The channel's own 20 ms timer takes one frame off
  the queue per tick (silence when empty): Asterisk times the audio, we hand it over as it arrives.
- The queue holds at most 1000 frames (20 s); a binary message arriving when it is full is dropped whole.
  ``MEDIA_XOFF`` is sent at 900 queued frames, ``MEDIA_XON`` once it is back under 800.
- ``MARK_MEDIA <id>`` queues a marker behind the audio sent so far; ``MEDIA_MARK_PROCESSED <id>`` comes
  back when the timer reaches it, i.e. when everything before it has been played into the bridge.
- ``FLUSH_MEDIA`` empties the queue (audio and pending marks) at once.
- Caller keys arrive as ``DTMF_END``; text commands are at most 128 bytes.
- res_http_websocket reads a WebSocket frame (header included) into a 65535-byte buffer: a bigger one
  makes Asterisk close the socket with 1009, which hangs the channel up. So a binary message carries at
  most `MAX_FRAME_PAYLOAD` bytes (68 frames of slin24).
- The control format is plain text by default, JSON with the dial option ``f(json)`` (externalMedia
  ``transport_data=f(json)``). Both are parsed here; commands are built in either.

`MediaSocketCore` uses the marks three ways: how much of an item the caller has heard (the truncate's
``audio_end_ms`` after a barge-in, extrapolated from the last mark at one frame per 20 ms), when the
bot's last words have been played (hang up or transfer only after that), and as its own flow control:
it keeps at most `WINDOW_FRAMES` unplayed frames at Asterisk (well below the XOFF level), so the queue
never fills. XOFF/XON are honoured as well, in case another sender shares nothing of our accounting.

With `on_played` set (the call's recording and bot level meter), the core also hands back the audio the
caller has heard, as it is heard: what was sent is kept until `deliver(now)` (called on each processed mark
and on a coarse clock) finds it played, then given as one slice per run with the time its last frame was
taken by the channel timer (the mark's arrival, one frame per 20 ms after it). Audio dropped by
FLUSH_MEDIA is never handed back: the caller never heard it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["BadMessage", "MediaSocketCore", "command", "parse_event"]

QUEUE_LENGTH_MAX = 1000       # frames chan_websocket queues before it drops whole binary messages
XOFF_LEVEL, XON_LEVEL = 900, 800
MAX_TEXT = 128                # bytes of one text command chan_websocket accepts
WINDOW_FRAMES = 500           # frames (10 s) we let Asterisk hold unplayed: below XOFF_LEVEL
CHUNK_FRAMES = 50             # frames (1 s) at most per binary message; one mark before each
MAX_FRAME_PAYLOAD = 65535 - 14  # bytes: Asterisk's receive buffer less the largest client frame header
FRAME_MS = 20


_MARK_JSON = '{"command":"MARK_MEDIA","correlation_id":"%d"}'


class BadMessage(ValueError):
    """A text frame from Asterisk that is not a control event we can read."""


def parse_event(text: str) -> tuple[str, dict[str, Any]]:
    """One control event, JSON (``{"event": ...}``) or plain text (``NAME key:value ...``)."""
    text = text.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise BadMessage(f"not JSON: {exc}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("event"), str) or not obj["event"]:
            raise BadMessage("JSON event without an 'event' name")
        return obj["event"], obj
    name, _, rest = text.partition(" ")
    if not name or not name.replace("_", "").isalnum():
        raise BadMessage("no event name")
    fields: dict[str, Any] = {}
    if name in ("MEDIA_MARK_PROCESSED", "MEDIA_BUFFERING_COMPLETED"):
        if rest:
            fields["correlation_id"] = rest.strip()
    elif name == "ERROR":
        head, _, err = rest.partition("error_text:")
        fields["error_text"] = err
        rest = head
    if name not in ("MEDIA_MARK_PROCESSED", "MEDIA_BUFFERING_COMPLETED"):
        for token in rest.split():
            key, sep, value = token.partition(":")
            if sep:
                fields[key] = value
    return name, fields


def command(name: str, use_json: bool, correlation_id: str | None = None) -> str:
    """A text command for chan_websocket; raises ValueError if it would exceed the 128-byte limit."""
    if use_json:
        msg: dict[str, str] = {"command": name}
        if correlation_id is not None:
            msg["correlation_id"] = correlation_id
        text = json.dumps(msg, separators=(",", ":"))
    else:
        text = name if correlation_id is None else f"{name} {correlation_id}"
    if len(text.encode()) > MAX_TEXT:
        raise ValueError(f"command longer than chan_websocket's {MAX_TEXT} bytes: {text[:40]}...")
    return text


class _Mark(NamedTuple):
    seq: int
    item: str | None
    item_ms: int        # ms of the item's audio sent before this mark
    frames: int         # frames sent before this mark (all items)


class _Anchor(NamedTuple):
    item: str | None
    item_ms: int
    frames: int
    at: float           # when its MEDIA_MARK_PROCESSED arrived


class MediaSocketCore:
    """The bot's outbound side of one chan_websocket channel.

    `push` model audio (PCM16 LE at the channel's rate, any sizes, tagged with the model's item id) as it
    arrives; whole frames go to `out` at once, up to the window, each chunk behind a MARK_MEDIA. Feed
    every text frame from Asterisk to `on_text`. `interrupt` is barge-in: FLUSH_MEDIA, forget what is
    queued, return (item, ms the caller heard of it).
    """

    def __init__(self, frame_bytes: int, *, use_json: bool = True, window_frames: int = WINDOW_FRAMES,
                 chunk_frames: int = CHUNK_FRAMES) -> None:
        if frame_bytes <= 0 or frame_bytes % 2:
            raise ValueError(f"frame size {frame_bytes} is not a whole number of 16-bit samples")
        if not 0 < chunk_frames <= window_frames < XOFF_LEVEL:
            raise ValueError("need 0 < chunk_frames <= window_frames < XOFF level")
        self.frame_bytes = frame_bytes
        self.use_json = use_json
        self.window = window_frames
        self._chunk_wanted = chunk_frames
        self.chunk = min(chunk_frames, MAX_FRAME_PAYLOAD // frame_bytes)
        self.out: list[bytes | str] = []
        self._queue: deque[tuple[str | None, bytes | None]] = deque()   # (item, whole frames | None = end)
        self._queued_frames = 0
        self._partial = b""                  # less than a frame of the current item
        self._item: str | None = None        # item being pushed
        self._muted: set[str] = set()        # items cut off by a barge-in: late deltas are discarded
        self._audio_bytes: dict[str | None, int] = {}   # real audio pushed per item (not padding)
        self._sent_bytes: dict[str | None, int] = {}    # bytes sent per item (frames, padding included)
        self._marks: deque[_Mark] = deque()  # sent, not yet processed
        self._anchor: _Anchor | None = None  # the last processed mark
        self._played = 0                     # frames known played (up to the anchor, or flushed)
        self._seq = 0
        self.xoff = False
        self.control = ""                    # the control format Asterisk speaks, from its first event
        self.frames_sent = 0
        self.messages_sent = 0
        self.marks_sent = 0
        self.marks_processed = 0
        self.xoffs = 0
        self.flushes = 0
        self.max_unplayed = 0
        # audio sent, kept until heard when `on_played` is set: (first frame, whole frames)
        self.on_played: Callable[[memoryview, float], None] | None = None
        self._unheard: deque[tuple[int, bytes]] = deque()
        self._delivered = 0                  # frames handed to on_played (or flushed unheard)

    # --- rates ---------------------------------------------------------------------------------------------
    @property
    def rate(self) -> int:
        return self.frame_bytes * 1000 // FRAME_MS // 2

    def _ms(self, nbytes: int) -> int:
        return nbytes * 500 // self.rate

    def set_frame_bytes(self, frame_bytes: int) -> None:
        """Asterisk's MEDIA_START says ``optimal_frame_size``; before any audio was sent, adopt it."""
        if 0 < frame_bytes <= MAX_FRAME_PAYLOAD and frame_bytes % 2 == 0 and self.frames_sent == 0 \
                and not self._queue:
            self.frame_bytes = frame_bytes
            self.chunk = min(self._chunk_wanted, MAX_FRAME_PAYLOAD // frame_bytes)

    # --- outbound --------------------------------------------------------------------------------------------
    def push(self, pcm: bytes, item_id: str | None) -> None:
        if item_id is not None and item_id in self._muted:
            return
        if item_id != self._item:
            if self._partial:       # the previous item was not ended: its tail goes out padded
                self._end_partial()
            self._item = item_id
        self._audio_bytes[item_id] = self._audio_bytes.get(item_id, 0) + len(pcm) - (len(pcm) & 1)
        data = self._partial + pcm if self._partial else pcm
        whole = len(data) - len(data) % self.frame_bytes
        self._partial = data[whole:]
        if whole:
            self._queue.append((item_id, data[:whole]))
            self._queued_frames += whole // self.frame_bytes
            self.pump()

    def end_item(self) -> None:
        """The item has no more audio: its tail goes out padded to a frame, then a mark that says when
        the caller has heard all of it."""
        if self._item is not None and self._item in self._muted:
            return
        if self._partial:
            self._end_partial()
        self._queue.append((self._item, None))
        self.pump()

    def _end_partial(self) -> None:
        data = self._partial + bytes(self.frame_bytes - len(self._partial))
        self._partial = b""
        self._queue.append((self._item, data))
        self._queued_frames += 1

    def pump(self) -> None:
        """Move queued frames to `out` while the window and XON allow (push, end_item and on_text call it)."""
        q = self._queue
        while q and not self.xoff:
            item, data = q[0]
            if data is None:
                q.popleft()
                self._mark(item)
                continue
            room = self.window - (self.frames_sent - self._played)
            if room <= 0:
                return
            take = min(len(data) // self.frame_bytes, room, self.chunk) * self.frame_bytes
            self._mark(item)
            if take == len(data):
                q.popleft()
            else:
                q[0] = (item, data[take:])
                data = data[:take]
            self.out.append(data)
            if self.on_played is not None:
                self._unheard.append((self.frames_sent, data))
            n = take // self.frame_bytes
            self._queued_frames -= n
            self.frames_sent += n
            self.messages_sent += 1
            self._sent_bytes[item] = self._sent_bytes.get(item, 0) + take
            unplayed = self.frames_sent - self._played
            if unplayed > self.max_unplayed:
                self.max_unplayed = unplayed

    def _mark(self, item: str | None) -> None:
        self._seq += 1
        sent = self._sent_bytes.get(item, 0)
        self._marks.append(_Mark(self._seq, item, self._ms(min(sent, self._audio_bytes.get(item, 0))),
                                 self.frames_sent))
        # once per chunk: the template is what command() builds, without json.dumps (tested equal)
        self.out.append(_MARK_JSON % self._seq if self.use_json else f"MARK_MEDIA {self._seq}")
        self.marks_sent += 1

    # --- what the caller has heard -----------------------------------------------------------------------
    def _heard(self, item: str | None, now: float) -> int:
        """ms of `item` played at `now`: its last processed mark, the frame taken with it (the channel
        answers a mark on the tick that takes the next frame), then one frame per 20 ms; at most what was
        sent of its audio."""
        a = self._anchor
        if a is None or a.item != item:
            return 0
        sent_audio = self._ms(min(self._sent_bytes.get(item, 0), self._audio_bytes.get(item, 0)))
        return max(0, min(a.item_ms + FRAME_MS + int((now - a.at) * 1000), sent_audio))

    def unplayed_frames(self, now: float) -> int:
        """Frames sent but not yet played at `now` (estimated between marks)."""
        played = self._played
        if self._anchor is not None:
            played += 1 + int((now - self._anchor.at) * 1000) // FRAME_MS
        return max(0, self.frames_sent - played)

    def busy(self, now: float) -> bool:
        """Bot audio is queued here or still being played by Asterisk."""
        return bool(self._queue or self._partial) or self.unplayed_frames(now) > 0

    @property
    def all_heard(self) -> bool:
        """Everything sent has been played (every mark came back) and nothing waits here."""
        return not self._queue and not self._partial and not self._marks

    def interrupt(self, now: float) -> tuple[str | None, int]:
        """Barge-in: FLUSH_MEDIA, drop what waits here, mute the item; (item, ms the caller heard of it)."""
        a = self._anchor
        item, heard = self._item, 0
        if a is not None and a.item is not None and a.item not in self._muted:
            ms = self._heard(a.item, now)
            total = self._ms(min(self._sent_bytes.get(a.item, 0), self._audio_bytes.get(a.item, 0)))
            if a.item == self._item or ms < total:   # the caller was still hearing that item
                item, heard = a.item, ms
        self.deliver(now)                    # what the caller heard before the cut, then the rest is gone
        self._unheard.clear()
        self._delivered = self.frames_sent
        if self.frames_sent > self._played or self._queue or self._partial:
            self.out.append(command("FLUSH_MEDIA", self.use_json))
            self.flushes += 1
        if self._item is not None:
            self._muted.add(self._item)
        if item is not None:
            self._muted.add(item)
        self._queue.clear()
        self._queued_frames = 0
        self._partial = b""
        self._marks.clear()      # FLUSH_MEDIA drops the marks too: none of them comes back
        self._anchor = None
        self._played = self.frames_sent
        return item, heard

    # --- events from Asterisk ------------------------------------------------------------------------------
    def on_text(self, text: str, now: float) -> tuple[str, dict[str, Any]]:
        """Account for one control event (marks, XOFF/XON, MEDIA_START) and return it (name, fields)
        for the caller to act on. Raises BadMessage for text that is not an event."""
        name, fields = parse_event(text)
        self.control = "json" if text.lstrip().startswith("{") else "plain-text"
        if name == "MEDIA_MARK_PROCESSED":
            self._mark_processed(str(fields.get("correlation_id", "")), now)
        elif name == "MEDIA_XOFF":
            self.xoff = True
            self.xoffs += 1
        elif name == "MEDIA_XON":
            self.xoff = False
            self.pump()
        elif name == "MEDIA_START":
            try:
                self.set_frame_bytes(int(fields.get("optimal_frame_size", 0)))
            except (TypeError, ValueError):
                pass
        return name, fields

    def _mark_processed(self, correlation_id: str, now: float) -> None:
        try:
            seq = int(correlation_id)
        except ValueError:
            return
        marks = self._marks
        while marks and marks[0].seq < seq:     # marks come back in order; an earlier one was passed
            marks.popleft()
        if not marks or marks[0].seq != seq:
            return                              # flushed, or not ours: nothing to learn
        m = marks.popleft()
        if self._unheard:   # all before this mark was played: on the last anchor's clock (or, first, this one's)
            a = self._anchor
            if a is None:
                self._hand_back(m.frames, m.frames, now)
            else:
                self._hand_back(m.frames, a.frames, a.at)
        self._anchor = _Anchor(m.item, m.item_ms, m.frames, now)
        self._played = m.frames
        self.marks_processed += 1
        self.pump()                             # the window moved on

    # --- the audio as heard -------------------------------------------------------------------------------------
    def deliver(self, now: float) -> None:
        """Hand `on_played` the audio played by `now`: up to the frame the channel timer has taken, on the
        last processed mark's clock, and never past the next mark (beyond it, play may not have begun)."""
        a = self._anchor
        if a is None or not self._unheard:
            return
        upto = a.frames + 1 + round((now - a.at) * 1000) // FRAME_MS
        cap = self._marks[0].frames if self._marks else self.frames_sent
        self._hand_back(min(upto, cap), a.frames, a.at)

    def _hand_back(self, upto: int, anchor_frame: int, anchor_at: float) -> None:
        """on_played(slice, time its last frame was taken) for each sent message, up to frame `upto`, where
        frame `anchor_frame` was taken at `anchor_at` and one more every 20 ms. One call per message run."""
        emit, fb, unheard = self.on_played, self.frame_bytes, self._unheard
        while unheard and self._delivered < upto:
            first, data = unheard[0]
            n = len(data) // fb
            start = max(self._delivered - first, 0)
            end = min(upto - first, n)
            if end > start and emit is not None:
                t = anchor_at + (first + end - 1 - anchor_frame) * FRAME_MS / 1000
                emit(memoryview(data)[start * fb:end * fb], t)
            self._delivered = first + max(end, start)
            if end >= n:
                unheard.popleft()
            else:
                break

    def stats(self) -> dict[str, int]:
        return {"control": self.control, "tx_frames": self.frames_sent, "tx_messages": self.messages_sent,
                "marks_sent": self.marks_sent, "marks_processed": self.marks_processed,
                "xoffs": self.xoffs, "flushes": self.flushes, "max_unplayed_frames": self.max_unplayed,
                "queued_frames": self._queued_frames}
