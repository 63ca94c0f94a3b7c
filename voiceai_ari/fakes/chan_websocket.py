"""A model of chan_websocket's frame queue (Asterisk 22.10.1, channels/chan_websocket.c), sans-I/O.

For tests and the benchmark's fake Asterisk peer: what the real channel does with the app's messages,
so the bot's accounting (marks, window, barge-in) can be checked against what a caller would have heard.

- a binary message is cut into whole ``frame_bytes`` frames; a partial frame at its end is dropped (no
  START_MEDIA_BUFFERING); a message arriving with 1000 frames queued is dropped whole;
- ``MARK_MEDIA`` queues a marker; ``FLUSH_MEDIA`` empties the queue, markers included;
- `tick` is the channel's 20 ms timer: control markers at the head are answered
  (MEDIA_MARK_PROCESSED), then one frame is played (or nothing);
- XOFF at 900 queued frames, XON once under 800 (checked on the tick, as the channel does).
"""

from __future__ import annotations

import json
from collections import deque

from ..media.mediaws import QUEUE_LENGTH_MAX, XOFF_LEVEL, XON_LEVEL

__all__ = ["ChanWebsocketQueue"]


class ChanWebsocketQueue:
    def __init__(self, frame_bytes: int, use_json: bool = True) -> None:
        self.frame_bytes = frame_bytes
        self.use_json = use_json
        self._q: deque[bytes | str] = deque()     # frames, or a mark's correlation id (str)
        self._frames = 0
        self._full = False
        self.events: list[str] = []                # text frames Asterisk sends back, in order
        self.played: list[bytes] = []              # frames played into the bridge, in order
        self.dropped_bytes = 0                     # partial frames and messages refused when full
        self.max_frames = 0

    def _event(self, name: str, correlation_id: str | None = None) -> str:
        if self.use_json:
            msg = {"event": name, "channel_id": "1.1"}
            if correlation_id is not None:
                msg["correlation_id"] = correlation_id
            return json.dumps(msg)
        return name if correlation_id is None else f"{name} {correlation_id}"

    def binary(self, data: bytes) -> None:
        if self._frames >= QUEUE_LENGTH_MAX:
            self.dropped_bytes += len(data)
            return
        fb = self.frame_bytes
        whole = len(data) - len(data) % fb
        self.dropped_bytes += len(data) - whole
        for i in range(0, whole, fb):
            self._q.append(data[i:i + fb])
            self._frames += 1
            if not self._full and self._frames >= XOFF_LEVEL:
                self._full = True
                self.events.append(self._event("MEDIA_XOFF"))
        self.max_frames = max(self.max_frames, self._frames)

    def text(self, msg: str) -> None:
        if msg.startswith("{"):
            obj = json.loads(msg)
            name, cid = obj["command"], obj.get("correlation_id")
        else:
            name, _, rest = msg.partition(" ")
            cid = rest or None
        if name == "MARK_MEDIA":
            self._q.append(str(cid or ""))
        elif name == "FLUSH_MEDIA":
            self._q.clear()
            self._frames = 0

    def send(self, msg: bytes | str) -> None:
        if isinstance(msg, str):
            self.text(msg)
        else:
            self.binary(msg)

    def tick(self) -> bytes | None:
        """One 20 ms timer tick: the frame played (None: silence)."""
        if self._full and self._frames < XON_LEVEL:
            self._full = False
            self.events.append(self._event("MEDIA_XON"))
        q = self._q
        while q and isinstance(q[0], str):
            self.events.append(self._event("MEDIA_MARK_PROCESSED", q.popleft()))  # type: ignore[arg-type]
        if not q:
            return None
        frame = q.popleft()
        assert isinstance(frame, bytes)
        self._frames -= 1
        self.played.append(frame)
        return frame

    @property
    def queued_frames(self) -> int:
        return self._frames
