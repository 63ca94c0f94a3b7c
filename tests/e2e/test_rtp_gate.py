"""The inbound RTP gate against a spoofer who knows the port range: well-formed RTP with another dynamic
payload type, sent to every port of VOICEAI_RTP_PORTS before and while the call is set up, must not lock
the gate onto the wrong payload type (the caller would be unheard for the whole call).

    flock /tmp/voiceai-e2e.lock scripts/test tests/e2e/test_rtp_gate.py -q
"""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from . import analysis as A
from .caller import Phone, place_call
from .conftest import E2E_KEY
from .test_call import reply_coverage
from .test_robustness import _ended, leftovers, wait_log

pytestmark = pytest.mark.e2e
AMP = 5000
SPOOF_HZ, CALLER_HZ = 5000.0, 1000.0

# The spoofer is a separate process, so its pace does not depend on this test's event loop (which also runs
# the phone). The window it must hit is short: from the bot binding the call's port to Asterisk's answer to
# the externalMedia request, a few ms here. So every port of the range gets a packet every 5 ms, and the
# first one (where a fresh bot's first call lands) every 0.5 ms.
SPOOFER = r"""
import math, signal, socket, struct, sys, time
lo, hi = int(sys.argv[1]), int(sys.argv[2])
ports, first = list(range(lo, hi + 1)), [lo]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
samples = [round(%(amp)d * math.sin(2 * math.pi * %(hz)f * k / 24000)) for k in range(480 * 50)]
pcm = struct.pack(">%%dh" %% len(samples), *samples)
frames = [pcm[k * 960:(k + 1) * 960] for k in range(50)]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.setblocking(False)
sent = n = 0
print("ready", flush=True)
while not stop:
    packet = struct.pack("!BBHII", 0x80, 96, n & 0xFFFF, (n * 480) & 0xFFFFFFFF, 0x5F00F) + frames[n %% 50]
    for port in (ports if n %% 10 == 0 else first):
        try:
            s.sendto(packet, ("127.0.0.1", port))
            sent += 1
        except (BlockingIOError, ConnectionRefusedError):
            pass
    n += 1
    time.sleep(0.0005)
print(sent, flush=True)
""" % {"amp": AMP, "hz": SPOOF_HZ}


async def start_spoofer(ports: range) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", SPOOFER, str(ports.start), str(ports.stop - 1),
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and (await proc.stdout.readline()).strip() == b"ready"
    return proc


async def stop_spoofer(proc: asyncio.subprocess.Process) -> int:
    """SIGTERM to the spoofer (our own child, by its PID); returns how many packets it sent."""
    proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, proc.returncode
    return int(out.split()[-1])


async def test_spoofed_rtp_before_the_call_is_set_up_does_not_silence_the_caller(make_bot, fake_model, tmp_path):
    fake = await fake_model(mode="tone", tone_hz=440, tone_seconds=2.0, speed=4, seed=3)
    bot = await make_bot(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake.url)
    spoofer = await start_spoofer(bot.port_range())
    await asyncio.sleep(0.3)                    # the spoofer runs before the call exists
    phone = Phone("g722")
    phone.play(A.tone(CALLER_HZ, 2.0, amplitude=AMP))
    call = asyncio.create_task(place_call("100", phone=phone, call_seconds=5.0, workdir=tmp_path / "call"))
    await wait_log(bot, r"= call up in")
    await asyncio.sleep(1.0)                    # and while the call runs
    sent = await stop_spoofer(spoofer)
    res = await call
    assert res.ok and not res.got_bye, res.summary()
    # the model heard the caller's tone for the whole time it spoke, and none of the spoofed tone
    audio = bytes(fake.sessions[0].audio)
    # (if not: where the phone sent its voice, and the bot's counters, say whose side lost it)
    assert abs(A.dominant_freq(audio, 24000) - CALLER_HZ) < 10, (A.dominant_freq(audio, 24000), phone.port,
                                                                   phone.remote, phone.remote_from, bot.port_range())
    seg = A.tone_segments(audio, 24000, CALLER_HZ, tol_hz=15, min_dbfs=-35)
    assert seg.tone_seconds >= 0.9 * 2.0, seg
    assert A.band_share(audio, 24000, SPOOF_HZ) < 0.001
    _, cov = reply_coverage(res, 440)           # and the caller heard the model's reply
    assert cov.tone_seconds >= 0.9 * 2.0, cov
    [stats] = await _ended(bot, 1)
    drops = stats["rx_dropped"]
    # spoofed packets did reach the call's port before Asterisk's address was known (the window this is about)
    # and after; none of them fixed the payload type: Asterisk's packets were never dropped for it
    assert drops.get("source_unknown", 0) >= 1 and drops["foreign_source"] >= 1, stats
    assert drops["payload_type"] == 0, stats
    assert stats["rx_packets"] == stats["rx_accepted"] + sum(drops.values()), stats
    print(f"\n[e2e] RTP gate: {sent} spoofed PT-96 packets to ports {bot.port_range().start}-"
          f"{bot.port_range().stop - 1} before and during set-up; call's drops {drops}; model got "
          f"{seg.tone_seconds:.2f} s of the caller's {CALLER_HZ:g} Hz; caller heard {cov.tone_seconds:.2f} s of reply")
    assert (await leftovers(bot)) == ([], [], [])
