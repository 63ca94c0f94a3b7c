"""chan_websocket's control side (media/mediaws.py) against a model of the channel's queue
(fakes/chan_websocket.py): what the bot sends is played whole and in order, the window keeps the queue
below XOFF, barge-in flushes at once and reports what the caller heard, marks say when all was heard."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings, strategies as st

from voiceai_ari.fakes.chan_websocket import ChanWebsocketQueue
from voiceai_ari.media.mediaws import (MAX_FRAME_PAYLOAD, XOFF_LEVEL, BadMessage, MediaSocketCore, command, parse_event)

FB = 960          # slin24: 20 ms
RATE = 24000


def audio(n_samples: int, start: int = 0) -> bytes:
    """Item audio whose samples count up from 1: played frames tell where in the item they came from."""
    return struct.pack(f"<{n_samples}h", *(((start + i) % 30000) + 1 for i in range(n_samples)))


class Line:
    """The core and the channel, with Asterisk's events delivered back at each 20 ms tick."""

    def __init__(self, use_json: bool = True, **kw: int) -> None:
        self.core = MediaSocketCore(FB, use_json=use_json, **kw)
        self.ast = ChanWebsocketQueue(FB, use_json=use_json)
        self.ast.messages = []
        self.t = 0.0
        self.sent_samples = 0

    def flush(self) -> None:
        for msg in self.core.out:
            self.ast.send(msg)
            if isinstance(msg, bytes):
                self.ast.messages.append(msg)
        self.core.out.clear()

    def push(self, n_samples: int, item: str = "item1") -> None:
        self.core.push(audio(n_samples, self.sent_samples), item)
        self.sent_samples += n_samples
        self.flush()

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.t += 0.020
            self.ast.tick()
            events, self.ast.events = self.ast.events, []
            for ev in events:
                self.core.on_text(ev, self.t)
            self.flush()

    def heard_samples(self) -> int:
        """Item samples (non-zero) the caller actually got."""
        n = 0
        for f in self.ast.played:
            n += sum(1 for (s,) in struct.iter_unpack("<h", f) if s != 0)
        return n


# --- control messages ------------------------------------------------------------------------------------
def test_parses_json_and_plain_events() -> None:
    assert parse_event('{"event":"MEDIA_XOFF","channel_id":"1.2"}') == ("MEDIA_XOFF", {"event": "MEDIA_XOFF",
                                                                                       "channel_id": "1.2"})
    assert parse_event("MEDIA_XON") == ("MEDIA_XON", {})
    name, f = parse_event("MEDIA_START connection_id:abc channel:WebSocket/INCOMING/0x7f00 channel_id:1.5 "
                          "format:slin24 optimal_frame_size:960 ptime:20")
    assert name == "MEDIA_START" and f["channel"] == "WebSocket/INCOMING/0x7f00" and f["optimal_frame_size"] == "960"
    assert parse_event("MEDIA_MARK_PROCESSED 17") == ("MEDIA_MARK_PROCESSED", {"correlation_id": "17"})
    assert parse_event("DTMF_END digit:5 channel_id:1.5")[1]["digit"] == "5"
    assert parse_event("ERROR channel_id:1.5 error_text:FLUSH_MEDIA not supported in passthrough mode")[1][
        "error_text"] == "FLUSH_MEDIA not supported in passthrough mode"


@pytest.mark.parametrize("bad", ["", "   ", "{", '{"no_event": 1}', "[1,2]", '{"event": 5}', "-- nope"])
def test_unreadable_events_are_refused_clearly(bad: str) -> None:
    with pytest.raises(BadMessage):
        parse_event(bad)


@given(st.text(max_size=200))
def test_any_text_parses_or_is_refused(text: str) -> None:
    try:
        name, fields = parse_event(text)
    except BadMessage:
        return
    assert name and isinstance(fields, dict)


@pytest.mark.parametrize("use_json", [True, False])
def test_the_marks_the_core_sends_are_what_command_builds(use_json: bool) -> None:
    core = MediaSocketCore(FB, use_json=use_json)
    core.push(audio(RATE), "a")
    marks = [m for m in core.out if isinstance(m, str)]
    assert marks == [command("MARK_MEDIA", use_json, str(i)) for i in range(1, len(marks) + 1)]


def test_commands_in_both_formats_and_the_128_byte_limit() -> None:
    assert json.loads(command("MARK_MEDIA", True, "42")) == {"command": "MARK_MEDIA", "correlation_id": "42"}
    assert command("MARK_MEDIA", False, "42") == "MARK_MEDIA 42"
    assert command("FLUSH_MEDIA", False) == "FLUSH_MEDIA"
    with pytest.raises(ValueError):
        command("MARK_MEDIA", True, "x" * 120)


# --- outbound ---------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 9000), min_size=1, max_size=40), st.booleans())
def test_everything_pushed_is_played_whole_and_in_order(deltas: list[int], use_json: bool) -> None:
    line = Line(use_json=use_json)
    for n in deltas:
        line.push(n)
    line.core.end_item()
    line.flush()
    ticks = 0
    while not line.core.all_heard:
        line.tick()
        ticks += 1
        assert ticks < 10_000
    assert line.ast.dropped_bytes == 0                     # only whole frames were ever sent
    played = b"".join(line.ast.played)
    total = sum(deltas)
    assert played[:total * 2] == audio(total)              # in order, nothing lost
    assert not any(played[total * 2:])                     # then only the padding of the last frame
    assert line.ast.max_frames <= line.core.window < XOFF_LEVEL
    assert max(len(m) for m in line.ast.messages) <= MAX_FRAME_PAYLOAD   # Asterisk closes with 1009 beyond
    assert not line.core.busy(line.t)


@pytest.mark.parametrize("frame_bytes", [640, 960, 1920])
def test_no_binary_message_exceeds_asterisks_websocket_buffer(frame_bytes: int) -> None:
    core = MediaSocketCore(frame_bytes, chunk_frames=400)
    core.push(bytes(frame_bytes * 400), "a")
    sizes = [len(m) for m in core.out if isinstance(m, bytes)]
    assert sum(sizes) == frame_bytes * 400 and max(sizes) <= MAX_FRAME_PAYLOAD
    assert all(n % frame_bytes == 0 for n in sizes)


def test_a_long_answer_waits_in_the_window_instead_of_filling_asterisks_queue() -> None:
    line = Line()
    line.push(RATE * 60)                                   # a minute of audio at once
    assert line.ast.queued_frames == line.core.window      # 10 s at Asterisk, the rest here
    line.tick(1500)
    assert line.ast.max_frames <= line.core.window and line.core.xoffs == 0
    assert line.ast.dropped_bytes == 0
    assert sum(len(f) for f in line.ast.played) == 1500 * FB


def test_xoff_stops_sending_and_xon_resumes() -> None:
    core = MediaSocketCore(FB)
    core.on_text('{"event":"MEDIA_XOFF"}', 0.0)
    core.push(audio(RATE), "a")
    assert not any(isinstance(m, bytes) for m in core.out)
    core.on_text('{"event":"MEDIA_XON"}', 0.1)
    assert sum(len(m) for m in core.out if isinstance(m, bytes)) == RATE * 2


def test_marks_say_when_the_last_words_were_heard() -> None:
    line = Line()
    line.push(RATE // 2)                                   # 500 ms
    line.core.end_item()
    line.flush()
    line.tick(20)
    assert not line.core.all_heard                         # 400 ms played
    line.tick(6)
    assert line.core.all_heard and line.heard_samples() == RATE // 2


# --- barge-in ---------------------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(100, 6000), min_size=1, max_size=20), st.integers(0, 300), st.booleans())
def test_barge_in_flushes_at_once_and_reports_what_was_heard(deltas: list[int], ticks: int,
                                                             use_json: bool) -> None:
    line = Line(use_json=use_json)
    for n in deltas:
        line.push(n)
        line.tick(2)
    line.tick(ticks)
    item, heard_ms = line.core.interrupt(line.t)
    line.flush()
    truth_ms = line.heard_samples() * 1000 // RATE
    assert item == "item1"
    assert abs(heard_ms - truth_ms) <= 20                  # within a frame of what the caller got
    before = len(line.ast.played)
    line.push(4800)                                        # the model's late deltas of the cut item
    line.tick(5)
    assert len(line.ast.played) == before                  # silence from the next tick on
    assert not line.core.busy(line.t)


def test_barge_in_before_anything_was_heard_truncates_at_zero() -> None:
    line = Line()
    line.push(RATE)
    assert line.core.interrupt(0.0) == ("item1", 0)
    assert line.core.out and "FLUSH_MEDIA" in line.core.out[-1]


def test_the_next_item_plays_after_a_barge_in() -> None:
    line = Line()
    line.push(RATE, "a")
    line.tick(10)
    line.core.interrupt(line.t)
    line.flush()
    line.push(RATE // 10, "b")
    line.core.end_item()
    line.flush()
    line.tick(10)
    assert line.core.all_heard
    item, heard = line.core.interrupt(line.t)
    assert (item, heard) == ("b", 100)


def test_marks_of_flushed_audio_coming_back_late_are_ignored() -> None:
    core = MediaSocketCore(FB, use_json=False)
    core.push(audio(RATE), "a")
    core.interrupt(0.1)
    core.on_text("MEDIA_MARK_PROCESSED 1", 0.2)            # was in flight when FLUSH_MEDIA went out
    assert core.all_heard and not core.busy(0.3)


def test_media_start_sets_the_frame_size_before_any_audio() -> None:
    core = MediaSocketCore(640)
    core.on_text("MEDIA_START connection_id:x channel:WebSocket/INCOMING/0x1 channel_id:1 format:slin16 "
                 "optimal_frame_size:960 ptime:20", 0.0)
    assert core.frame_bytes == 960
