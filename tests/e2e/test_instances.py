"""Two bot instances on one PBX (two Stasis app names): restarting one leaves the other's call up, with audio
both ways. The sandbox dialplan routes 100 to Stasis(voiceai) and 101 to Stasis(voiceai-2).

    flock /tmp/voiceai-e2e.lock scripts/test tests/e2e/test_instances.py -q
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from . import analysis as A
from .caller import Phone, ari, place_call
from .conftest import E2E_KEY, ended_media_stats, log_lines
from .test_call import reply_coverage
from .test_conversation import frames_with_tone
from .test_robustness import leftovers, wait_log

pytestmark = pytest.mark.e2e
AMP = 5000                 # -16.3 dBFS
SECOND_APP = "voiceai-2"   # asterisk/extensions.conf: 101 -> Stasis(voiceai-2)
CALL_S = 10.0
REPLY_HZ, A_HZ, B_HZ = 440.0, 1000.0, 1500.0


async def call_resources(app: str) -> dict[str, str]:
    """The caller channel, externalMedia channel and bridge of the one call in Stasis app ``app``, from ARI:
    the bridge is the one holding the caller, the externalMedia channel the other member."""
    _, chans = await ari("GET", "/channels")
    [caller] = [c["id"] for c in chans if c["name"].startswith("PJSIP/") and c.get("dialplan", {}).get("app_name")
                == "Stasis" and c["dialplan"].get("app_data", "").split(",")[0] == app]
    _, bridges = await ari("GET", "/bridges")
    [bridge] = [b for b in bridges if caller in b.get("channels", [])]
    [em] = [c for c in bridge["channels"] if c != caller]
    return {"caller": caller, "em": em, "bridge": bridge["id"]}


async def exists(kind: str, rid: str) -> bool:
    status, _ = await ari("GET", f"/{kind}/{rid}")
    assert status in (200, 404), status
    return status == 200


async def kill_and_restart(bot) -> None:
    """SIGKILL (no drain, no teardown: its call's resources stay in Asterisk), then start it again with the
    same settings; its log goes on in a second file."""
    bot.proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(bot.proc.wait, 10)
    bot._log.close()
    bot.log_path = bot.log_path.with_name(bot.log_path.stem + "-restarted.log")
    await bot.start()


async def test_restarting_one_instance_leaves_the_other_instances_call_up(make_bot, fake_model, tmp_path):
    """Instance A (app voiceai) and B (app voiceai-2) each serve a call. B is killed and started again: its
    resync cleans up B's leftovers only. A's call goes on: A's externalMedia channel and bridge still exist,
    A's caller hears the reply without a gap, and A's model session keeps receiving A's caller."""
    # the model speaks first (a long reply); its VAD never fires, so the caller's tone never barges in
    fake = await fake_model(mode="tone", tone_hz=REPLY_HZ, tone_seconds=CALL_S + 4, speed=4, vad_threshold_dbfs=0.0)
    common = dict(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url, VOICEAI_GREETING="model")
    bot_a = await make_bot(**common)
    bot_b = await make_bot(**common, VOICEAI_ARI_APP=SECOND_APP, VOICEAI_RTP_PORTS="47020-47039",
                           VOICEAI_CONTROL_PORT="0")   # A holds the control port
    phone_a, phone_b = Phone("g722"), Phone("g722")
    phone_a.play(A.tone(A_HZ, CALL_S, amplitude=AMP))
    phone_b.play(A.tone(B_HZ, CALL_S, amplitude=AMP))
    call_a = asyncio.create_task(place_call("100", phone=phone_a, call_seconds=CALL_S, workdir=tmp_path / "a"))
    call_b = asyncio.create_task(place_call("101", phone=phone_b, call_seconds=CALL_S, workdir=tmp_path / "b"))
    await wait_log(bot_a, r"= call up in")
    await wait_log(bot_b, r"= call up in")
    res_a_before, res_b = await call_resources("voiceai"), await call_resources(SECOND_APP)
    _, app_a = await ari("GET", "/applications/voiceai")   # for the record: does ARI list our bridge in the app?
    bridge_in_app = res_a_before["bridge"] in app_a.get("bridge_ids", [])
    await asyncio.sleep(1.5)   # both calls run, audio both ways

    loop = asyncio.get_running_loop()
    t_kill = loop.time()
    await kill_and_restart(bot_b)
    t_restarted = loop.time()
    # B's resync: the caller it served before the kill is left in its app, so it hangs it up (the last step)
    await wait_log(bot_b, r"cleaned up orphan caller channel", timeout=10)
    t_resynced = loop.time()
    res_a_after = {k: (await exists("channels" if k != "bridge" else "bridges", v)) for k, v in res_a_before.items()}
    res_b_after = {k: (await exists("channels" if k != "bridge" else "bridges", v)) for k, v in res_b.items()}

    res_a, res_b_call = await call_a, await call_b
    # A: untouched by B's restart, served to the end (the caller hung up, the bot never did)
    assert res_a_after == {"caller": True, "em": True, "bridge": True}, (res_a_before, bot_b.log()[-3000:])
    assert res_a.ok and not res_a.got_bye, res_a.summary() + "\n" + bot_a.log()[-3000:]
    # B: its own leftovers (externalMedia channel, bridge, the caller nobody serves) were cleaned up
    assert res_b_after == {"caller": False, "em": False, "bridge": False}, (res_b, bot_b.log()[-3000:])
    assert res_b_call.got_bye, res_b_call.summary()

    # A's caller heard the reply all along, with no hole while B restarted
    _, cov = reply_coverage(res_a, REPLY_HZ)
    window = [t for t in res_a.rx_times() if t_kill - 0.5 <= t <= t_resynced + 1.0]
    assert window and window[-1] >= t_resynced + 0.9, "A's caller received no RTP after B's resync"
    gap_ms = A.longest_gap_ms(window)
    heard = [t for t in frames_with_tone(res_a, REPLY_HZ, tol=15) if t_kill <= t <= t_resynced + 1.0]
    span = t_resynced + 1.0 - t_kill
    assert len(heard) * 0.02 >= 0.95 * span, f"A's caller heard the reply {len(heard) * 0.02:.2f} s of {span:.2f} s"
    assert cov.longest_gap_ms <= 40 and gap_ms < 60, f"A's reply had a hole: {cov}; RTP gap {gap_ms:.1f} ms"

    # A's model session received A's caller (and only A's) all along
    [fs_a] = [fs for fs in fake.sessions if abs(A.dominant_freq(bytes(fs.audio), 24000) - A_HZ) < 10]
    seg = A.tone_segments(bytes(fs_a.audio), 24000, A_HZ, tol_hz=15, min_dbfs=-35)
    assert seg.tone_seconds >= CALL_S - 2.0 and seg.longest_gap_ms <= 60, seg
    assert A.band_share(bytes(fs_a.audio), 24000, B_HZ) < 0.01

    # A's call ended when its caller hung up, with every packet from Asterisk accepted (nothing came before
    # Asterisk's address was known: the gate's source_unknown drop costs nothing)
    await bot_a.wait_for_log("x call ended")
    assert [m.group(1) for m in log_lines(bot_a, r"x call ended after [\d.]+ s: (.*?); media")] == ["caller hung up"]
    [stats_a] = ended_media_stats(bot_a)
    assert not any(stats_a["rx_dropped"].values()), stats_a
    print(f"\n[e2e] two instances: B killed at +{t_kill - res_a.t_answered:.2f} s of A's call, up again "
          f"{t_restarted - t_kill:.2f} s later, its resync done {t_resynced - t_restarted:.2f} s after that; "
          f"A's caller: reply {cov.tone_seconds:.2f} s heard, longest audio hole {cov.longest_gap_ms:.0f} ms, "
          f"longest RTP gap around the restart {gap_ms:.1f} ms; A's model got {seg.tone_seconds:.2f} s of the "
          f"caller's tone (longest hole {seg.longest_gap_ms:.0f} ms); A's resources still in ARI: {res_a_after}; "
          f"B's leftovers cleaned: {res_b_after}; A's bridge listed in GET /applications/voiceai: {bridge_in_app}")
    assert (await leftovers(bot_a)) == ([], [], [])
