"""Transcripts: private file modes, no disk I/O on the event loop, every line on disk after close and at exit."""

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from voiceai_ari.call.transcript import CallLog


async def finish(log: CallLog) -> None:
    aclose = getattr(log, "aclose", None)
    if aclose is not None:
        await aclose()
    else:
        log.close()


@pytest.fixture
def umask0():
    old = os.umask(0)   # the modes must not depend on the process umask
    yield
    os.umask(old)


async def test_folder_0700_and_file_0600_whatever_the_umask(tmp_path, umask0):
    folder = tmp_path / "data" / "transcripts"
    log = CallLog(str(folder), "PJSIP/caller-0001")
    log.write("call_start", caller_number="+15551234567")
    await finish(log)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    [path] = folder.iterdir()
    assert path.name.endswith("-PJSIP_caller-0001.jsonl")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["caller_number"] == "+15551234567"


async def test_an_existing_folder_keeps_its_mode_and_files_are_still_0600(tmp_path, umask0):
    """A folder the operator made (maybe shared) is not re-moded; the file in it is private anyway."""
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    log = CallLog(str(folder), "c1")
    log.write("call_start")
    await finish(log)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    [path] = folder.iterdir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_stuck_disk_does_not_stop_the_event_loop(tmp_path):
    """The transcript file is a FIFO nobody reads for 1 s: opening it blocks until a reader comes. The loop
    must keep ticking meanwhile (every call's 20 ms clock runs on it), and every line arrives afterwards."""
    folder = tmp_path / "calls"
    folder.mkdir()
    now = datetime.now(timezone.utc)
    for k in range(-1, 5):   # the file name starts with the UTC second the call log is made in
        os.mkfifo(folder / ((now + timedelta(seconds=k)).strftime("%Y%m%dT%H%M%SZ") + "-chan-1.jsonl"))
    got: list[bytes] = []
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            t = time.monotonic()
            gaps.append(t - last)
            last = t

    while datetime.now(timezone.utc).microsecond > 300_000:   # early in a second: the name is predictable
        await asyncio.sleep(0.005)
    path = folder / (datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-chan-1.jsonl")
    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.03)
    t0 = time.monotonic()

    def reader() -> None:
        time.sleep(1.0)
        with open(path, "rb") as f:   # unblocks the writer; EOF once it closes the file
            got.append(f.read())

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    log = CallLog(str(folder), "chan-1")
    assert log.path == path
    for n in range(200):
        log.write("caller", text=f"line {n}")
        await asyncio.sleep(0)
    log.write("call_end", reason="caller hung up")
    await asyncio.wait_for(finish(log), 10)
    closed_after = time.monotonic() - t0
    tick.cancel()
    th.join(5)
    assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f} s on the transcript"
    assert closed_after >= 0.9   # aclose waited until the lines were really written
    lines = [json.loads(x) for x in got[0].decode().splitlines()]
    assert [x["text"] for x in lines[:-1]] == [f"line {n}" for n in range(200)]
    assert lines[-1]["event"] == "call_end"


async def test_every_line_is_on_disk_when_aclose_returns(tmp_path):
    logs = [CallLog(str(tmp_path), f"chan-{k}") for k in range(3)]
    for n in range(3000):
        logs[n % 3].write("bot", text=f"{n}", usage={"audio_out": n})
    for k, log in enumerate(logs):
        log.write("call_end", reason="done")
        await log.aclose()
        lines = [json.loads(x) for x in log.path.read_text().splitlines()]
        assert [int(x["text"]) for x in lines[:-1]] == list(range(k, 3000, 3))
        assert lines[-1]["event"] == "call_end"
        assert len(log.recent) == 200 and log.recent[-1]["event"] == "call_end"   # the control API's view


async def test_fields_are_a_snapshot_at_write_time(tmp_path):
    log = CallLog(str(tmp_path), "c")
    usage = {"audio_in": 1}
    log.write("call_end", usage=usage)
    usage["audio_in"] = 999   # the writer thread must not see later changes
    await log.aclose()
    assert json.loads(log.path.read_text())["usage"] == {"audio_in": 1}


def test_lines_still_queued_at_exit_are_written(tmp_path):
    """A process that exits with lines queued (no close) still writes them all."""
    code = ("from voiceai_ari.call.transcript import CallLog\n"
            f"log = CallLog({str(tmp_path)!r}, 'c')\n"
            "for n in range(20000):\n    log.write('bot', text=str(n))\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    [path] = tmp_path.iterdir()
    assert [json.loads(x)["text"] for x in path.read_text().splitlines()] == [str(n) for n in range(20000)]


async def test_unwritable_folder_is_logged_and_the_call_goes_on(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = CallLog(str(blocker / "sub"), "c")   # a file where the folder should be
    log.write("call_start")
    await log.aclose()
    assert log.recent[-1]["event"] == "call_start"
    assert any("transcript for c cannot be written" in r.getMessage() for r in caplog.records)


def test_empty_folder_turns_transcripts_off(tmp_path):
    log = CallLog("", "c")
    log.write("call_start")
    assert log.path is None and len(log.recent) == 1
