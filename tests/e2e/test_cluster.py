"""Several Asterisks behind Kamailio, each with its StasisBroadcast workers, all real processes on loopback
(scripts/cluster): Kamailio 127.0.0.10 (dispatcher, OPTIONS probes every second), Asterisk A 127.0.0.11 and
B 127.0.0.12 from the sandbox chroot, two `voiceai-ari run` workers per node. Callers are sipp processes with
their own tone calling 500 through Kamailio; the model is the echo fake, so a caller that hears its own tone
back, and nobody else's, was served exactly once.

    flock -o /tmp/voiceai-e2e.lock scripts/test tests/e2e/test_cluster.py -q -s
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from . import analysis as A
from .caller import REPO, Phone, place_call
from .conftest import log_lines
from .test_robustness import wait_log
from .workers import (KAMAILIO, NODES, calls_up, freqs, heard_own_echo, invite_to_200_ms, median, node_leftovers,
                      proxy_scenario, stasis_delays, tone_phone, wait_calls_up, worker_env)

pytestmark = pytest.mark.e2e
CLUSTER = REPO / "scripts" / "cluster"
METRICS = "http://127.0.0.10:9090/metrics"
PORTS = {"wa1": "47200-47219", "wa2": "47220-47239", "wb1": "47240-47259", "wb2": "47260-47279"}


def cluster_cmd(*args: str) -> str:
    done = subprocess.run([str(CLUSTER), *args], capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "VOICEAI_CLUSTER_WORKERS": "0",
                               "VOICEAI_CLUSTER_PING_S": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def cluster():
    """Kamailio and Asterisks A and B (scripts/cluster start installs Debian's kamailio if it is missing);
    the tests start the workers."""
    if os.geteuid() != 0:
        pytest.skip("the cluster needs root (chroot, apt-get install kamailio): run the e2e tests as root")
    cluster_cmd("start")
    yield
    cluster_cmd("stop")


async def start_worker(make_bot, fake, name: str, **extra: str):
    node = name[1]
    return await make_bot(**worker_env(fake.url, f"voiceai-{name}", PORTS[name],
                                       VOICEAI_ARI_URL=f"http://{NODES[node]}:8088", **extra))


async def proxied_call(freq: float, workdir, call_seconds: float = 4.5):
    return await place_call("500", phone=tone_phone(freq), call_seconds=call_seconds, workdir=workdir,
                            timeout=40, server=KAMAILIO, scenario=proxy_scenario(workdir))


async def node_up_metric(node: str) -> str | None:
    """Kamailio's dispatcher_node_up gauge for a node ("1", "0"; None before its first change), from its
    Prometheus endpoint."""
    import aiohttp
    async with aiohttp.ClientSession() as s:
        async with s.get(METRICS) as r:
            text = await r.text()
    m = re.search(r'^kamailio_dispatcher_node_up\{node="sip:' + re.escape(NODES[node]) + r':5060"\} ([\d.]+)', text, re.M)
    return None if m is None else str(round(float(m.group(1))))


def answered_by(res) -> str | None:
    """The node whose address the caller got in the SDP answer (where its RTP goes)."""
    return next((n for n, ip in NODES.items() if res.answer and res.answer[0] == ip), None)


async def test_sixty_calls_over_two_asterisks_and_four_workers_one_worker_draining(cluster, make_bot, fake_model,
                                                                                    tmp_path):
    """60 calls in 5 overlapping waves of 12: every call is served exactly once, both nodes and all four
    workers take calls. Worker wa1 gets SIGTERM during wave 3: its calls run to the caller's hangup, it claims
    nothing afterwards (its node's other worker and node B take the rest), then it exits 0."""
    fake = await fake_model(mode="echo", speed=4, seed=21)
    workers = {n: await start_worker(make_bot, fake, n, VOICEAI_MAX_CALLS="12",
                                     **({"VOICEAI_DRAIN_S": "30"} if n == "wa1" else {})) for n in PORTS}
    sets = [freqs(24)[0::2], freqs(24)[1::2]]      # waves 1,3,5 and 2,4: overlapping waves never share a tone
    tasks: list[tuple[float, int, asyncio.Task]] = []
    loop = asyncio.get_running_loop()
    t_term, t_exit = None, []
    for wave in range(5):
        tones = sets[wave % 2]
        for k, f in enumerate(tones):
            tasks.append((f, wave, asyncio.create_task(proxied_call(f, tmp_path / f"w{wave}c{k}"))))
        if wave == 2:
            await asyncio.sleep(1.5)               # wave 3's calls are up
            active_wa1 = calls_up(workers["wa1"]) - len(log_lines(workers["wa1"], r"x call ended after"))
            workers["wa1"].proc.send_signal(signal.SIGTERM)
            t_term = loop.time()
            exit_wait = asyncio.create_task(asyncio.to_thread(workers["wa1"].proc.wait, 40))
            exit_wait.add_done_callback(lambda _t: t_exit.append(loop.time()))
            await wait_log(workers["wa1"], r"= draining")
            taken_before_term = calls_up(workers["wa1"])
            await asyncio.sleep(1.5)
        else:
            await asyncio.sleep(3.0)
    results = [(f, w, await t) for f, w, t in tasks]
    bad = []
    for f, w, res in results:
        s = heard_own_echo(res, f, sets[w % 2])
        if not s.ok or res.got_bye:
            bad.append(f"wave {w + 1}: {s.why or res.summary()}")
    assert not bad, f"{len(bad)} of 60 calls not served:\n" + "\n".join(bad[:8])
    # exactly once: one model session per call, each holding one caller's tone and no other
    want = collections.Counter(f for f, _, _ in results)
    got = collections.Counter()
    for fs in fake.sessions:
        audio = bytes(fs.audio)
        dom = A.dominant_freq(audio, 24000)
        mine = min(want, key=lambda f: abs(f - dom))
        assert abs(mine - dom) < 10, f"a session's dominant {dom:.1f} Hz is no caller's"
        got[mine] += 1
    assert got == want, (got, want)
    per_worker = {n: calls_up(b) for n, b in workers.items()}
    per_node = {n: sum(v for k, v in per_worker.items() if k[1] == n) for n in NODES}
    assert sum(per_worker.values()) == 60 and all(per_worker.values()), per_worker
    assert min(per_node.values()) >= 20, per_node          # round-robin: 30/30 unless a probe flapped
    wa1 = workers["wa1"]
    rc = await exit_wait
    assert rc == 0
    assert calls_up(wa1) == taken_before_term, "the draining worker took a call after SIGTERM"
    ends = [m.group(1) for m in log_lines(wa1, r"x call ended after [\d.]+ s: (.*?); media")]
    assert ends and set(ends) == {"caller hung up"}, ends
    declined = len(log_lines(wa1, r"- offer of \S+ declined: draining"))
    setup = sorted(d for b in workers.values() for d in stasis_delays(b))
    print(f"\n[e2e] cluster: 60 calls served once each; per node {per_node}, per worker {per_worker}; wa1 had "
          f"{active_wa1} call(s) up at SIGTERM (of {taken_before_term} taken), ran them to the caller's hangup, declined {declined} offers while "
          f"draining, exited 0 {t_exit[0] - t_term:.1f} s after SIGTERM; channel creation -> StasisStart median "
          f"{median(setup):.0f} ms, max {setup[-1]:.0f} ms")
    for ip in NODES.values():
        assert await node_leftovers(ip) == ([], []), ip


async def test_a_killed_worker_behind_kamailio(cluster, make_bot, fake_model, tmp_path):
    """Worker wb1, alone on node B, serves a call and is SIGKILLed; wb2 joins. New calls through Kamailio
    are all served. wb1 started again: its resync hangs up its caller and deletes its media channel and
    bridge; nothing is left on either node."""
    tones = freqs(8)
    fake = await fake_model(mode="echo", speed=4, seed=23)
    wa1 = await start_worker(make_bot, fake, "wa1")
    wb1 = await start_worker(make_bot, fake, "wb1")
    first = [asyncio.create_task(proxied_call(f, tmp_path / f"a{k}", call_seconds=25)) for k, f in enumerate(tones[:2])]
    await wait_log(wb1, r"= call up in")
    await wait_log(wa1, r"= call up in")
    wb2 = await start_worker(make_bot, fake, "wb2")
    loop = asyncio.get_running_loop()
    wb1.proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(wb1.proc.wait, 10)
    t_kill = loop.time()
    later = await asyncio.gather(*(proxied_call(f, tmp_path / f"b{k}") for k, f in enumerate(tones[2:])))
    for res, f in zip(later, tones[2:], strict=True):
        assert heard_own_echo(res, f, tones).ok, heard_own_echo(res, f, tones).why
    assert calls_up(wb2) >= 1
    wb1._log.close()
    wb1.log_path = wb1.log_path.with_name(wb1.log_path.stem + "-restarted.log")
    t_restart = loop.time()
    await wb1.start()
    res = await asyncio.gather(*first)
    killed = [r for r in res if answered_by(r) == "b"]
    kept = [r for r in res if answered_by(r) == "a"]
    assert len(killed) == 1 and len(kept) == 1, [r.summary() for r in res]
    assert killed[0].got_bye, killed[0].summary()
    assert not kept[0].got_bye and kept[0].ok, kept[0].summary()       # node A's call: untouched
    t_bye = killed[0].sip_time("BYE", "recv")
    for ip in NODES.values():
        assert await node_leftovers(ip, timeout=8) == ([], []), ip
    print(f"\n[e2e] cluster kill: 6 new calls through Kamailio served after wb1's SIGKILL; wb1's caller: dead air "
          f"{t_bye - t_kill:.1f} s, BYE {t_bye - t_restart:.2f} s after wb1 was started again; nothing left")


async def test_a_draining_asterisk_gets_no_new_calls_and_its_calls_finish(cluster, make_bot, fake_model, tmp_path):
    """Calls up on both nodes; node A gets `core stop gracefully`. A call placed at once goes to B (A answers
    an INVITE with 503 while it drains, and Kamailio fails the call over); Kamailio's probe marks A down within the probe interval; every new call goes to B; A's
    calls run to the caller's hangup, then A exits. Started again, A is back in rotation."""
    try:
        await _drain_node_a(make_bot, fake_model, tmp_path)
    finally:
        cluster_cmd("node-start", "a")


async def _drain_node_a(make_bot, fake_model, tmp_path):
    tones = freqs(11)
    fake = await fake_model(mode="echo", speed=4, seed=29)
    for n in PORTS:
        await start_worker(make_bot, fake, n)
    first = [asyncio.create_task(proxied_call(f, tmp_path / f"a{k}", call_seconds=12)) for k, f in enumerate(tones[:4])]
    await asyncio.sleep(2.0)
    loop = asyncio.get_running_loop()
    t_drain = loop.time()
    # `asterisk -rx "core stop gracefully"` returns only once Asterisk has stopped: run it alongside
    stopping = asyncio.create_task(asyncio.to_thread(cluster_cmd, "cli", "a", "core stop gracefully"))
    await asyncio.sleep(0.15)                  # the CLI has connected and the drain has begun
    # two calls at once: round-robin sends one of them to A unless the probe has already taken A out
    right_away_task = asyncio.gather(*(proxied_call(f, tmp_path / f"r{k}") for k, f in enumerate(tones[4:6])))
    t_down = None
    while loop.time() - t_drain < 5:
        if await node_up_metric("a") == "0":
            t_down = loop.time()
            break
        await asyncio.sleep(0.05)
    assert t_down is not None, "Kamailio did not mark node A down in 5 s"
    right_away = await right_away_task
    later = await asyncio.gather(*(proxied_call(f, tmp_path / f"b{k}") for k, f in enumerate(tones[6:])))
    for res, f in zip([*right_away, *later], tones[4:], strict=True):
        assert heard_own_echo(res, f, tones).ok and answered_by(res) == "b", heard_own_echo(res, f, tones).why
    res = await asyncio.gather(*first)
    assert sorted(answered_by(r) for r in res) == ["a", "a", "b", "b"], [r.answer for r in res]
    for r, f in zip(res, tones[:4], strict=True):
        assert heard_own_echo(r, f, tones).ok and not r.got_bye, r.summary()    # served to the caller's hangup
    log = kamailio_log()
    failed_over = sum(bool(failovers(r, log)) for r in right_away)
    await asyncio.wait_for(stopping, 10)        # A exits once its last call has ended
    t_exit = loop.time()
    exited = subprocess.run([str(CLUSTER), "status"], capture_output=True, text=True).stdout
    assert "asterisk a: not running" in exited, exited
    cluster_cmd("node-start", "a")
    t_start = loop.time()
    while loop.time() - t_start < 5 and await node_up_metric("a") != "1":
        await asyncio.sleep(0.05)
    t_up = loop.time()
    assert await node_up_metric("a") == "1"
    print(f"\n[e2e] cluster drain: node A out of Kamailio's rotation {(t_down - t_drain) * 1000:.0f} ms after "
          f"`core stop gracefully` (probe every 1 s); 2 calls placed right away went to B "
          f"({failed_over} of them failed over from A after its 503; INVITE -> 200 "
          f"{[round(invite_to_200_ms(r)) for r in right_away]} ms); 5 new calls all on B; A's 2 calls ran to the "
          f"caller's hangup, then A exited ({t_exit - t_drain:.1f} s after the drain began); restarted, A was back in rotation {(t_up - t_start) * 1000:.0f} ms later")
    assert await node_leftovers(NODES["b"]) == ([], [])


async def wait_node_up(node: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end and await node_up_metric(node) == "0":
        await asyncio.sleep(0.05)
    assert await node_up_metric(node) != "0", f"node {node} still out of rotation"


async def test_setup_latency_per_tier(cluster, make_bot, fake_model, tmp_path):
    """INVITE -> 200 OK for the same call (extension 500, a worker on each node) placed directly on a node
    and through Kamailio: what the proxy adds; and channel creation -> StasisStart (what the broadcast adds)."""
    for n in NODES:
        await wait_node_up(n)
    fake = await fake_model(mode="echo", speed=4)
    bots = [await start_worker(make_bot, fake, n) for n in ("wa1", "wb1")]
    direct, proxied = [], []
    for k in range(8):
        r = await place_call("500", phone=Phone("g722"), call_seconds=0.6, workdir=tmp_path / f"d{k}",
                             timeout=20, server=f"{NODES['ab'[k % 2]]}:5060")
        assert r.ok, r.summary()
        direct.append(invite_to_200_ms(r))
        w = tmp_path / f"p{k}"
        r = await place_call("500", phone=Phone("g722"), call_seconds=0.6, workdir=w, timeout=20,
                             server=KAMAILIO, scenario=proxy_scenario(w))
        assert r.ok, r.summary()
        proxied.append(invite_to_200_ms(r))
    bc = [d for b in bots for d in stasis_delays(b)]
    assert len(bc) == 16
    print(f"\n[e2e] set-up latency per tier: broadcast (channel creation -> StasisStart) median {median(bc):.0f} ms "
          f"max {max(bc):.0f} ms; INVITE -> 200 OK direct to an Asterisk median {median(direct):.0f} ms "
          f"{sorted(round(x) for x in direct)}, through Kamailio median {median(proxied):.0f} ms "
          f"{sorted(round(x) for x in proxied)}")
    assert median(proxied) - median(direct) < 20


def kamailio_log() -> str:
    paths = subprocess.run([str(CLUSTER), "paths"], capture_output=True, text=True).stdout.split()
    return (Path(paths[-1]) / "kamailio.log").read_text(errors="replace")


def failovers(res, log: str) -> list[str]:
    """Kamailio's "failed over" lines in `log` (kamailio_log()) for this call (its Call-ID is in every log
    line's prefix)."""
    return [line for line in log.splitlines() if "failed over" in line and res.call_id in line]


async def test_a_full_node_overflows_to_the_other_and_only_the_last_plays_busy(cluster, make_bot, fake_model,
                                                                                tmp_path):
    """Node A's one worker has 1 slot, node B's has 3. Four calls in turn: A's worker takes one and is then
    full; the call Kamailio next sends to A is offered there for 500 ms, unclaimed, and A answers 503 because
    Kamailio told it another node is left (X-VoiceAI-Overflow: next): Kamailio fails it over to B, which serves
    it. With both nodes full, a fifth call overflows from the first node it is sent to, and the last node
    tried answers it with the busy announcement."""
    for n in NODES:
        await wait_node_up(n)
    tones = freqs(4)
    fake = await fake_model(mode="echo", speed=4, seed=31)
    wa1 = await start_worker(make_bot, fake, "wa1", VOICEAI_MAX_CALLS="1")
    wb1 = await start_worker(make_bot, fake, "wb1", VOICEAI_MAX_CALLS="3")
    tasks = []
    for k, f in enumerate(tones):
        tasks.append(asyncio.create_task(proxied_call(f, tmp_path / f"c{k}", call_seconds=14 - k)))
        assert await wait_calls_up((wa1, wb1), k + 1, timeout=10) == k + 1, f"call {k + 1} was not taken up by a worker"
    assert (calls_up(wa1), calls_up(wb1)) == (1, 3)
    w = tmp_path / "busy"
    busy = await place_call("500", phone=Phone("g722"), call_seconds=14, workdir=w, timeout=40, server=KAMAILIO,
                            scenario=proxy_scenario(w))
    res = await asyncio.gather(*tasks)
    for r, f in zip(res, tones, strict=True):
        s = heard_own_echo(r, f, tones)
        assert s.ok and not r.got_bye, s.why or r.summary()
    assert sorted(answered_by(r) for r in res) == ["a", "b", "b", "b"], [r.answer for r in res]
    log = kamailio_log()
    moved = {r.call_id: failovers(r, log) for r in (*res, busy)}
    over = [r for r in res if moved[r.call_id]]
    assert len(over) == 1, [(answered_by(r), moved[r.call_id]) for r in res]     # the one round-robin sent to full A
    assert "503" in moved[over[0].call_id][0], moved[over[0].call_id]
    direct_ms = [invite_to_200_ms(r) for r in res if r is not over[0]]
    overflow_ms = invite_to_200_ms(over[0])
    assert overflow_ms >= 450, overflow_ms               # A held the offer open for its 500 ms first
    # the fifth caller: both nodes full; the first one it reached said 503, the last answered with tt-allbusy
    assert busy.answer is not None and busy.got_bye, busy.summary()
    assert len(moved[busy.call_id]) == 1, moved[busy.call_id]
    last = answered_by(busy)
    assert last and f"failed over to sip:{NODES[last]}:" in moved[busy.call_id][0], (last, moved[busy.call_id])
    busy_ms = invite_to_200_ms(busy)
    assert 950 <= busy_ms <= 3000, busy_ms               # two 500 ms offers, then the last node's dialplan answered
    speech = A.sound_seconds(busy.audio_16k(), 16000)
    assert speech >= 1.0, f"the busy caller heard {speech:.2f} s of sound: {busy.summary()}"
    assert len(fake.sessions) == 4
    declined = {n: len(log_lines(b, r"- offer of \S+ declined")) for n, b in (("wa1", wa1), ("wb1", wb1))}
    assert declined["wa1"] >= 1 and declined["wb1"] >= 1, declined
    print(f"\n[e2e] cluster overflow: node A full (1 slot), B 3 slots: the call sent to A overflowed to B on A's 503 "
          f"(INVITE -> 200 {overflow_ms:.0f} ms; calls placed straight on a node with room "
          f"{sorted(round(x) for x in direct_ms)} ms); both full: the fifth call overflowed from "
          f"{'AB'[last == 'a']} to {last.upper()}, which answered it {busy_ms:.0f} ms after its INVITE with "
          f"{speech:.1f} s of tt-allbusy, BYE after {busy.sip_time('BYE', 'recv') - busy.t_start:.1f} s; "
          f"offers declined {declined}")
    for ip in NODES.values():
        assert await node_leftovers(ip) == ([], []), ip
