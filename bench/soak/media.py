"""What each soak call sends: a G.722 RTP pcap (a tone, then silence) and the sipp scenario that plays it."""

from __future__ import annotations

import struct
from pathlib import Path


def write_pcap(path: Path, seconds: float, *, tone_seconds: float = 0.8, freq: float = 1000.0,
               amp: int = 5000) -> int:
    """An Ethernet/IPv4/UDP/RTP pcap for sipp's play_pcap_audio: G.722 (PT 9, 20 ms, RTP clock 8 kHz),
    ``tone_seconds`` of a ``freq`` sine at ``amp`` (5000 = -16.3 dBFS), then silence up to ``seconds``.
    One encoder for the whole stream (G.722 is stateful). Returns the number of packets."""
    import G722
    import numpy as np

    rate, spp = 16000, 320
    n = max(1, int(round(seconds * 50)))
    t = np.arange(n * spp) / rate
    pcm = (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    pcm[int(tone_seconds * rate):] = 0
    enc = G722.G722(16000, 64000)

    def csum(b: bytes) -> int:
        if len(b) % 2:
            b += b"\0"
        s = sum(struct.unpack(f"!{len(b) // 2}H", b))
        s = (s >> 16) + (s & 0xFFFF)
        s += s >> 16
        return ~s & 0xFFFF

    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # DLT_EN10MB
        for k in range(n):
            payload = bytes(enc.encode(pcm[k * spp:(k + 1) * spp]))
            rtp = struct.pack("!BBHII", 0x80, 9 | (0x80 if k == 0 else 0), k, k * 160, 0x50A4_50A4) + payload
            udp = struct.pack("!HHHH", 6000, 5060, 8 + len(rtp), 0) + rtp
            iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), k & 0xFFFF, 0, 64, 17, 0,
                              bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
            iph = iph[:10] + struct.pack("!H", csum(iph)) + iph[12:]
            eth = b"\0" * 12 + b"\x08\x00" + iph + udp
            ts = k * 0.020
            f.write(struct.pack("<IIII", int(ts), int(round((ts % 1) * 1e6)) % 1_000_000, len(eth), len(eth)) + eth)
    return n


SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- soak caller (bench/soak/media.py): INVITE with a G.722 offer, play the pcap for the call's length, BYE.
     A BYE from the far end, or no 200 within the timeouts, fails the call. -->
<scenario name="voiceai soak uac">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: soak <sip:soak@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:soak@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=soak 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 9 101
      a=rtpmap:9 G722/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=ptime:20
      a=sendrecv

    ]]>
  </send>

  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true" timeout="{setup_timeout_ms}"/>

  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: soak <sip:soak@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:soak@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>

  <nop>
    <action>
      <exec play_pcap_audio="{pcap}"/>
    </action>
  </nop>
  <pause milliseconds="{call_ms}"/>

  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: soak <sip:soak@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:soak@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" timeout="10000"/>

  <ResponseTimeRepartition value="10, 20, 50, 100, 200, 500, 1000, 2000"/>
  <CallLengthRepartition value="1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000"/>
</scenario>
"""


def write_scenario(path: Path, pcap: Path, call_ms: int, setup_timeout_ms: int = 15000) -> None:
    path.write_text(SCENARIO.format(pcap=pcap, call_ms=call_ms, setup_timeout_ms=setup_timeout_ms),
                    encoding="iso-8859-1")
