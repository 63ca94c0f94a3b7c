"""The process's 20 ms send clock (`FrameClock`), shared by every call's media transport.

One timer wake-up per 20 ms for all calls instead of one per call, and each call's packet leaves at the same
place in every tick, so its send interval stays steady however many calls share the loop. With
VOICEAI_APPEND_MS above 20 the same tick also reads each call's RTP socket (`RtpMedia`, read_per_tick).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable

from .playout import PacingClock

log = logging.getLogger("voiceai.media")

TICK_LATE_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05)   # s; how late the shared tick ran, for /metrics


class FrameClock:
    """The process's 20 ms send clock: one `loop.call_at` timer that ticks every member in turn.

    Members are called as ``member(frames_due, now)`` in the order they joined, so a call's packets leave
    at the same offset in every tick. The schedule is a `PacingClock` (absolute deadlines, re-anchored
    after a stall). The clock runs only while it has members. One member raising is counted, logged once
    and removed; the others keep their clock.
    """

    _shared: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FrameClock]" = weakref.WeakKeyDictionary()

    def __init__(self, period: float = 0.020) -> None:
        self._loop = asyncio.get_running_loop()
        self.pacing = PacingClock(period)
        self._members: dict[Callable[[int, float], None], None] = {}   # an ordered set
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self.ticks = 0
        self.member_errors = 0
        # how late each tick ran against its deadline: counts per TICK_LATE_BUCKETS bin (+ one overflow bin)
        self.late_bins = [0] * (len(TICK_LATE_BUCKETS) + 1)
        self.late_sum = 0.0

    @classmethod
    def shared(cls) -> FrameClock:
        """The running loop's clock (created on first use)."""
        loop = asyncio.get_running_loop()
        clock = cls._shared.get(loop)
        if clock is None:
            clock = cls._shared[loop] = cls()
        return clock

    def join(self, member: Callable[[int, float], None]) -> None:
        """Tick ``member`` from the next deadline on (the clock starts now if it was idle)."""
        self._members[member] = None   # a bound method: equal (and hashed) by its object and function
        if self._timer is None:
            self.pacing.start(self._loop.time())
            self._deadline = self.pacing.next_deadline()
            self._timer = self._loop.call_at(self._deadline, self._tick)

    def leave(self, member: Callable[[int, float], None]) -> None:
        self._members.pop(member, None)
        if not self._members and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def members(self) -> int:
        return len(self._members)

    def until_next(self) -> float:
        """Seconds until the next tick (0 when idle)."""
        if self._timer is None:
            return 0.0
        return max(0.0, self.pacing.next_deadline() - self._loop.time())

    def poll(self) -> None:
        """Run a tick now if one is due: called from I/O callbacks, so a tick does not wait behind every
        other callback of a busy loop iteration (asyncio runs due timers after the iteration's I/O)."""
        if self._timer is not None and self._loop.time() >= self._deadline:
            self._timer.cancel()
            self._tick()

    def _tick(self) -> None:
        # the timer for this deadline fired (or poll() found it due): uvloop's timers (libuv, whole ms) fire up
        # to a millisecond early, which would make an empty tick and a second wake-up for the same frame
        now = max(self._loop.time(), self._deadline)
        late = now - self._deadline
        due = self.pacing.due(now)
        self.ticks += 1
        if late > 0:
            self.late_sum += late
            i = 0
            for edge in TICK_LATE_BUCKETS:   # five comparisons once per 20 ms for the whole process
                if late <= edge:
                    break
                i += 1
            self.late_bins[i] += 1
        else:
            self.late_bins[0] += 1
        for member in list(self._members):   # members may leave during the tick
            try:
                member(due, now)
            except Exception:
                self.member_errors += 1
                self._members.pop(member, None)
                log.exception("! media clock member failed and was removed")
        if self._members:
            self._deadline = self.pacing.next_deadline()
            self._timer = self._loop.call_at(self._deadline, self._tick)
        else:
            self._timer = None
