"""The caller of the end-to-end tests: sipp does the SIP signalling, a Python RTP endpoint (``Phone``, in
``phone.py``) is the phone's media.

    phone = Phone("g722")                       # binds 127.0.0.1:<even port> (+1 swallows RTCP)
    phone.play(analysis.tone(1000, 1.0))        # int16 LE 16 kHz; queued, sent once the call is up
    res = await place_call("300", phone=phone, call_seconds=3, workdir=tmp_path)
    pcm = res.audio_16k()                       # what the phone received, decoded

Signalling: ``tests/e2e/uac.xml`` with sipp ``-key`` parameters. The caller waits up to ``call_seconds``
for the far end's BYE and hangs up itself if none came (``CallResult.got_bye`` says which happened).
``info_dtmf=[(seconds after the answer, digit), ...]`` adds SIP INFO DTMF (``application/dtmf-relay``) to
the call: the scenario is then generated from uac.xml (``info_scenario``), the BYE wait is cut into pieces
with one INFO (each expecting 200) between them, and the far end's BYE is still answered at any point.
Every sipp instance gets its own SIP, media (-mp, unused but always opened) and control ports (-cp),
all on 127.0.0.1, so calls can run concurrently.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import analysis
from .phone import CODECS, DTMF_PT, HOST, PTIME, Phone, RtpPacket, _free_port_block, _handed_out

__all__ = ["CODECS", "DTMF_PT", "HOST", "PTIME", "CallResult", "InfoDtmf", "Phone", "RtpPacket", "SipEvent", "ari",
           "cleanup_workdir", "find_channel", "hangup_from_asterisk", "info_scenario", "place_call",
           "sipp_binary", "start_sandbox"]

UAC_XML = Path(__file__).with_name("uac.xml")


# ------------------------------------------------------------------------------------------------ result
@dataclass(frozen=True)
class SipEvent:
    t: float  # loop.time() scale (converted from sipp's wall-clock log)
    direction: str  # "sent" | "recv"
    line: str  # first line: "INVITE sip:...", "SIP/2.0 200 OK", "BYE sip:..."
    text: str = field(default="", repr=False)  # the whole message as logged (headers and body)

    def header(self, name: str) -> str | None:
        m = re.search(rf"^{re.escape(name)}\s*:\s*(.*?)\s*$", self.text, re.M | re.I)
        return m.group(1) if m else None


@dataclass(frozen=True)
class InfoDtmf:
    """One SIP INFO DTMF the caller sent (``place_call(info_dtmf=...)``) and the final answer to it."""
    digit: str
    t_sent: float  # loop.time(): first transmission
    cseq: int
    status: int | None  # final response code (200 expected), None if none came
    t_answered: float | None  # loop.time() of that response


@dataclass
class CallResult:
    ext: str
    call_id: str
    codec: str
    sipp_rc: int
    sipp_stdout: str
    sipp_errors: str
    sip_messages: str
    rx: list[tuple[float, RtpPacket]]
    tx_times: list[float]
    got_bye: bool  # True: the far end (Asterisk) hung up; False: the caller did (or the call failed)
    answer: tuple[str, int, int] | None  # SDP answer: (ip, port, first payload type)
    remote_from: str | None  # how the phone learnt where to send: "sdp" | "rtp" | None (never)
    sip_events: list[SipEvent] = field(default_factory=list)
    t_start: float = 0.0  # loop.time() when sipp was launched
    t_answered: float | None = None  # when the SDP answer reached the phone (just after 200 OK + ACK)
    t_end: float = 0.0  # when sipp exited
    timed_out: bool = False  # sipp had to be killed
    info_dtmf_requested: list[tuple[float, str]] = field(default_factory=list)  # place_call(info_dtmf=...)

    @property
    def pt(self) -> int:
        return CODECS[self.codec][0]

    @property
    def ok(self) -> bool:
        return self.sipp_rc == 0 and not self.timed_out

    def voice(self) -> list[RtpPacket]:
        return [p for _, p in self.rx if p.pt == self.pt]

    def rx_times(self) -> list[float]:
        """Arrival times (loop.time()) of the voice packets."""
        return [t for t, p in self.rx if p.pt == self.pt]

    def payload_types(self) -> collections.Counter:
        return collections.Counter(p.pt for _, p in self.rx)

    def audio(self, fill_gaps: bool = False) -> tuple[bytes, int]:
        """What the phone heard at the codec's own rate: (int16 LE, 16000) for G.722, (int16 LE, 8000) PCMA."""
        if self.codec == "g722":
            return analysis.decode_g722(self.voice(), self.pt, fill_gaps), 16000
        return analysis.decode_pcma(self.voice(), self.pt, fill_gaps), 8000

    def audio_16k(self, fill_gaps: bool = False) -> bytes:
        """What the phone heard as int16 LE 16 kHz. G.722: decoded with ONE decoder in sequence order.
        PCMA: A-law decoded at 8 kHz, then upsampled x2 (polyphase; nothing above 4 kHz, by nature)."""
        pcm, rate = self.audio(fill_gaps)
        if rate == 16000:
            return pcm
        return analysis.to_bytes(analysis.resample(pcm, rate, 16000))

    @property
    def dtmf_events(self) -> list[tuple[str, bool]]:
        """(digit, end bit) of every RFC 4733 packet received (End packets come in threes)."""
        return [analysis.dtmf_event(p.payload)[:2] for _, p in self.rx if p.pt == DTMF_PT and len(p.payload) >= 4]

    def dtmf_digits(self) -> str:
        """One digit per event (an event = one RTP timestamp with an End packet)."""
        seen, out = set(), []
        for _, p in self.rx:
            if p.pt == DTMF_PT and len(p.payload) >= 4:
                digit, end, _ = analysis.dtmf_event(p.payload)
                if end and (p.ssrc, p.ts) not in seen:
                    seen.add((p.ssrc, p.ts))
                    out.append(digit)
        return "".join(out)

    def sip_time(self, line_prefix: str, direction: str | None = None) -> float | None:
        for e in self.sip_events:
            if e.line.startswith(line_prefix) and (direction is None or e.direction == direction):
                return e.t
        return None

    def info_dtmf(self) -> list[InfoDtmf]:
        """The SIP INFO DTMF requests the caller sent (one per CSeq, retransmissions folded), in order,
        each with its final response, all read from sipp's message log."""
        out: list[InfoDtmf] = []
        for e in self.sip_events:
            cseq = (e.header("CSeq") or "").split()
            if e.direction != "sent" or not e.line.startswith("INFO ") or len(cseq) != 2 or \
                    any(i.cseq == int(cseq[0]) for i in out):
                continue
            m = re.search(r"^Signal\s*=\s*(\S+)", e.text, re.M)
            resp = next((r for r in self.sip_events if r.direction == "recv" and r.line.startswith("SIP/2.0 ")
                         and int(r.line.split()[1]) >= 200 and (r.header("CSeq") or "").split() == cseq), None)
            out.append(InfoDtmf(m.group(1) if m else "", e.t, int(cseq[0]),
                                None if resp is None else int(resp.line.split()[1]),
                                None if resp is None else resp.t))
        return out

    def summary(self) -> str:
        """One-paragraph description for assertion messages."""
        times = self.rx_times()
        first = f"{times[0] - self.t_start:.3f}s" if times else "-"
        return (f"call {self.ext} codec={self.codec} rc={self.sipp_rc} timed_out={self.timed_out} "
                f"got_bye={self.got_bye} answer={self.answer} remote_from={self.remote_from} "
                f"rx={dict(self.payload_types())} tx={len(self.tx_times)} first_rx={first} "
                f"dur={self.t_end - self.t_start:.3f}s sip={[(round(e.t - self.t_start, 3), e.direction, e.line[:24]) for e in self.sip_events]} "
                f"errors={self.sipp_errors.strip()[-400:]!r}")


_MSG_HEAD = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s*\n(\w+) message (sent|received)[^\n]*\n\s*\n([^\n]*)",
                       re.M)


def _parse_messages(text: str, wall_to_loop: float) -> list[SipEvent]:
    out = []
    heads = list(_MSG_HEAD.finditer(text))
    for m, nxt in zip(heads, [*heads[1:], None], strict=True):
        wall = time.mktime(time.strptime(m.group(1).split(".")[0], "%Y-%m-%d %H:%M:%S")) + float("0." + m.group(1).split(".")[1])
        body = text[m.start(4):nxt.start() if nxt is not None else len(text)].strip()
        direction = "sent" if m.group(3) == "sent" else "recv"
        out.append(SipEvent(wall + wall_to_loop, direction, m.group(4).strip(), body))
    return out


# ------------------------------------------------------------------------------------------------ SIP INFO DTMF
INFO_DIGITS = "0123456789*#ABCD"
_BYE_WAIT = '<recv request="BYE" ontimeout="caller_bye"/>'
_INFO = """
  <!-- INFO DTMF {n}: '{digit}' at {t:.3f} s after the answer -->
  <recv request="BYE" timeout="{wait_ms}" ontimeout="info_{n}" next="got_bye"/>
  <label id="info_{n}"/>
  <send retrans="500">
    <![CDATA[

      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal={digit}
      Duration={duration_ms}

    ]]>
  </send>
  <recv request="BYE" optional="true" next="got_bye"/>
  <recv response="200" timeout="5000"/>
"""


def info_scenario(info_dtmf: list[tuple[float, str]], call_seconds: float, duration_ms: int = 160) -> str:
    """uac.xml with SIP INFO DTMF: the single wait for the far end's BYE (up to -recv_timeout) becomes a wait
    until each INFO's time, the INFO (``application/dtmf-relay``, ``Signal=<digit>``, ``Duration=``; a
    response other than 200 fails the call), ..., then a wait until ``call_seconds`` after the answer. Each
    wait and each INFO transaction still takes the far end's BYE (jump to ``got_bye``: answer 200, done).
    Times are relative to the answer, each wait measured from the end of the previous INFO transaction, so
    the round trips (about a millisecond on loopback) add up."""
    xml = UAC_XML.read_text(encoding="iso-8859-1")
    if xml.count(_BYE_WAIT) != 1 or xml.count("CSeq: 2 BYE") != 1:
        raise RuntimeError("uac.xml changed: cannot find the BYE wait / the caller's BYE to generate INFO DTMF")
    blocks, prev = [], 0.0
    for n, (t, digit) in enumerate(info_dtmf):
        blocks.append(_INFO.format(n=n, digit=digit, t=t, wait_ms=max(1, round((t - prev) * 1000)),
                                   cseq=2 + n, duration_ms=duration_ms))
        prev = t
    last = max(1, round((call_seconds - prev) * 1000))
    blocks.append(f'\n  <recv request="BYE" timeout="{last}" ontimeout="caller_bye"/>\n  <label id="got_bye"/>')
    return xml.replace(_BYE_WAIT, "".join(blocks).strip()).replace("CSeq: 2 BYE", f"CSeq: {2 + len(info_dtmf)} BYE")


_REFER_DONE = """<label id="refer"/>
  <send>
    <![CDATA[

      SIP/2.0 202 Accepted
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      NOTIFY [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To:[$dialog_to]
      Call-ID: [call_id]
      CSeq: 3 NOTIFY
      Contact: sip:sipp@[local_ip]:[local_port]
      Event: refer
      Subscription-State: terminated;reason=noresource
      Max-Forwards: 70
      Content-Type: message/sipfrag;version=2.0
      Content-Length: [len]

      SIP/2.0 200 OK

    ]]>
  </send>
  <recv response="200" timeout="5000" next="caller_bye"/>

  <label id="caller_bye"/>"""


def refer_scenario(status: int) -> str:
    """uac.xml that answers any REFER with `status` and goes back to waiting for the BYE (sipp's
    ``optional="global"``: the REFER may come at any point; the wait restarts after it). 202: the transfer
    is accepted and done at once (NOTIFY with a 200 sipfrag), then the caller hangs up, as phones do."""
    if status != 202 and not 300 <= status <= 699:
        raise ValueError(f"refer_status must be 202 or a final non-2xx status, got {status}")
    xml = UAC_XML.read_text(encoding="iso-8859-1")
    if xml.count(_BYE_WAIT) != 1 or xml.count('<label id="caller_bye"/>') != 1 or xml.count("CSeq: 2 BYE") != 1:
        raise RuntimeError("uac.xml changed: cannot find the BYE wait to add the REFER answer")
    if status == 202:
        xml = xml.replace("CSeq: 2 BYE", "CSeq: 4 BYE")   # after the NOTIFY's 3
    answer = _REFER_DONE if status == 202 else f"""<label id="refer"/>
  <send next="wait_bye">
    <![CDATA[

      SIP/2.0 {status} Transfer Refused
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>

  <label id="caller_bye"/>"""
    if xml.count("[last_To:]") != 3 or xml.count('assign_to="m_all,ans_port,ans_pt"/>') != 1:
        raise RuntimeError("uac.xml changed: cannot keep the dialog's To header for the caller's BYE")
    xml = xml.replace(_BYE_WAIT, f'<recv request="REFER" optional="global" next="refer"/>\n  <label id="wait_bye"/>\n  {_BYE_WAIT}')
    # the caller's BYE must carry the dialog's To (with Asterisk's tag), not the REFER's ([last_To:])
    xml = xml.replace('assign_to="m_all,ans_port,ans_pt"/>', 'assign_to="m_all,ans_port,ans_pt"/>\n'
                      '      <ereg regexp=".*" search_in="hdr" header="To:" check_it="true" assign_to="dialog_to"/>')
    head, sep, tail = xml.partition('<label id="caller_bye"/>')
    xml = head + sep + tail.replace("[last_To:]", "To:[$dialog_to]", 1)
    return xml.replace('<label id="caller_bye"/>', answer)


def _check_info_dtmf(info_dtmf, call_seconds: float) -> list[tuple[float, str]]:
    out, prev = [], 0.0
    for item in info_dtmf:
        t, digit = item
        t = float(t)
        if not isinstance(digit, str) or len(digit) != 1 or digit.upper() not in INFO_DIGITS:
            raise ValueError(f"info_dtmf digit must be one of {INFO_DIGITS!r}, got {digit!r}")
        if not prev <= t <= call_seconds:
            raise ValueError(f"info_dtmf times must be ascending within 0..call_seconds ({call_seconds}), got {t}")
        out.append((t, digit.upper()))
        prev = t
    return out


# ------------------------------------------------------------------------------------------------ call
def sipp_binary() -> str | None:
    return shutil.which("sipp")


async def place_call(ext: str, *, phone: Phone, call_seconds: float, hangup: str = "caller",
                     codec: str | None = None, timeout: float = 60.0, workdir: Path,
                     server: str = "127.0.0.1:5060", call_id: str | None = None,
                     extra_args: tuple[str, ...] = (), info_dtmf: Sequence[tuple[float, str]] = (),
                     info_duration_ms: int = 160, refer_status: int | None = None,
                     scenario: Path | None = None) -> CallResult:
    """Call ``ext`` on ``server`` with sipp; the media is ``phone`` (started here if needed, stopped when
    the call ends). The call lasts at most ``call_seconds`` after the answer: if the far end has not sent
    BYE by then, the caller sends BYE. ``hangup`` states who is expected to end the call ("caller" or
    "remote"); it does not change the scenario, check ``result.got_bye``. ``call_id`` sets the SIP Call-ID
    (default: a fresh unique one, in ``result.call_id``); Asterisk shows it as ``CHANNEL(pjsip,call-id)``,
    which lets a test find the call's channel over ARI while the call runs. ``timeout`` bounds the whole
    call (sipp -timeout; the process is killed 5 s later if still alive). Files land in ``workdir``.

    ``info_dtmf``: ``[(seconds after the answer, digit), ...]``, ascending, within ``call_seconds``: the
    caller sends a SIP INFO (``application/dtmf-relay``, ``Signal=<digit>``, ``Duration=info_duration_ms``)
    for each at that time and requires 200 for it (else the call fails). The call otherwise runs as without
    them (a BYE from the far end is answered at any moment). ``result.info_dtmf()`` lists what was sent,
    when, and the answers; the messages are also in ``result.sip_events``.

    ``refer_status``: answer a SIP REFER (Asterisk's ARI redirect) with this final status, e.g. 405 as a
    trunk that does not do transfers, and stay in the call; or 202: take the transfer and hang up (not
    with ``info_dtmf``).

    ``scenario``: a sipp scenario to use instead of uac.xml (same keys), e.g. one that keeps the route set
    a proxy recorded (tests/e2e/workers.py ``proxy_scenario``)."""
    if hangup not in ("caller", "remote"):
        raise ValueError("hangup must be 'caller' or 'remote'")
    codec = codec or phone.codec
    if codec != phone.codec:
        raise ValueError(f"codec {codec!r} differs from the phone's {phone.codec!r}")
    info = _check_info_dtmf(info_dtmf, call_seconds)
    sipp = sipp_binary()
    if sipp is None:
        raise RuntimeError("sipp not found (apt-get install sip-tester)")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"call-{ext}-{phone.port}-{uuid.uuid4().hex[:8]}"
    call_id = call_id or f"{tag}@{HOST}"
    if "%" in call_id or not re.fullmatch(r"[\w.!%*+`'~@:-]+", call_id):
        raise ValueError(f"unusable Call-ID {call_id!r}")
    answer_file = workdir / f"{tag}.answer"
    msg_file, err_file, out_file = (workdir / f"{tag}.{s}" for s in ("messages.log", "errors.log", "stdout.log"))
    pt, codec_name, _, _ = CODECS[codec]
    scenario = scenario or UAC_XML
    if info and refer_status is not None:
        raise ValueError("refer_status and info_dtmf cannot be combined")
    if info:  # the same scenario with the BYE wait cut up by INFOs (uac.xml itself stays untouched)
        scenario = workdir / f"{tag}.uac_info.xml"
        scenario.write_text(info_scenario(info, call_seconds, info_duration_ms), encoding="iso-8859-1")
    if refer_status is not None:
        scenario = workdir / f"{tag}.uac_refer.xml"
        scenario.write_text(refer_scenario(refer_status), encoding="iso-8859-1")

    # ports: SIP, sipp's own media port and its +2 (video; both opened even when unused), control port
    sip_port, held_sip = _free_port_block((0,))
    mp, held_mp = _free_port_block((0, 1, 2, 3), even=True)
    cp, held_cp = _free_port_block((0,))
    cmd = [sipp, "-sf", str(scenario), "-s", ext, server,
           "-i", HOST, "-p", str(sip_port), "-mi", HOST, "-mp", str(mp), "-ci", HOST, "-cp", str(cp),
           "-m", "1", "-l", "1", "-nostdin", "-f", "3600", "-cid_str", call_id,
           "-recv_timeout", str(max(1, int(round(call_seconds * 1000)))),
           "-timeout", f"{max(1, int(math.ceil(timeout)))}s", "-timeout_error",
           "-key", "rtp_port", str(phone.port), "-key", "pt", str(pt), "-key", "codec_name", codec_name,
           "-key", "answer_file", str(answer_file),
           "-trace_msg", "-message_file", str(msg_file), "-trace_err", "-error_file", str(err_file),
           *extra_args]

    if not phone.started:
        await phone.start()
    loop = asyncio.get_running_loop()
    wall_to_loop = loop.time() - time.time()
    for s in held_sip + held_mp + held_cp:
        s.close()
    t_start = loop.time()
    with open(out_file, "wb") as out:
        proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                                                    stderr=asyncio.subprocess.STDOUT, cwd=workdir)
    answer = None
    t_answered = None
    timed_out = False
    wait = asyncio.create_task(proc.wait())
    try:
        deadline = t_start + timeout + 5
        while not wait.done():
            if answer is None and answer_file.exists():
                parts = answer_file.read_text().split()
                if len(parts) == 3:
                    answer = (parts[0], int(parts[1]), int(parts[2]))
                    t_answered = loop.time()
                    phone.set_remote((answer[0], answer[1]), "sdp")
            if loop.time() > deadline:
                timed_out = True
                proc.kill()
                break
            await asyncio.wait({wait}, timeout=0.005)
        rc = await wait
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await phone.stop()
        for p in (sip_port, mp, mp + 1, mp + 2, mp + 3, cp):
            _handed_out.discard(p)
    t_end = loop.time()

    def read(p: Path) -> str:
        return p.read_text(errors="replace") if p.exists() else ""

    if answer is None and answer_file.exists():
        parts = answer_file.read_text().split()
        if len(parts) == 3:
            answer = (parts[0], int(parts[1]), int(parts[2]))
    messages = read(msg_file)
    events = _parse_messages(messages, wall_to_loop)
    got_bye = any(e.direction == "recv" and e.line.startswith("BYE ") for e in events)
    return CallResult(ext=ext, call_id=call_id, codec=codec, sipp_rc=rc, sipp_stdout=read(out_file), sipp_errors=read(err_file),
                      sip_messages=messages, rx=list(phone.rx), tx_times=list(phone.tx_times), got_bye=got_bye,
                      answer=answer, remote_from=phone.remote_from, sip_events=events, t_start=t_start,
                      t_answered=t_answered, t_end=t_end, timed_out=timed_out, info_dtmf_requested=info)


def cleanup_workdir(workdir: Path) -> None:
    """Remove the files place_call left in ``workdir`` (answer/messages/errors/stdout)."""
    for p in Path(workdir).glob("call-*"):
        with contextlib.suppress(OSError):
            os.unlink(p)


# ------------------------------------------------------------------------------------------------ sandbox + ARI
REPO = Path(__file__).resolve().parents[2]
SANDBOX_SCRIPT = REPO / "scripts" / "asterisk-sandbox"
ARI_URL = "http://127.0.0.1:8088/ari"
ARI_USER, ARI_PASSWORD = "voiceai", "voiceai-secret"


def start_sandbox(timeout: float = 900.0) -> str:
    """``scripts/asterisk-sandbox start`` (idempotent: provisions once, then only checks/starts Asterisk).
    Root only. Returns the script's output; raises CalledProcessError on failure."""
    import subprocess

    done = subprocess.run([str(SANDBOX_SCRIPT), "start"], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    return done.stdout + done.stderr


def _ari_headers() -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{ARI_USER}:{ARI_PASSWORD}".encode()).decode()}


async def ari(method: str, path: str, **params) -> tuple[int, object]:
    """One ARI REST request: (status, JSON body or None)."""
    import aiohttp

    async with aiohttp.ClientSession(headers=_ari_headers()) as s:
        async with s.request(method, f"{ARI_URL}{path}", params=params or None) as r:
            body = await r.json(content_type=None) if r.content_length != 0 else None
            return r.status, body


async def find_channel(call_id: str) -> dict | None:
    """The PJSIP channel of the call whose SIP Call-ID is ``call_id`` (ARI channel JSON), or None."""
    status, chans = await ari("GET", "/channels")
    for c in chans or []:
        if not c.get("name", "").startswith("PJSIP/"):
            continue
        if c.get("protocol_id") == call_id:  # ARI shows the SIP Call-ID of PJSIP channels here
            return c
        st, v = await ari("GET", f"/channels/{c['id']}/variable", variable="CHANNEL(pjsip,call-id)")
        if st == 200 and isinstance(v, dict) and v.get("value") == call_id:
            return c
    return None


async def hangup_from_asterisk(call_id: str, wait: float = 5.0) -> bool:
    """Make Asterisk hang up the call (ARI DELETE of its channel; Asterisk then sends BYE). Polls up to
    ``wait`` seconds for the channel to appear. True if a channel was deleted."""
    loop = asyncio.get_running_loop()
    end = loop.time() + wait
    while loop.time() < end:
        c = await find_channel(call_id)
        if c is not None:
            status, _ = await ari("DELETE", f"/channels/{c['id']}")
            return status == 204
        await asyncio.sleep(0.05)
    return False
