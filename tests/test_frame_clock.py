"""media.FrameClock: one 20 ms timer for every call of the process (real event loop, loop.time())."""

import asyncio

from voiceai_ari.media.transport import FrameClock


class Member:
    def __init__(self, name: str, log: list, fail: bool = False) -> None:
        self.name, self.log, self.fail, self.frames, self.dues = name, log, fail, 0, []

    def tick(self, due: int, now: float) -> None:
        self.log.append((self.name, now))
        self.frames += due
        self.dues.append(due)
        if self.fail:
            raise RuntimeError("boom")


async def test_members_tick_in_join_order_on_one_20ms_schedule():
    clock, log = FrameClock(), []
    a, b, c = Member("a", log), Member("b", log), Member("c", log)
    for m in (a, b, c):
        clock.join(m.tick)
    t0 = asyncio.get_running_loop().time()
    await asyncio.sleep(0.5)
    for m in (a, b, c):
        clock.leave(m.tick)
    names = [n for n, _ in log]
    assert names[:9] == ["a", "b", "c"] * 3                       # the same order in every tick
    ticks = sorted({t for _, t in log})
    assert 20 <= len(ticks) <= 27 and clock.ticks == len(ticks)
    # frames handed out follow the absolute schedule (anchor + k * 20 ms), whatever the wake-ups did
    assert abs(a.frames - (ticks[-1] - t0) / 0.020) <= 2
    assert a.frames == b.frames == c.frames
    assert clock.members == 0 and clock.until_next() == 0.0       # idle: no timer left armed


async def test_a_failing_member_is_removed_and_the_others_keep_their_clock():
    clock, log = FrameClock(), []
    good, bad = Member("good", log), Member("bad", log, fail=True)
    clock.join(bad.tick)
    clock.join(good.tick)
    await asyncio.sleep(0.2)
    assert clock.member_errors == 1 and [n for n, _ in log].count("bad") == 1
    assert good.frames >= 5 and clock.members == 1
    clock.leave(good.tick)


async def test_shared_clock_is_one_per_loop_and_leaving_twice_is_harmless():
    assert FrameClock.shared() is FrameClock.shared()
    clock, log = FrameClock(), []
    m = Member("m", log)
    clock.join(m.tick)
    clock.join(m.tick)          # joining again does not double its ticks
    await asyncio.sleep(0.1)
    clock.leave(m.tick)
    clock.leave(m.tick)
    n = len(log)
    assert n == len({t for _, t in log})
    await asyncio.sleep(0.06)
    assert len(log) == n        # left: no more ticks


async def test_poll_runs_a_due_tick_from_an_io_callback_and_the_timer_does_not_tick_again():
    """A busy loop iteration: the deadline passes while other callbacks run. poll() (called from each RTP
    datagram) ticks at once instead of after the rest of the iteration, and each deadline is handed out once."""
    import time

    clock, log = FrameClock(), []
    m = Member("m", log)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    clock.join(m.tick)
    await asyncio.sleep(0.05)
    polled = []

    def busy_callback():
        time.sleep(0.045)                       # the loop is stuck past the next two deadlines
        n = len(log)
        clock.poll()                            # what RtpMedia.datagram_received does first
        clock.poll()                            # not due any more: no second tick
        polled.append((n, len(log), loop.time()))

    loop.call_soon(busy_callback)
    await asyncio.sleep(0.1)
    clock.leave(m.tick)
    n_before, n_after, t_poll = polled[0]
    assert n_after == n_before + 1              # the poll ticked, once
    assert any(t_poll - 0.001 <= t <= t_poll for _, t in log)   # ... right there, inside the callback
    # the stall shows in the lateness bins /metrics exports (the first missed deadline is 25-45 ms old at the
    # poll: the 20-50 ms bin), and every tick is binned once
    assert sum(clock.late_bins) == clock.ticks and clock.late_bins[4] >= 1, clock.late_bins
    # every deadline from the join on was handed out exactly once, and no tick came with nothing due (the
    # timer the poll replaced was cancelled: a stray tick would also feed the model extra uplink silence)
    assert 0 not in m.dues, m.dues
    last = max(t for _, t in log)
    assert m.frames == int((last - t0) / 0.020 + 1e-6) + 1, (m.frames, last - t0)


async def test_a_timer_that_fires_a_little_early_still_hands_out_its_frame():
    """uvloop's timers (libuv, whole milliseconds) fire up to a millisecond before the deadline: that tick
    is the deadline's, not an empty one followed by a second wake-up for the same frame."""
    clock, log = FrameClock(), []
    m = Member("a", log)
    clock.join(m.tick)
    await asyncio.sleep(0.005)
    assert clock.until_next() > 0.005          # the next deadline is still ahead
    frames, ticks = m.frames, clock.ticks
    clock._timer.cancel()
    clock._tick()                              # what an early timer does
    assert m.frames == frames + 1 and clock.ticks == ticks + 1
    clock.leave(m.tick)
