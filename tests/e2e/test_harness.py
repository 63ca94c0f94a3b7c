"""The e2e harness proven against the real Asterisk sandbox (sipp signalling + the Python phone's media).

    .venv/bin/python -m pytest tests/e2e/test_harness.py -q -m e2e

The tests without the ``e2e`` mark check the analysis helpers offline (no root, no Asterisk).
Extensions of the sandbox dialplan (context from-caller): 200 Playback(demo-congrats), 300 Echo().
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import uuid
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from . import analysis as A
from .caller import (
    ARI_URL,
    CallResult,
    Phone,
    RtpPacket,
    _ari_headers,
    ari,
    find_channel,
    hangup_from_asterisk,
    info_scenario,
    place_call,
)

AMP = 5000  # every test tone: amplitude 5000 = -16.3 dBFS
AMP_DBFS = 20 * math.log10(AMP / 32768)


def _tone_span(pcm: bytes, rate: int, freq: float, tol: float = 20.0):
    cov = A.tone_segments(pcm, rate, freq, tol_hz=tol, min_dbfs=-40)
    assert cov.start_s is not None, f"{freq} Hz never heard"
    return cov


def _check_tone(res: CallResult, pcm: bytes, rate: int, freq: float, seconds: float, level_db: float = AMP_DBFS,
                level_tol: float = 1.5):
    cov = _tone_span(pcm, rate, freq)
    info = f"{freq} Hz: {cov} / {res.summary()}"
    assert cov.coverage >= 0.97, info
    assert abs(cov.tone_seconds - seconds) <= 0.06, info
    assert cov.longest_gap_ms <= 20, info
    a, b = cov.start_s + 0.1, cov.end_s - 0.1  # inner part, away from the edges
    f = A.dominant_freq(pcm, rate, a, b)
    assert abs(f - freq) <= 20, info + f" dominant={f}"
    lvl = A.tone_level_dbfs(pcm, rate, freq, start=a, end=b)
    assert abs(lvl - level_db) <= level_tol, info + f" level={lvl:.2f} dBFS"
    assert A.band_share(pcm, rate, freq, start=a, end=b) > 0.98, info
    return cov


def _check_stream(res: CallResult, call_seconds: float):
    """Both directions flowed all call long, paced at 20 ms."""
    assert res.ok, res.summary()
    times = res.rx_times()
    n_expected = call_seconds / 0.020
    assert len(times) >= n_expected - 5, res.summary()
    assert A.longest_gap_ms(times) < 60, res.summary()
    assert len(res.tx_times) >= n_expected - 5
    tx = A.jitter_stats_ms(res.tx_times)
    assert 19.5 < tx["median"] < 20.5 and tx["max"] < 40, tx
    # absolute schedule: no drift over the call
    assert abs((res.tx_times[-1] - res.tx_times[0]) - 0.020 * (len(res.tx_times) - 1)) < 0.010


# ------------------------------------------------------------------------------------------------ e2e
@pytest.mark.e2e
async def test_echo_g722_wideband(sandbox, tmp_path):
    """Echo() with a G.722 caller: 1 kHz and 6 kHz come back at full level, PT 9 only (no narrowbanding)."""
    phone = Phone("g722")
    phone.play(A.tone(1000, 2.0, amplitude=AMP) + A.silence(0.5) + A.tone(6000, 1.0, amplitude=AMP))
    res = await place_call("300", phone=phone, call_seconds=4.0, workdir=tmp_path)
    _check_stream(res, 4.0)
    assert not res.got_bye and res.sip_time("BYE", "sent") is not None, res.summary()
    assert res.answer is not None and res.answer[2] == 9 and res.remote_from == "sdp", res.summary()
    assert set(res.payload_types()) == {9}, res.summary()
    assert {len(p.payload) for p in res.voice()} == {160}
    pcm = res.audio_16k()
    c1 = _check_tone(res, pcm, 16000, 1000, 2.0)
    c6 = _check_tone(res, pcm, 16000, 6000, 1.0)
    # the 0.5 s pause between the tones came back as silence
    assert A.rms_dbfs(A.as_array(pcm)[int((c1.end_s + 0.05) * 16000):int((c6.start_s - 0.05) * 16000)]) < -60
    assert 2.45 <= c6.start_s - c1.start_s <= 2.55
    # Echo() returns each packet at once: the 1 kHz starts in the first packets received
    assert c1.start_s <= 0.04


@pytest.mark.e2e
async def test_echo_pcma(sandbox, tmp_path):
    """The PCMA variant: PT 8 both ways; 1 kHz comes back (8 kHz audio, upsampled by audio_16k())."""
    phone = Phone("pcma")
    phone.play(A.tone(1000, 2.0, amplitude=AMP))
    res = await place_call("300", phone=phone, call_seconds=3.0, workdir=tmp_path)
    _check_stream(res, 3.0)
    assert res.answer is not None and res.answer[2] == 8, res.summary()
    assert set(res.payload_types()) == {8}, res.summary()
    pcm8, rate = res.audio()
    assert rate == 8000
    _check_tone(res, pcm8, 8000, 1000, 2.0)
    _check_tone(res, res.audio_16k(), 16000, 1000, 2.0)


@pytest.mark.e2e
async def test_playback_200_then_caller_hangs_up(sandbox, tmp_path):
    """Extension 200 plays demo-congrats: the phone hears speech-like audio; the caller's BYE ends the call
    and Asterisk has no channel of it left."""
    phone = Phone("g722")
    res = await place_call("200", phone=phone, call_seconds=2.5, workdir=tmp_path)
    _check_stream(res, 2.5)
    assert not res.got_bye, res.summary()
    assert res.sip_time("BYE", "sent") is not None and 2.4 < res.sip_time("BYE", "sent") - res.sip_time("ACK", "sent") < 2.7
    pcm = res.audio_16k()
    ws = A.windows(pcm, 16000, 0.1)
    loud = [w for w in ws if w.dbfs > -40]
    assert len(loud) >= 0.5 * len(ws), [round(w.dbfs, 1) for w in ws]
    assert A.rms_dbfs(pcm) > -30
    assert len({round(w.freq, -1) for w in loud}) > 5  # speech: the dominant frequency moves around
    assert await find_channel(res.call_id) is None


@pytest.mark.e2e
async def test_two_concurrent_calls_hear_only_themselves(sandbox, tmp_path):
    """Two simultaneous calls (own SIP/media/control ports each): each phone hears only its own tone."""
    freqs = {"a": 1000.0, "b": 1500.0}
    phones = {k: Phone("g722") for k in freqs}
    for k, f in freqs.items():
        phones[k].play(A.tone(f, 2.0, amplitude=AMP))
    assert phones["a"].port != phones["b"].port
    results = dict(zip(freqs, await asyncio.gather(
        *(place_call("300", phone=phones[k], call_seconds=3.0, workdir=tmp_path / k) for k in freqs)), strict=True))
    for k, res in results.items():
        other = freqs["b" if k == "a" else "a"]
        _check_stream(res, 3.0)
        pcm = res.audio_16k()
        _check_tone(res, pcm, 16000, freqs[k], 2.0)
        assert A.tone_segments(pcm, 16000, other, tol_hz=30).windows_with_tone == 0, res.summary()
        assert A.band_share(pcm, 16000, other) < 1e-3
    # the two calls really overlapped
    ra, rb = results["a"], results["b"]
    assert min(ra.t_end, rb.t_end) - max(ra.t_answered, rb.t_answered) > 2.5
    assert ra.call_id != rb.call_id and ra.answer[1] != rb.answer[1]


@pytest.mark.e2e
async def test_remote_hangup_and_dtmf(sandbox, tmp_path):
    """hangup="remote": Asterisk ends the call (ARI DELETE of the channel, found by its SIP Call-ID) and the
    caller answers the BYE. Meanwhile RFC 4733 DTMF sent by the phone is echoed back by Echo() (not '#':
    that ends Echo(), and Asterisk hangs up by itself)."""
    phone = Phone("g722")
    phone.play(A.silence(0.3))
    phone.send_dtmf("59", duration_ms=100, gap_ms=100)
    call_id = "e2e-remote-hangup-test@127.0.0.1"
    call = asyncio.create_task(place_call("300", phone=phone, call_seconds=4.0, hangup="remote", workdir=tmp_path,
                                          call_id=call_id))
    await asyncio.sleep(1.2)
    assert await hangup_from_asterisk(call_id)
    res = await call
    assert res.ok and res.got_bye, res.summary()
    assert res.sip_time("BYE", "sent") is None
    assert 1.0 < res.sip_time("BYE", "recv") - res.t_start < 1.6, res.summary()
    assert res.dtmf_digits() == "59", (res.dtmf_events, res.summary())
    assert await find_channel(call_id) is None


class ChannelEvents:
    """ARI events of one caller channel that is not in Stasis (e.g. in Echo()): a probe app (not "voiceai")
    opens its events socket and subscribes to the channel, found by its SIP Call-ID."""

    def __init__(self) -> None:
        self.app = f"e2e-probe-{uuid.uuid4().hex[:8]}"  # own name: parallel runs must not replace each other
        self.events: list[tuple[float, dict]] = []  # (loop.time() at receipt, event)
        self.channel: dict | None = None

    async def __aenter__(self) -> ChannelEvents:
        import aiohttp

        self._session = aiohttp.ClientSession(headers=_ari_headers())
        url = ARI_URL.replace("http", "ws", 1) + f"/events?app={self.app}&subscribeAll=false"
        self._ws = await self._session.ws_connect(url)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        async for msg in self._ws:
            self.events.append((loop.time(), json.loads(msg.data)))

    async def subscribe(self, call_id: str, wait: float = 2.0) -> dict:
        loop = asyncio.get_running_loop()
        end = loop.time() + wait
        while (c := await find_channel(call_id)) is None:
            assert loop.time() < end, f"no channel with Call-ID {call_id}"
            await asyncio.sleep(0.02)
        status, _ = await ari("POST", f"/applications/{self.app}/subscription", eventSource=f"channel:{c['id']}")
        assert status == 200, status
        self.channel = c
        return c

    def dtmf(self) -> list[tuple[float, dict]]:
        assert self.channel is not None
        return [(t, e) for t, e in self.events if e.get("type") == "ChannelDtmfReceived"
                and e["channel"]["id"] == self.channel["id"]]

    async def __aexit__(self, *exc) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._session.close()


@pytest.mark.e2e
async def test_sip_info_dtmf(sandbox, tmp_path):
    """place_call(info_dtmf=...): sipp sends SIP INFO 5 and 7 (application/dtmf-relay) 0.5 s and 1.0 s after
    the answer and gets 200 for each; the call still lasts call_seconds. Asterisk decoded them: ARI reports
    ChannelDtmfReceived 5 and 7 on the caller's channel (probe app subscribed to it), and Echo() plays them
    back to the phone as RFC 4733 events (PT 101), after the RFC 4733 '3' the phone sent itself."""
    phone = Phone("g722")
    phone.send_dtmf("3", duration_ms=100)  # RFC 4733 from the phone, at the answer
    call_id = f"e2e-info-dtmf-{uuid.uuid4().hex[:8]}@127.0.0.1"
    async with ChannelEvents() as probe:
        call = asyncio.create_task(place_call("300", phone=phone, call_seconds=2.0, workdir=tmp_path,
                                              call_id=call_id, info_dtmf=[(0.5, "5"), (1.0, "7")]))
        await probe.subscribe(call_id)
        res = await call
        await asyncio.sleep(0.2)
    assert res.ok and not res.got_bye, res.summary()
    ack = res.sip_time("ACK", "sent")
    # the call length is unchanged: the caller's BYE goes out call_seconds after the answer, CSeq after the INFOs
    bye = next(e for e in res.sip_events if e.direction == "sent" and e.line.startswith("BYE "))
    assert 1.95 < bye.t - ack < 2.1 and bye.header("CSeq") == "4 BYE", res.summary()
    info = res.info_dtmf()
    assert [(i.digit, i.cseq, i.status) for i in info] == [("5", 2, 200), ("7", 3, 200)], res.summary()
    for i, t in zip(info, (0.5, 1.0), strict=True):
        assert abs(i.t_sent - ack - t) < 0.05 and 0 <= i.t_answered - i.t_sent < 0.1, (info, res.summary())
    assert res.info_dtmf_requested == [(0.5, "5"), (1.0, "7")]
    sent_info = [e for e in res.sip_events if e.direction == "sent" and e.line.startswith("INFO ")]
    assert sent_info[0].header("Content-Type") == "application/dtmf-relay"
    assert "Signal=5" in sent_info[0].text and "Duration=160" in sent_info[0].text
    # Asterisk: one ChannelDtmfReceived per INFO, each within 0.5 s of it (the end of the 160 ms digit)
    ari_dtmf = [(t, e["digit"]) for t, e in probe.dtmf() if e["digit"] in "57"]
    assert [d for _, d in ari_dtmf] == ["5", "7"], (probe.events, res.summary())
    for (t, _), i in zip(ari_dtmf, info, strict=True):
        assert 0 <= t - i.t_sent < 0.5, (ari_dtmf, info)
    # Echo(): the phone hears the three digits back as RFC 4733, 5 and 7 right after their INFOs
    assert res.dtmf_digits() == "357", (res.dtmf_events, res.summary())
    for i in info:
        first = next(t for t, p in res.rx if p.pt == 101 and A.dtmf_event(p.payload)[0] == i.digit)
        assert 0 <= first - i.t_sent < 0.1, (first - i.t_sent, i)


@pytest.mark.e2e
async def test_remote_bye_between_info_dtmf(sandbox, tmp_path):
    """Asterisk hangs up while the caller waits between two INFOs: the BYE is answered, the call ends there
    and the second INFO is never sent."""
    call_id = f"e2e-info-bye-{uuid.uuid4().hex[:8]}@127.0.0.1"
    call = asyncio.create_task(place_call("300", phone=Phone("g722"), call_seconds=4.0, hangup="remote",
                                          workdir=tmp_path, call_id=call_id, info_dtmf=[(0.3, "1"), (2.5, "2")]))
    await asyncio.sleep(1.0)
    assert await hangup_from_asterisk(call_id)
    res = await call
    assert res.ok and res.got_bye and res.sip_time("BYE", "sent") is None, res.summary()
    assert [(i.digit, i.status) for i in res.info_dtmf()] == [("1", 200)], res.summary()
    assert res.t_end - res.t_start < 2.0, res.summary()
    assert await find_channel(call_id) is None


# ------------------------------------------------------------------------------------------------ offline
def test_alaw_tables_match_audioop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    pcm = np.arange(-32768, 32768, dtype=np.int16).astype("<i2").tobytes()
    assert A.alaw_encode(pcm) == audioop.lin2alaw(pcm, 2)
    codes = bytes(range(256))
    assert A.alaw_decode(codes).astype("<i2").tobytes() == audioop.alaw2lin(codes, 2)


def test_dominant_freq_and_levels():
    for f in (300.0, 1000.0, 1500.0, 6000.0, 7000.0):
        pcm = A.tone(f, 0.02, amplitude=AMP)  # one 20 ms window
        assert abs(A.dominant_freq(pcm, 16000) - f) < 5
    pcm = A.tone(1000, 1.0, amplitude=AMP)
    assert abs(A.rms_dbfs(pcm) - AMP_DBFS) < 0.05
    mix = A.to_bytes(A.as_array(pcm) + A.as_array(A.tone(5000, 1.0, amplitude=AMP)))
    assert abs(A.tone_level_dbfs(mix, 16000, 5000) - AMP_DBFS) < 0.1
    assert A.dominant_freq(A.silence(0.1), 16000) == 0.0


def test_tone_segments_coverage_and_gap():
    pcm = A.silence(0.2) + A.tone(1000, 0.5) + A.silence(0.1) + A.tone(1000, 0.4) + A.tone(2000, 0.3)
    cov = A.tone_segments(pcm, 16000, 1000)
    assert (cov.start_s, round(cov.end_s, 3)) == (0.2, 1.2)
    assert cov.longest_gap_ms == pytest.approx(100)
    assert cov.coverage == pytest.approx(45 / 50)
    assert A.tone_segments(pcm, 16000, 3000).start_s is None
    assert A.longest_gap_ms([0.0, 0.02, 0.04, 0.1, 0.12]) == pytest.approx(60)


def test_g722_decode_in_sequence_order_with_wrap():
    import G722

    enc = G722.G722(16000, 64000)
    pcm = A.as_array(A.tone(1000, 0.2, amplitude=AMP)).astype(np.int16)
    pkts = [RtpPacket(9, (65530 + i) & 0xFFFF, 160 * i, i == 0, 7, bytes(enc.encode(pcm[i * 320:(i + 1) * 320])))
            for i in range(10)]
    shuffled = [pkts[i] for i in (0, 2, 1, 3, 4, 6, 5, 7, 9, 8)]
    assert A.in_sequence_order(shuffled) == pkts
    out = A.decode_g722(shuffled)
    assert out == A.decode_g722(pkts) and len(out) == 2 * 3200
    assert abs(A.dominant_freq(out, 16000, 0.02) - 1000) < 5
    gappy = A.decode_g722(pkts[:3] + pkts[5:], fill_gaps=True)
    assert len(gappy) == 2 * 3200


def test_rtp_packet_roundtrip():
    p = RtpPacket(9, 65535, 2**32 - 160, True, 0xDEADBEEF, b"\x01" * 160)
    assert RtpPacket.parse(p.pack()) == p
    assert RtpPacket.parse(b"\x00" * 8) is None


def test_harness_ports_stay_clear_of_the_kernels_and_the_bots_ranges():
    """Every UDP port the harness hands out (phones, sipp) is in its own block: never one the kernel may give
    a random socket, never in a bot's VOICEAI_RTP_PORTS (where test_rtp_gate's spoofer sends), and a port
    another process holds is skipped."""
    from . import phone as P
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        eph_lo, eph_hi = map(int, f.read().split())
    taken_port = P.HARNESS_PORTS.start + P._cursor[0] % len(P.HARNESS_PORTS)   # where the next search starts
    taken = P._bind_udp(taken_port)
    got = []
    try:
        for _ in range(300):
            base, held = P._free_port_block((0, 1, 2, 3), even=True)
            got += [base + o for o in range(4)]
            for s in held:
                s.close()
            P._handed_out.difference_update(base + o for o in range(4))
    finally:
        if taken is not None:
            taken.close()
    assert all(p in P.HARNESS_PORTS and not eph_lo <= p <= eph_hi and not 40000 <= p <= 47999 for p in got)
    assert taken is None or taken_port not in got
    assert len(set(got)) == len(got)          # 1200 ports handed out in a row, none twice


async def test_a_phone_takes_its_far_end_only_from_an_offered_payload_type():
    """Before the SDP answer the phone starts on the first RTP it gets, but only in a payload type it offered:
    a stranger's PT 96 does not become the far end (the caller's voice would go to the stranger)."""
    phone = Phone("g722")
    await phone.start()
    stranger, far_end = _udp_socket(), _udp_socket()
    try:
        stranger.sendto(RtpPacket(96, 1, 0, False, 7, b"\0" * 960).pack(), ("127.0.0.1", phone.port))
        await asyncio.sleep(0.1)
        assert phone.remote is None and len(phone.rx) == 1
        far_end.sendto(RtpPacket(9, 1, 0, False, 8, b"\0" * 160).pack(), ("127.0.0.1", phone.port))
        for _ in range(100):
            if phone.remote is not None:
                break
            await asyncio.sleep(0.01)
        assert (phone.remote, phone.remote_from) == (far_end.getsockname(), "rtp")
    finally:
        await phone.stop()
        stranger.close()
        far_end.close()


def _udp_socket():
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def test_info_scenario_is_uac_xml_cut_by_infos(tmp_path):
    """The generated scenario: uac.xml's single BYE wait replaced by wait/INFO/200 blocks (each wait also
    takes a BYE), the caller's BYE with the next CSeq; everything else as in uac.xml."""
    xml = info_scenario([(0.5, "5"), (1.25, "#")], call_seconds=3.0, duration_ms=200)
    root = ET.fromstring(xml.encode("iso-8859-1"))
    steps = [(el.tag, el.get("request") or el.get("response"), el.get("timeout"), el.get("ontimeout"),
              el.get("next"), el.get("optional")) for el in root if el.tag in ("recv", "send", "label")]
    i = next(n for n, s in enumerate(steps) if s[3] == "info_0")
    assert steps[i:i + 13] == [
        ("recv", "BYE", "500", "info_0", "got_bye", None), ("label", None, None, None, None, None),
        ("send", None, None, None, None, None), ("recv", "BYE", None, None, "got_bye", "true"),
        ("recv", "200", "5000", None, None, None),
        ("recv", "BYE", "750", "info_1", "got_bye", None), ("label", None, None, None, None, None),
        ("send", None, None, None, None, None), ("recv", "BYE", None, None, "got_bye", "true"),
        ("recv", "200", "5000", None, None, None),
        ("recv", "BYE", "1750", "caller_bye", None, None), ("label", None, None, None, None, None),
        ("send", None, None, None, "done", None)]
    infos = [el.text for el in root.iter("send") if el.text and "INFO [next_url]" in el.text]
    assert len(infos) == 2 and "CSeq: 2 INFO" in infos[0] and "CSeq: 3 INFO" in infos[1]
    assert "Signal=5" in infos[0] and "Signal=#" in infos[1] and "Duration=200" in infos[1]
    assert "application/dtmf-relay" in infos[0]
    assert "CSeq: 4 BYE" in xml and "CSeq: 2 BYE" not in xml
    labels = [el.get("id") for el in root.iter("label")]
    assert labels == ["info_0", "info_1", "got_bye", "caller_bye", "done"]


async def test_place_call_checks_info_dtmf(tmp_path):
    phone = Phone("g722")
    try:
        for bad in ([(0.5, "x")], [(1.0, "1"), (0.5, "2")], [(5.0, "1")], [(-1.0, "1")], [(0.5, "12")]):
            with pytest.raises(ValueError, match="info_dtmf"):
                await place_call("300", phone=phone, call_seconds=2.0, workdir=tmp_path, info_dtmf=bad)
    finally:
        await phone.stop()
