"""playout.py: exact 20 ms frames from uneven model audio, barge-in accounting, the pacing schedule."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voiceai_ari.media.playout import PacingClock, Playout

RATE = 24000
FRAME = 960  # 20 ms of PCM16 at 24 kHz


def audio(ms: int, seed: int = 0) -> bytes:
    """Recognisable PCM16 LE: ``ms`` milliseconds of pseudo-random bytes."""
    return random.Random(seed).randbytes(ms * RATE // 1000 * 2)


def drain(p: Playout) -> list[tuple[bytes, bool]]:
    out = []
    while (item := p.pop()) is not None:
        out.append(item)
    return out


class TestFraming:
    def test_uneven_chunks_in_exact_frames_out(self) -> None:
        pcm = audio(1010)
        p = Playout(RATE)
        rng = random.Random(1)
        pos = 0
        while pos < len(pcm):
            n = rng.choice([1, 3, 17, 480, 961, 4800, 9999])
            p.push(pcm[pos : pos + n], "item_A")
            pos += n
        p.end_item()
        frames = drain(p)
        assert all(len(f) == FRAME for f, _ in frames)
        assert len(frames) == 51  # 1010 ms -> 50.5 frames, the last padded
        assert b"".join(f for f, _ in frames) == pcm + bytes(480)
        assert p.frames_out == 51

    @given(st.lists(st.binary(max_size=3000), max_size=20))
    def test_total_audio_is_preserved(self, chunks: list[bytes]) -> None:
        p = Playout(RATE)
        for c in chunks:
            p.push(c, "x")
        p.end_item()
        data = b"".join(chunks)
        out = b"".join(f for f, _ in drain(p))
        assert out[: len(data)] == data
        assert set(out[len(data) :]) <= {0}
        assert len(out) % FRAME == 0 and len(out) - len(data) < FRAME
        assert p.queued_ms == 0

    def test_odd_byte_waits_for_the_next_push(self) -> None:
        p = Playout(8000)  # 320 B frames
        p.push(b"\x01" * 319, "a")
        assert p.queued_ms == 19  # 159 whole samples
        p.push(b"\x01", "a")
        assert p.pop() == (b"\x01" * 320, True)

    def test_odd_byte_at_end_of_item_becomes_a_sample(self) -> None:
        p = Playout(8000)
        p.push(b"\x07", "a")
        p.end_item()
        assert p.pop() == (b"\x07" + bytes(319), True)

    def test_no_partial_frame_before_end_item(self) -> None:
        p = Playout(RATE)
        p.push(bytes(FRAME - 2), "a")
        assert p.pop() is None
        p.end_item()
        assert p.pop() == (bytes(FRAME), True)

    def test_a_long_response_pushed_at_once(self) -> None:
        pcm = audio(60_000)
        p = Playout(RATE)
        p.push(pcm, "long")
        p.end_item()
        assert p.queued_ms == 60_000
        frames = drain(p)
        assert len(frames) == 3000 and b"".join(f for f, _ in frames) == pcm

    def test_rate_must_give_whole_frames(self) -> None:
        assert Playout(16000).frame_bytes == 640
        with pytest.raises(ValueError):
            Playout(22050 + 1)


class TestTalkspurts:
    def test_marker_on_first_frame_after_empty(self) -> None:
        p = Playout(RATE)
        p.push(audio(60), "a")
        assert [s for _, s in drain(p)] == [True, False, False]
        p.push(audio(40), "a")
        assert [s for _, s in drain(p)] == [True, False]

    def test_continuous_audio_keeps_one_talkspurt(self) -> None:
        p = Playout(RATE)
        p.push(audio(20), "a")
        assert p.pop()[1] is True  # type: ignore[index]
        p.push(audio(20), "a")  # arrives before the next tick: no gap
        assert p.pop()[1] is False  # type: ignore[index]

    def test_next_item_after_drained_item_starts_a_talkspurt(self) -> None:
        p = Playout(RATE)
        p.push(audio(40), "a")
        p.end_item()
        p.pop()
        p.pop()
        p.push(audio(20), "b")
        assert p.pop()[1] is True  # type: ignore[index]

    def test_after_clear(self) -> None:
        p = Playout(RATE)
        p.push(audio(100), "a")
        p.pop()
        p.clear()
        p.push(audio(20), "b")
        assert p.pop()[1] is True  # type: ignore[index]


class TestBargeIn:
    def test_clear_returns_ms_played_and_empties(self) -> None:
        p = Playout(RATE)
        p.push(audio(1000), "item_A")
        for _ in range(10):
            p.pop()
        assert p.clear() == ("item_A", 200)
        assert p.queued_ms == 0 and p.pop() is None
        assert p.played_ms("item_A") == 200

    def test_clear_drops_partial_and_odd_bytes(self) -> None:
        p = Playout(RATE)
        p.push(b"\xff" * 101, "a")
        p.clear()
        p.push(b"\x01" * FRAME, "b")
        assert p.pop() == (b"\x01" * FRAME, True)

    def test_played_ms_per_item_across_two_items(self) -> None:
        p = Playout(RATE)
        p.push(audio(110), "A")
        p.end_item()  # padded to 120 ms; the padding is not A's audio
        p.push(audio(50), "B")
        p.end_item()
        drain(p)
        assert (p.played_ms("A"), p.played_ms("B"), p.played_ms("never")) == (110, 50, 0)

    def test_clear_mid_second_item(self) -> None:
        p = Playout(RATE)
        p.push(audio(40), "A")
        p.end_item()
        p.push(audio(500), "B")
        for _ in range(5):
            p.pop()
        assert p.clear() == ("B", 60)
        assert p.played_ms("A") == 40

    def test_clear_when_next_item_not_started(self) -> None:
        p = Playout(RATE)
        p.push(audio(40), "A")
        p.end_item()
        drain(p)
        p.push(audio(40), "B")
        assert p.clear() == ("B", 0)

    def test_clear_after_everything_played_names_the_last_item(self) -> None:
        p = Playout(RATE)
        assert p.clear() == (None, 0)
        p.push(audio(40), "A")
        drain(p)
        assert p.clear() == ("A", 40)

    def test_untagged_audio_does_not_hide_the_item(self) -> None:
        p = Playout(RATE)
        p.push(audio(100), "A")
        p.push(audio(2), None)  # e.g. the resampler's flushed tail, pushed without an id
        p.end_item()
        for _ in range(5):
            p.pop()
        assert p.clear() == ("A", 100)

    def test_frame_spanning_two_items_is_split_between_them(self) -> None:
        p = Playout(RATE)
        p.push(audio(10), "A")  # no end_item: B follows directly
        p.push(audio(30), "B")
        p.pop()
        assert (p.played_ms("A"), p.played_ms("B")) == (10, 10)
        assert p.clear() == ("B", 10)


class TestUnderruns:
    def test_underrun_only_mid_item(self) -> None:
        p = Playout(RATE)
        assert p.pop() is None
        assert p.underruns == 0  # idle, not starving
        p.push(audio(30), "a")
        assert p.pop() is not None
        assert p.pop() is None  # 10 ms partial left, item still streaming
        assert p.pop() is None
        assert p.underruns == 2  # one per missed 20 ms slot
        p.end_item()
        assert p.pop() is not None
        assert p.pop() is None
        assert (p.underruns, p.frames_out) == (2, 2)

    def test_clear_ends_the_item(self) -> None:
        p = Playout(RATE)
        p.push(audio(20), "a")
        p.clear()
        assert p.pop() is None and p.underruns == 0

    def test_queued_ms(self) -> None:
        p = Playout(RATE)
        p.push(audio(75), "a")
        assert p.queued_ms == 75
        p.pop()
        assert p.queued_ms == 55
        p.end_item()
        assert p.queued_ms == 60


class TestPacingClock:
    def test_ten_minutes_of_jittery_wakeups_never_drift(self) -> None:
        rng = random.Random(7)
        start = 12345.678901
        clock = PacingClock()
        clock.start(start)
        end = start + 600.0
        k = total = 0
        last_now = start
        while True:
            target = clock.next_deadline()
            assert abs(target - (start + k * 0.02)) < 1e-9
            now = target + rng.uniform(-0.003, 0.003)  # the loop wakes up early or late
            if now > end:
                break
            n = clock.due(now)
            assert n in (0, 1)  # 3 ms jitter never makes two frames due
            k += n
            total += n
            last_now = now
        assert total == int((last_now - start) / 0.02 + 1e-9) + 1
        assert total in (30_000, 30_001)
        assert clock.reanchors == 0

    def test_late_by_more_than_a_period_catches_up_without_drift(self) -> None:
        rng = random.Random(3)
        clock = PacingClock()
        clock.start(0.0)
        total, now = 0, 0.0
        for _ in range(5000):
            now = max(now, clock.next_deadline() + rng.uniform(0, 0.09))
            total += clock.due(now)
        assert total == int(now / 0.02 + 1e-9) + 1
        assert clock.reanchors == 0

    def test_burst_after_a_short_delay(self) -> None:
        clock = PacingClock()
        clock.start(10.0)
        assert clock.due(9.999) == 0
        assert clock.due(10.0) == 1
        assert clock.due(10.065) == 3  # frames due at 10.02, 10.04, 10.06
        assert clock.next_deadline() == pytest.approx(10.08)
        assert clock.due(10.07) == 0

    def test_reanchor_after_a_stall(self) -> None:
        clock = PacingClock()
        clock.start(0.0)
        assert clock.due(0.0) == 1
        assert clock.due(0.02) == 1
        assert clock.due(0.54) == 1  # 500 ms stall: no burst of 25 frames
        assert clock.reanchors == 1
        assert clock.next_deadline() == pytest.approx(0.56)
        assert clock.due(0.559) == 0
        assert clock.due(0.561) == 1

    def test_needs_start(self) -> None:
        clock = PacingClock()
        with pytest.raises(RuntimeError):
            clock.due(0.0)
        with pytest.raises(RuntimeError):
            clock.next_deadline()
