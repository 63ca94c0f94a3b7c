"""Helpers for tests with several StasisBroadcast workers: callers told apart by their tone, and what each
worker served, read from its log."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from . import analysis as A
from .caller import UAC_XML, CallResult, Phone, ari, place_call
from .conftest import log_lines

AMP = 5000                     # -16.3 dBFS
LEAD_S, TONE_S = 0.8, 1.0      # the caller waits (silence) while the call is set up, then speaks
FOREIGN_BW = 40.0


def freqs(n: int) -> list[float]:
    """n tones under 3.4 kHz, far enough apart to tell the callers apart (60 fit at 50 Hz steps)."""
    step = min(150.0, 2900.0 / max(n - 1, 1))
    return [400.0 + step * k for k in range(n)]


def worker_env(fake_url: str, app: str, ports: str, **extra: str) -> dict[str, str]:
    from .conftest import E2E_KEY
    return dict(OPENAI_API_KEY=E2E_KEY, VOICEAI_REALTIME_URL=fake_url, VOICEAI_ARI_APP=app,
                VOICEAI_BROADCAST="on", VOICEAI_RTP_PORTS=ports, VOICEAI_CONTROL_PORT="0", **extra)


KAMAILIO = "127.0.0.10:5060"          # scripts/cluster


def proxy_scenario(workdir) -> Path:
    """uac.xml with the route set of the 200 OK (Record-Route, kept by its rrs="true") in the ACK and BYE,
    so they go through the proxy that recorded the route, as a phone behind Kamailio sends them."""
    text = UAC_XML.read_text(encoding="iso-8859-1")
    for cseq in ("CSeq: 1 ACK", "CSeq: 2 BYE"):
        assert text.count(cseq) == 1, cseq
        text = text.replace(cseq, cseq + "\n      [routes]")
    out = Path(workdir) / "uac_proxy.xml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="iso-8859-1")
    return out


def tone_phone(freq: float) -> Phone:
    phone = Phone("g722")
    phone.play(A.silence(LEAD_S) + A.tone(freq, TONE_S, amplitude=AMP))   # then the phone sends silence
    return phone


async def tone_call(ext: str, freq: float, workdir, call_seconds: float = 4.5, **kw) -> CallResult:
    return await place_call(ext, phone=tone_phone(freq), call_seconds=call_seconds, workdir=workdir,
                            timeout=40, **kw)


@dataclass
class Served:
    ok: bool
    why: str


def heard_own_echo(res: CallResult, freq: float, others: list[float]) -> Served:
    """The caller was served by an echo model: it hears its own tone back, and nobody else's."""
    if not res.ok:
        return Served(False, f"{freq:g} Hz: {res.summary()}")
    pcm = res.audio_16k()
    cov = A.tone_segments(pcm, 16000, freq, tol_hz=15, min_dbfs=-35)
    if cov.tone_seconds < 0.8 * TONE_S:
        return Served(False, f"{freq:g} Hz: echo {cov}: {res.summary()}")
    for other in others:
        if other != freq and A.band_share(pcm, 16000, other, bw_hz=FOREIGN_BW) >= 0.01:
            return Served(False, f"caller {freq:g} Hz hears {other:g} Hz")
    return Served(True, "")


def sessions_are_a_bijection(fake, tones: list[float], rate: int = 24000) -> None:
    """Every model session got exactly one caller's tone, and every caller has exactly one session."""
    got = []
    for i, fs in enumerate(fake.sessions):
        audio = bytes(fs.audio)
        dom = A.dominant_freq(audio, rate)
        mine = min(tones, key=lambda f: abs(f - dom))
        assert abs(mine - dom) < 10, f"session {i}: dominant {dom:.1f} Hz is no caller's"
        for other in tones:
            if other != mine:
                share = A.band_share(audio, rate, other, bw_hz=FOREIGN_BW)
                assert share < 0.01, f"session of {mine:g} Hz hears caller {other:g} Hz: share {share:.4f}"
        got.append(mine)
    assert sorted(got) == sorted(tones), f"sessions {sorted(got)} vs callers {sorted(tones)}"


def calls_up(bot) -> int:
    return len(log_lines(bot, r"= call up in \d+ ms"))


async def wait_calls_up(bots, n: int, timeout: float = 5.0) -> int:
    """Wait until the workers `bots` have taken `n` calls between them (or `timeout` passed); that total."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while (up := sum(calls_up(b) for b in bots)) < n and loop.time() < end:
        await asyncio.sleep(0.05)
    return up


def stasis_delays(bot) -> list[float]:
    """Channel creation -> StasisStart of each call the bot took, in ms (Asterisk's stamps)."""
    return [float(m.group(1)) for m in log_lines(bot, r"entered Stasis ([\d.]+) ms after its channel was created")]


async def app_leftovers(apps: list[str], url: str = "http://127.0.0.1:8088/ari") -> tuple[list, list]:
    """Channels and bridges that still belong to any of ``apps``: callers in their Stasis, externalMedia
    channels and bridges whose id names them."""
    _, chans = await ari("GET", "/channels")
    _, bridges = await ari("GET", "/bridges")
    mine = lambda rid: any(rid.startswith((f"voiceai-em-{a}-", f"voiceai-br-{a}-")) for a in apps)  # noqa: E731
    left_ch = [c["id"] for c in chans if mine(c["id"]) or (
        c.get("dialplan", {}).get("app_name") in ("Stasis", "StasisBroadcast")
        and c["dialplan"].get("app_data", "").split(",")[0] in apps)]
    return left_ch, [b["id"] for b in bridges if mine(b["id"])]


async def wait_no_leftovers(apps: list[str], timeout: float = 5.0) -> tuple[list, list]:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        left = await app_leftovers(apps)
        if left == ([], []) or loop.time() > end:
            return left
        await asyncio.sleep(0.1)


def invite_to_200_ms(res: CallResult) -> float:
    t0, t1 = res.sip_time("INVITE", "sent"), res.sip_time("SIP/2.0 200", "recv")
    assert t0 is not None and t1 is not None, res.summary()
    return (t1 - t0) * 1000


def median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if s else float("nan")


# ------------------------------------------------------------------------------------------------ cluster
NODES = {"a": "127.0.0.11", "b": "127.0.0.12"}   # scripts/cluster: Asterisk A and B (ARI on :8088)


async def node_ari(ip: str, method: str, path: str, **params) -> tuple[int, object]:
    import aiohttp

    from .caller import _ari_headers
    async with aiohttp.ClientSession(headers=_ari_headers()) as s:
        async with s.request(method, f"http://{ip}:8088/ari{path}", params=params or None) as r:
            body = await r.json(content_type=None) if r.content_length != 0 else None
            return r.status, body


async def node_leftovers(ip: str, timeout: float = 5.0) -> tuple[list, list]:
    """Every channel and bridge still on a cluster node (nothing else runs on it), after up to ``timeout``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        _, chans = await node_ari(ip, "GET", "/channels")
        _, bridges = await node_ari(ip, "GET", "/bridges")
        left = ([c["id"] for c in chans], [b["id"] for b in bridges])
        if left == ([], []) or loop.time() > end:
            return left
        await asyncio.sleep(0.1)
