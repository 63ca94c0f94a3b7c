"""A call's recording against what the phone heard, on both media transports: the bot's side of the WAV is
there, begins when the phone began to hear the bot, and after the caller talks over the bot it stops when
the phone's audio stops. Over chan_websocket the bot hands the model's audio to Asterisk faster than real
time and Asterisk re-times it: the recording must follow the play-out, not the hand-over, and leave out
what the barge-in flushed.

The WAV's timeline and the phone's are tied by the caller's own words: the phone knows when it sent them,
the WAV's left channel holds them as the bot received them. Measures taken against them include the trip
through Asterisk both ways (caller to bot, bot to caller); the bot's onset-to-stop span does not.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from . import analysis as A
from .caller import CallResult, Phone, place_call
from .conftest import E2E_KEY
from .test_call import no_leftovers

pytestmark = pytest.mark.e2e
AMP = 5000
TALK_OVER_S = 2.5            # the caller talks over the bot's answer this far into the call
WIN = 0.005                  # onsets to 5 ms


def loud_from(pcm, rate: int, after: int = 0, dbfs: float = -40.0) -> int | None:
    """First sample (at or after `after`) of the first 5 ms window louder than `dbfs`."""
    x = A.as_array(pcm)
    n = int(WIN * rate)
    for i in range(after // n, x.size // n):
        if A.rms_dbfs(x[i * n:(i + 1) * n]) > dbfs:
            return i * n
    return None


def loud_until(pcm, rate: int, after: int, dbfs: float = -40.0, quiet_s: float = 0.2) -> int:
    """End (sample) of the loud stretch that begins at `after`: where `quiet_s` of quiet begins."""
    x = A.as_array(pcm)
    n, need, quiet, last = int(WIN * rate), int(quiet_s / WIN), 0, after
    for i in range(after // n, x.size // n):
        if A.rms_dbfs(x[i * n:(i + 1) * n]) > dbfs:
            quiet, last = 0, (i + 1) * n
        else:
            quiet += 1
            if quiet >= need:
                break
    return last


class Heard:
    """What the phone heard, sample by sample on the test's clock: each packet's audio from its arrival."""

    def __init__(self, res: CallResult) -> None:
        when = {id(p): t for t, p in res.rx}
        pkts = A.in_sequence_order(res.voice())
        self.pcm = A.decode_g722(pkts)
        self.per = 320
        self.times = [when[id(p)] for p in pkts]

    def at(self, sample: int) -> float:
        k = min(sample // self.per, len(self.times) - 1)
        return self.times[k] + (sample % self.per) / 16000


async def read_recording(folder: Path, timeout: float = 10.0) -> tuple[int, np.ndarray, np.ndarray]:
    """(rate, caller, bot) of the call's WAV once the writer thread has closed it."""
    for _ in range(int(timeout / 0.1)):
        wavs = list(folder.glob("*.wav"))
        if wavs:
            try:
                with wave.open(str(wavs[0])) as w:
                    if w.getnframes() > 0:
                        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
                        return w.getframerate(), x[:, 0].copy(), x[:, 1].copy()
            except (EOFError, wave.Error):
                pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"no recording in {folder}: {list(folder.iterdir()) if folder.exists() else 'no folder'}")


async def test_the_recording_has_the_bot_as_the_caller_heard_it(make_bot, fake_model, transport, tmp_path):
    # a 6 s answer streamed at 3x real time: over chan_websocket it is all handed over within 2 s; the caller
    # talks over it 2.5 s into the call, when about 1.4 s of it has been heard
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=6.0, speed=3, seed=3)
    rec_dir = tmp_path / "rec"
    bot = await make_bot(**transport, OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url,
                         VOICEAI_RECORD_DIR=str(rec_dir))
    phone = Phone("g722")
    phone.play(A.tone(1000, 0.6, amplitude=AMP) + A.silence(TALK_OVER_S - 0.6) + A.tone(1000, 1.0, amplitude=AMP))
    res = await place_call("100", phone=phone, call_seconds=3.9, workdir=tmp_path)
    assert res.ok, res.summary()
    await bot.wait_for_log("x call ended")
    rate, caller, bot_track = await read_recording(rec_dir)
    assert len(fake.sessions[0].responses) >= 1 and fake.sessions[0].responses[0]["status"] == "cancelled"

    # the phone: when it sent the question and the talk-over, when it heard the bot begin and stop
    sent_q, sent_b = res.tx_times[0], res.tx_times[int(TALK_OVER_S / 0.02)]
    heard = Heard(res)
    p_on = loud_from(heard.pcm, 16000)
    assert p_on is not None, "the phone heard the bot: " + res.summary()
    p_off = loud_until(heard.pcm, 16000, p_on)
    phone_on, phone_off = heard.at(p_on) - sent_q, heard.at(p_off) - sent_b
    phone_span = (p_off - p_on) / 16000

    # the WAV: the caller's question and talk-over on the left, the bot on the right
    w_q = loud_from(caller, rate)
    w_b = loud_from(caller, rate, after=loud_until(caller, rate, w_q))
    w_on = loud_from(bot_track, rate)
    assert w_q is not None and w_b is not None, "the caller's side is recorded"
    assert w_on is not None, f"the bot's side of the recording is silent ({transport['VOICEAI_TRANSPORT']})"
    w_off = loud_until(bot_track, rate, w_on)
    wav_on, wav_off = (w_on - w_q) / rate, (w_off - w_b) / rate
    wav_span = (w_off - w_on) / rate
    assert abs(A.dominant_freq(bot_track, rate, w_on / rate + 0.1, w_off / rate - 0.1) - 440) < 10
    late = [s / rate for s in range(w_off, bot_track.size, int(0.02 * rate))
            if A.rms_dbfs(bot_track[s:s + int(0.02 * rate)]) > -40]

    print(f"\n[e2e] recording ({transport['VOICEAI_TRANSPORT']}): bot onset after the question: phone "
          f"{phone_on * 1000:.0f} ms, WAV {wav_on * 1000:.0f} ms; bot stop after the talk-over: phone "
          f"{phone_off * 1000:.0f} ms, WAV {wav_off * 1000:.0f} ms; bot heard for: phone {phone_span * 1000:.0f} ms, "
          f"WAV {wav_span * 1000:.0f} ms; bot audio in the WAV after the stop: {len(late) * 20} ms")
    # the WAV's clock is the bot's, between the phone's sends and its receptions: its onset and stop measured
    # from the caller's words are the phone's less the trip through Asterisk and back (~20-30 ms here), and
    # chan_websocket's play-out is known from its marks to about a frame
    assert abs(phone_on - wav_on) <= 0.050, (phone_on, wav_on)
    assert abs(phone_off - wav_off) <= 0.050, (phone_off, wav_off)
    # what the bot said, begin to end, lasts in the WAV what it lasted at the phone: within two frames
    assert abs(phone_span - wav_span) <= 0.040, (phone_span, wav_span)
    assert 1.0 < wav_span < 2.2, "the bot was cut by the talk-over, not heard whole (6 s)"
    assert not late, f"bot audio in the WAV after the cut (flushed, never heard): {late[:5]}"
    assert (await no_leftovers(bot)) == ([], [], [])
