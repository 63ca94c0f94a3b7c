"""The bot's audio as the caller hears it over chan_websocket (media/mediaws.py `on_played`), against the model
of the channel's queue: audio handed over faster than real time is given back when Asterisk's 20 ms timer
plays it, stamped with that time; what a barge-in flushed is never given; and it comes in runs, not per frame."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from voiceai_ari.fakes.chan_websocket import ChanWebsocketQueue
from voiceai_ari.media.mediaws import MediaSocketCore

from tests.test_mediaws import FB, audio

TICK = 0.020


class Heard:
    """A core with an `on_played` listener and the channel model; `tick` runs the channel's timer and,
    every `every` ticks, the adapter's coarse clock (`deliver`)."""

    def __init__(self, every: int = 5) -> None:
        self.core = MediaSocketCore(FB)
        self.ast = ChanWebsocketQueue(FB)
        self.got: list[tuple[bytes, float]] = []
        self.core.on_played = lambda pcm, t: self.got.append((bytes(pcm), t))
        self.t, self.every, self.ticks, self.samples = 100.0, every, 0, 0
        self.played_at: list[float] = []          # when the channel took each frame it played

    def send(self) -> None:
        for msg in self.core.out:
            self.ast.send(msg)
        self.core.out.clear()

    def push(self, seconds: float, item: str = "item1") -> None:
        n = int(seconds * 24000)
        self.core.push(audio(n, self.samples), item)
        self.samples += n
        self.send()

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.t += TICK
            self.ticks += 1
            if self.ast.tick() is not None:
                self.played_at.append(self.t)
            events, self.ast.events = self.ast.events, []
            for ev in events:
                self.core.on_text(ev, self.t)
            self.send()
            if self.ticks % self.every == 0:
                self.core.deliver(self.t)
            # never ahead of the caller: nothing is given before the channel played it
            assert self.frames_given() <= len(self.ast.played)

    def frames_given(self) -> int:
        return sum(len(pcm) for pcm, _ in self.got) // FB

    def given_frames(self) -> list[tuple[bytes, float]]:
        """(frame, time it was taken) for each frame given, from the runs and their last frame's time."""
        out = []
        for pcm, t in self.got:
            n = len(pcm) // FB
            out += [(pcm[k * FB:(k + 1) * FB], t - (n - 1 - k) * TICK) for k in range(n)]
        return out


def assert_given_as_played(h: Heard) -> None:
    frames = h.given_frames()
    assert [f for f, _ in frames] == h.ast.played, "given: exactly the frames the channel played, in order"
    late = [abs(t - at) for (_, t), at in zip(frames, h.played_at)]
    assert max(late, default=0) < 1e-6, f"stamped with the time each frame was played (off by {max(late) * 1000:.1f} ms)"


def test_audio_handed_over_at_once_is_given_as_it_is_played() -> None:
    h = Heard()
    h.push(3.0)                                   # a model streaming faster than real time: 3 s at once
    assert h.core.frames_sent >= 50 and h.got == [], "handed over is not heard"
    h.tick(50)                                    # 1 s later: 1 s heard, at most one clock tick behind
    assert 45 <= h.frames_given() <= 50
    h.tick(120)
    assert h.frames_given() == 150
    assert_given_as_played(h)
    # the times span 3 s of play, not the instant of the hand-over
    assert h.got[-1][1] - h.given_frames()[0][1] == pytest.approx(2.98)


def test_a_pause_between_items_stays_a_pause() -> None:
    h = Heard()
    h.push(0.5, "a")
    h.core.end_item()
    h.send()
    h.tick(70)                                    # 0.5 s played, then 0.9 s of nothing
    h.push(0.4, "b")
    h.core.end_item()
    h.send()
    h.tick(40)
    assert h.frames_given() == 45
    assert_given_as_played(h)
    frames = h.given_frames()
    assert frames[25][1] - frames[24][1] == pytest.approx(0.900 + TICK), "b began 0.9 s after a ended"


@pytest.mark.parametrize("cut_after", [1, 7, 33, 61])
def test_audio_flushed_by_a_barge_in_is_never_given(cut_after: int) -> None:
    h = Heard()
    h.push(4.0)
    h.tick(cut_after)
    h.core.interrupt(h.t)                         # FLUSH_MEDIA: the rest of the 4 s is never played
    h.send()
    h.tick(100)
    assert len(h.ast.played) == cut_after
    assert h.frames_given() == cut_after, "only what the caller heard before the cut"
    assert_given_as_played(h)
    h.push(0.5, "next")                           # the next answer is given as it plays
    h.core.end_item()
    h.send()
    h.tick(40)
    assert h.frames_given() == cut_after + 25
    assert_given_as_played(h)


def test_runs_not_frames_one_call_per_clock_tick_or_message() -> None:
    """No allocation storm on the loop: a 10 s answer is given in about one slice per 100 ms tick (and one
    more where a 1 s message ends), each a view of what was sent (no copy)."""
    h = Heard(every=5)
    calls = []
    h.core.on_played = lambda pcm, t: calls.append(pcm)
    h.push(10.0)
    h.tick(520)
    frames = sum(len(pcm) for pcm in calls) // FB
    assert frames == 500
    assert len(calls) <= 520 // 5 + 10 + 1, len(calls)
    assert all(isinstance(pcm, memoryview) for pcm in calls)


def test_without_a_listener_nothing_is_kept() -> None:
    core = MediaSocketCore(FB)
    core.push(audio(24000 * 5), "item1")
    assert core.frames_sent > 0 and not core._unheard


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3000), st.integers(0, 12), st.booleans()), min_size=1, max_size=40),
       st.integers(1, 9), st.one_of(st.none(), st.integers(0, 200)))
def test_whatever_the_deltas_what_is_given_is_what_was_played_when_it_was(deltas, every: int, cut_at) -> None:
    """Deltas of any size with pauses between them, items ending or not, a barge-in at any tick: what is
    given is exactly what the channel played, each frame stamped with its play time."""
    h = Heard(every=every)
    item = 0
    for n, ticks, ends in deltas:
        h.push(n / 24000, f"item{item}")
        if ends:
            h.core.end_item()
            h.send()
            item += 1
        for _ in range(ticks):
            h.tick()
            if cut_at is not None and h.ticks == cut_at:
                h.core.interrupt(h.t)
                h.send()
                item += 1
    h.tick(800)
    assert_given_as_played(h)
