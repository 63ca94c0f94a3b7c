"""In-process event fan-out for the dashboard: calls publish, page streams (Server-Sent Events) subscribe.

`EventHub.publish` never blocks and never awaits: it is called from a call's event handling (a transcript
line, a tool result) and must not slow it down. Each subscriber has a bounded queue; a subscriber that does
not keep up (a stalled browser tab, a slow network) is dropped, not waited for: its queue is cleared, it is
told so when it next reads, and `dropped` counts it. The page reconnects and starts from a fresh snapshot.

No I/O here, and no per-audio-frame events: level meters are sampled by the dashboard a few times a second.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

ALL = "*"     # a subscriber's topic that receives every topic


class Subscription:
    """One reader: a bounded queue of (topic, event) and a flag set when it was dropped for falling behind."""

    def __init__(self, hub: EventHub, topics: frozenset[str], maxlen: int) -> None:
        self._hub, self.topics, self.maxlen = hub, topics, maxlen
        self._q: deque[tuple[str, dict[str, Any]]] = deque()
        self._wake = asyncio.Event()
        self.dropped = False
        self.closed = False

    def _offer(self, topic: str, event: dict[str, Any]) -> bool:
        """Queue an event; False if the queue is full (the hub then drops this subscriber)."""
        if len(self._q) >= self.maxlen:
            return False
        self._q.append((topic, event))
        self._wake.set()
        return True

    def _drop(self) -> None:
        self._q.clear()
        self.dropped = True
        self._wake.set()

    def pending(self) -> int:
        return len(self._q)

    def get_nowait(self) -> tuple[str, dict[str, Any]] | None:
        if self._q:
            return self._q.popleft()
        self._wake.clear()
        return None

    async def get(self, timeout: float | None = None) -> tuple[str, dict[str, Any]] | None:
        """The next event; None on timeout, or once dropped/closed (check `dropped`)."""
        while not (self.dropped or self.closed):
            item = self.get_nowait()
            if item is not None:
                return item
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                return None
        return None

    def close(self) -> None:
        self.closed = True
        self._wake.set()
        self._hub._remove(self)


class EventHub:
    """Topic-based pub/sub with bounded subscribers. Topics used: "calls" (a call started, ended, the 4 Hz
    snapshot of every call) and one per call id (its transcript records as they are written)."""

    def __init__(self, maxlen: int = 512) -> None:
        self.maxlen = maxlen
        self._subs: list[Subscription] = []
        self.published = 0
        self.dropped = 0           # subscribers dropped for falling behind
        self.on_first_subscriber: Callable[[], None] | None = None

    def subscribe(self, *topics: str, maxlen: int | None = None) -> Subscription:
        sub = Subscription(self, frozenset(topics or (ALL,)), maxlen or self.maxlen)
        self._subs.append(sub)
        if len(self._subs) == 1 and self.on_first_subscriber is not None:
            self.on_first_subscriber()
        return sub

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def wants(self, topic: str) -> bool:
        return any(topic in s.topics or ALL in s.topics for s in self._subs)

    def publish(self, topic: str, event: dict[str, Any]) -> None:
        """Hand `event` to every subscriber of `topic`; never blocks. The event is shared, not copied:
        publishers give a fresh dict and nobody mutates it afterwards."""
        if not self._subs:
            return
        self.published += 1
        for sub in list(self._subs):
            if (topic in sub.topics or ALL in sub.topics) and not sub._offer(topic, event):
                self.dropped += 1
                sub._drop()
                self._remove(sub)

    def _remove(self, sub: Subscription) -> None:
        try:
            self._subs.remove(sub)
        except ValueError:
            pass


def call_listener(hub: EventHub, call_id: str) -> Callable[[dict[str, Any]], None]:
    """A call's transcript listener: each record to the call's topic; its start and end also to "calls"."""
    def publish(rec: dict[str, Any]) -> None:
        hub.publish(call_id, rec)
        if rec["event"] in ("call_start", "call_end"):
            hub.publish("calls", {"type": rec["event"], "id": call_id})
    return publish
