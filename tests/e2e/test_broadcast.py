"""Workers on one Asterisk: extension 500 offers each call to every app named voiceai-w* (StasisBroadcast), the
first worker to claim it serves it; unclaimed in 500 ms, the dialplan plays tt-allbusy. Each worker here is a
real `voiceai-ari run` with VOICEAI_BROADCAST=on and its own app name, calls are sipp callers with their own
tone, the model is the echo fake: a caller hearing its own tone back (and nobody else's) was served once.

    flock -o /tmp/voiceai-e2e.lock scripts/test tests/e2e/test_broadcast.py -q -s
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from . import analysis as A
from .caller import Phone, place_call
from .conftest import log_lines
from .test_robustness import wait_log
from .workers import (calls_up, freqs, heard_own_echo, invite_to_200_ms, median, sessions_are_a_bijection,
                      stasis_delays, tone_call, wait_calls_up, wait_no_leftovers, worker_env)

pytestmark = pytest.mark.e2e
BROADCAST_EXT = "500"                     # asterisk/extensions.conf: StasisBroadcast(500,^voiceai-w)
W1, W2 = "voiceai-w1", "voiceai-w2"
P1, P2 = "47100-47119", "47120-47139"


async def test_calls_spread_over_two_workers_each_served_once(make_bot, fake_model, tmp_path):
    """8 callers at once on extension 500, two workers with room for all: every call is claimed by exactly
    one worker (one model session per caller, each caller hears only its own echo), and both take calls."""
    tones = freqs(8)
    fake = await fake_model(mode="echo", speed=4, seed=3)
    w1 = await make_bot(**worker_env(fake.url, W1, P1, VOICEAI_MAX_CALLS="10"))
    w2 = await make_bot(**worker_env(fake.url, W2, P2, VOICEAI_MAX_CALLS="10"))
    results = await asyncio.gather(*(tone_call(BROADCAST_EXT, f, tmp_path / f"c{k}") for k, f in enumerate(tones)))
    served = [heard_own_echo(r, f, tones) for r, f in zip(results, tones, strict=True)]
    assert all(s.ok for s in served), [s.why for s in served if not s.ok]
    assert not any(r.got_bye for r in results)      # served to the end: the callers hung up
    sessions_are_a_bijection(fake, tones)
    n1, n2 = calls_up(w1), calls_up(w2)
    assert n1 + n2 == len(tones) and n1 >= 1 and n2 >= 1, (n1, n2)
    won = len(log_lines(w1, r"= claimed ")) + len(log_lines(w2, r"= claimed "))
    assert won == len(tones), won
    print(f"\n[e2e] broadcast: {len(tones)} calls, worker 1 took {n1}, worker 2 took {n2}; "
          f"channel creation -> StasisStart {sorted(stasis_delays(w1) + stasis_delays(w2))} ms")
    assert await wait_no_leftovers([W1, W2]) == ([], [])


async def test_a_full_worker_does_not_claim_and_all_full_hear_the_busy_announcement(make_bot, fake_model, tmp_path):
    """Each worker has one slot. The first call takes one worker, the second goes to the other (the full one
    declines the offer), the third finds both full: nobody claims, the dialplan answers it with tt-allbusy."""
    tones = freqs(3)
    fake = await fake_model(mode="echo", speed=4, seed=5)
    w1 = await make_bot(**worker_env(fake.url, W1, P1, VOICEAI_MAX_CALLS="1"))
    w2 = await make_bot(**worker_env(fake.url, W2, P2, VOICEAI_MAX_CALLS="1"))
    first = asyncio.create_task(tone_call(BROADCAST_EXT, tones[0], tmp_path / "a", call_seconds=9))
    await wait_calls_up((w1, w2), 1)
    full = w1 if calls_up(w1) else w2
    second = asyncio.create_task(tone_call(BROADCAST_EXT, tones[1], tmp_path / "b", call_seconds=7))
    await wait_calls_up((w1, w2), 2)
    assert calls_up(w1) == 1 and calls_up(w2) == 1, "the second call did not go to the worker with room"
    assert log_lines(full, r"- offer of \S+ declined: 1 of 1 slots in use"), full.log()[-2000:]
    busy = await place_call(BROADCAST_EXT, phone=Phone("g722"), call_seconds=14, workdir=tmp_path / "c", timeout=30)
    res = await asyncio.gather(first, second)
    for r, f in zip(res, tones, strict=False):
        assert heard_own_echo(r, f, tones).ok, heard_own_echo(r, f, tones).why
    # the third caller: answered by the dialplan after the 500 ms offer, hears tt-allbusy (9 s), then BYE
    assert busy.answer is not None and busy.got_bye, busy.summary()
    offer_ms = invite_to_200_ms(busy)
    speech = A.sound_seconds(busy.audio_16k(), 16000)
    assert speech >= 1.0, f"the busy caller heard {speech:.2f} s of sound: {busy.summary()}"
    assert 450 <= offer_ms <= 1500, offer_ms     # the 500 ms the offer stays open, then the dialplan answers
    assert calls_up(w1) + calls_up(w2) == 2 and len(fake.sessions) == 2
    assert len(log_lines(w1, r"- offer of \S+ declined")) + len(log_lines(w2, r"- offer of \S+ declined")) >= 3
    print(f"\n[e2e] broadcast, all full: busy caller answered {offer_ms:.0f} ms after its INVITE, heard "
          f"{speech:.1f} s of tt-allbusy, BYE after {busy.sip_time('BYE', 'recv') - busy.t_start:.1f} s")
    assert await wait_no_leftovers([W1, W2]) == ([], [])


async def test_a_draining_worker_claims_nothing_new_and_its_call_finishes(make_bot, fake_model, tmp_path):
    """Worker 1 has a call up and gets SIGTERM (VOICEAI_DRAIN_S=20): it declines every new offer, the new
    calls are served by worker 2, and worker 1's caller is served to the end (the caller hangs up), then
    worker 1 exits 0."""
    tones = freqs(4)
    fake = await fake_model(mode="echo", speed=4, seed=9)
    w1 = await make_bot(**worker_env(fake.url, W1, P1, VOICEAI_DRAIN_S="20"))
    first = asyncio.create_task(tone_call(BROADCAST_EXT, tones[0], tmp_path / "a", call_seconds=9))
    await wait_log(w1, r"= call up in")
    w2 = await make_bot(**worker_env(fake.url, W2, P2))
    w1.proc.send_signal(signal.SIGTERM)
    await wait_log(w1, r"= draining")
    later = await asyncio.gather(*(tone_call(BROADCAST_EXT, f, tmp_path / f"b{k}") for k, f in enumerate(tones[1:])))
    for r, f in zip(later, tones[1:], strict=True):
        assert heard_own_echo(r, f, tones).ok, heard_own_echo(r, f, tones).why
    assert calls_up(w1) == 1 and calls_up(w2) == 3, (calls_up(w1), calls_up(w2))
    assert len(log_lines(w1, r"= claimed ")) == 1
    declined = len(log_lines(w1, r"- offer of \S+ declined: draining"))
    assert declined == 3, w1.log()[-2000:]
    res = await first
    assert heard_own_echo(res, tones[0], tones).ok and not res.got_bye, res.summary()
    rc = await asyncio.to_thread(w1.proc.wait, 15)
    assert rc == 0
    assert [m.group(1) for m in log_lines(w1, r"x call ended after [\d.]+ s: (.*?); media")] == ["caller hung up"]
    print(f"\n[e2e] broadcast drain: worker 1 declined {declined} offers while draining, its call ran to the "
          f"caller's hangup ({res.t_end - res.t_answered:.1f} s), worker 2 served the 3 new calls")
    assert await wait_no_leftovers([W1, W2]) == ([], [])


async def test_a_killed_worker_new_calls_go_to_the_other_and_its_call_is_cleaned_up(make_bot, fake_model, tmp_path):
    """Worker 1 serves a call and is SIGKILLed. New calls go to worker 2 at once. Worker 1's caller hears
    nothing more (the process that carried its audio is gone) until worker 1 is started again: its resync
    hangs the caller up (BYE) and deletes its externalMedia channel and bridge; nothing of either is left."""
    tones = freqs(3)
    fake = await fake_model(mode="echo", speed=4, seed=13)
    w1 = await make_bot(**worker_env(fake.url, W1, P1))
    first = asyncio.create_task(tone_call(BROADCAST_EXT, tones[0], tmp_path / "a", call_seconds=20))
    await wait_log(w1, r"= call up in")
    w2 = await make_bot(**worker_env(fake.url, W2, P2))
    await asyncio.sleep(2.5)                      # the first caller's echo has played
    loop = asyncio.get_running_loop()
    w1.proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(w1.proc.wait, 10)
    t_kill = loop.time()
    later = await asyncio.gather(*(tone_call(BROADCAST_EXT, f, tmp_path / f"b{k}") for k, f in enumerate(tones[1:])))
    for r, f in zip(later, tones[1:], strict=True):
        assert heard_own_echo(r, f, tones).ok, heard_own_echo(r, f, tones).why
    assert calls_up(w2) == 2
    t_restart = loop.time()
    w1._log.close()
    w1.log_path = w1.log_path.with_name(w1.log_path.stem + "-restarted.log")
    await w1.start()
    res = await first
    assert res.got_bye, res.summary()            # the restarted worker's resync ended it
    t_bye = res.sip_time("BYE", "recv")
    after_kill = [t for t in res.rx_times() if t > t_kill + 0.1]
    assert not after_kill or max(after_kill) < t_bye, "RTP reached the caller after the kill"
    assert await wait_no_leftovers([W1, W2]) == ([], [])
    print(f"\n[e2e] broadcast kill: new calls served by worker 2 right after the kill; the killed worker's "
          f"caller had dead air for {t_bye - t_kill:.1f} s, ended (BYE) {t_bye - t_restart:.2f} s after the "
          f"worker was started again; no channel or bridge left")


async def test_setup_latency_broadcast_vs_plain_stasis(make_bot, fake_model, tmp_path):
    """The same bot code answering on extension 100 (Stasis(voiceai)) and on 500 (StasisBroadcast to two
    workers): the broadcast adds about a millisecond between the channel's creation and StasisStart, and
    little to INVITE -> 200 OK."""
    fake = await fake_model(mode="echo", speed=4)
    plain = await make_bot(OPENAI_API_KEY="sk-e2e-test-secret-0123456789", VOICEAI_REALTIME_URL=fake.url,
                           VOICEAI_RTP_PORTS="47140-47159")
    w1 = await make_bot(**worker_env(fake.url, W1, P1))
    w2 = await make_bot(**worker_env(fake.url, W2, P2))
    ms = {"100": [], BROADCAST_EXT: []}
    for k in range(6):
        for ext in ("100", BROADCAST_EXT):
            r = await place_call(ext, phone=Phone("g722"), call_seconds=0.6, workdir=tmp_path / f"{ext}-{k}", timeout=20)
            assert r.ok, r.summary()
            ms[ext].append(invite_to_200_ms(r))
    d_plain, d_bc = stasis_delays(plain), stasis_delays(w1) + stasis_delays(w2)
    assert len(d_plain) == 6 and len(d_bc) == 6
    assert median(d_bc) < 20, d_bc
    print(f"\n[e2e] set-up latency: channel creation -> StasisStart median plain {median(d_plain):.0f} ms "
          f"{sorted(d_plain)}, broadcast {median(d_bc):.0f} ms {sorted(d_bc)}; INVITE -> 200 OK median plain "
          f"{median(ms['100']):.0f} ms {sorted(round(x) for x in ms['100'])}, broadcast "
          f"{median(ms[BROADCAST_EXT]):.0f} ms {sorted(round(x) for x in ms[BROADCAST_EXT])}")
    assert await wait_no_leftovers([W1, W2, "voiceai"]) == ([], [])
