"""`voiceai-ari check`: is this setup able to carry a call? One ✓/✗ line per step, with the fix for each ✗.

The media step is the one that answers "why did my call have no audio": it asks Asterisk to send RTP to the
configured VOICEAI_RTP_HOST and port (a real externalMedia channel with a tone played into it) and
waits for a packet to arrive. Nothing here touches live calls: the test channel lives in its own Stasis app
(`<app>-check`), so a running bot ignores it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..ari import AriClient, AriError, AriUnavailable
from ..config import ConfigError, Settings, load_settings
from ..media.formats import caller_format

REQUIRED_MODULES = ("res_ari.so", "app_stasis.so", "res_pjsip.so")
# what each media path needs on the PBX (docs/existing-pbx.md): the channel driver, and the codecs Asterisk
# translates with (slin: codec_resample makes the caller's rate; G.722 is the return path; G.711 passthrough
# needs the law's codec to transcode callers that do not speak it)
TRANSPORT_MODULES = {"rtp": ("chan_rtp.so", "res_rtp_asterisk.so"),
                     "websocket": ("chan_websocket.so", "res_http_websocket.so")}
FORMAT_MODULES = {"slin24": ("codec_resample.so", "codec_g722.so"), "slin16": ("codec_resample.so", "codec_g722.so"),
                  "ulaw": ("codec_ulaw.so",), "alaw": ("codec_alaw.so",)}


@dataclass
class Step:
    name: str
    ok: bool
    detail: str
    fix: str = ""


class _Rtp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Future[tuple[bytes, tuple[str, int]]] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        if not self.got.done():
            self.got.set_result((data, addr))


@contextlib.asynccontextmanager
async def check_app_events(settings: Settings, check_app: str) -> AsyncIterator[tuple[AriClient, Any]]:
    """An ARI client for the `<app>-check` Stasis app and its events WebSocket (connecting registers the app)."""
    password = settings.ari_password.get_secret_value()
    checker = AriClient(settings.ari_url, settings.ari_user, password, check_app)
    async with checker, aiohttp.ClientSession() as s, s.ws_connect(
            checker.base_url.replace("http", "ws", 1) + "/ari/events", params={"app": check_app},
            headers={"Authorization": aiohttp.encode_basic_auth(settings.ari_user, password)}) as ws:
        yield checker, ws


async def play_tone_in_app(checker: AriClient, ws: Any, channel_id: str) -> None:
    """Play a 440 Hz tone into a channel once it is in the check app (media can be played only then)."""
    async with asyncio.timeout(3.0):
        async for msg in ws:
            if channel_id in msg.data and '"StasisStart"' in msg.data:
                break
    await checker.request("POST", f"/channels/{channel_id}/play", params={"media": "tone:440"})


async def run_checks(settings: Settings) -> list[Step]:
    media = (f"RTP {settings.rtp_host}:{settings.rtp_ports}" if settings.transport == "rtp"
             else f"websocket {settings.caller_format}")
    steps: list[Step] = [Step("configuration", True, f"app {settings.ari_app}, ARI {settings.ari_url}, {media}"),
                         agents_step(settings)]
    ari = AriClient(settings.ari_url, settings.ari_user, settings.ari_password.get_secret_value(), settings.ari_app)
    async with ari:
        try:
            info = await ari.info()
            steps.append(Step("ARI reachable, credentials accepted", True,
                              f"Asterisk {info.get('system', {}).get('version', '?')}"))
        except AriError as exc:
            steps.append(Step("ARI reachable, credentials accepted", False, f"HTTP {exc.status}: {exc.message}",
                              "check VOICEAI_ARI_USER / VOICEAI_ARI_PASSWORD against ari.conf"
                              if exc.status == 401 else "check VOICEAI_ARI_URL (it ends before /ari)"))
            return steps
        except AriUnavailable as exc:
            steps.append(Step("ARI reachable, credentials accepted", False, str(exc),
                              "start Asterisk; http.conf needs enabled=yes and a bindaddr/bindport this host reaches; "
                              "set VOICEAI_ARI_URL"))
            return steps
        steps.append(await _modules(ari, settings))
        steps.append(await _app(ari, settings))
        if settings.transport == "rtp":
            steps.append(await _media(settings))
        else:
            from .check_websocket import media_websocket
            steps.append(await media_websocket(settings))
    steps.append(await _model(settings))
    return steps


def agents_step(settings: Settings) -> Step:
    """The agents the dialplan can choose (VOICEAI_AGENTS_FILE), each validated as at start."""
    from ..call.agents import tool_registry
    from ..config.agents import read_agents
    try:
        agents = read_agents(settings)
        for name, s in agents.items():
            try:
                tool_registry(s)
            except ValueError as exc:
                raise ConfigError(f"agent {name!r}: tools: {exc}") from None
    except ConfigError as exc:
        return Step("agents", False, str(exc), "correct the agents file (docs/agents.md)")
    models = {"gemini-live": "gemini_model", "openai-live": "live_model"}
    listed = ", ".join(f"{n} ({s.provider} {getattr(s, models.get(s.provider, 'model'))}, voice "
                       f"{s.gemini_voice if s.provider == 'gemini-live' else s.voice})" for n, s in agents.items())
    return Step("agents", True, listed + (f" from {settings.agents_file}" if settings.agents_file else ""))


def required_modules(settings: Settings) -> list[str]:
    """What the configured call path needs loaded: the media path always, and for transfers, what the
    transfer code relies on (call/transfer.py): a dialplan target is checked with DIALPLAN_EXISTS()
    (func_dialplan), a TECH/resource target is a REFER (res_pjsip_refer)."""
    targets = list(settings.transfer_targets.values())
    if settings.fallback == "transfer":
        targets.append(settings.fallback_target)
    mods = list(REQUIRED_MODULES) + list(TRANSPORT_MODULES[settings.transport])
    mods += [m for m in FORMAT_MODULES[settings.caller_format] if settings.transport == "rtp" or "g722" not in m]
    if any("/" not in t for t in targets):
        mods.append("func_dialplan.so")
    if any(t.strip().upper().startswith("PJSIP/") for t in targets):
        mods.append("res_pjsip_refer.so")
    return mods


async def _modules(ari: AriClient, settings: Settings) -> Step:
    try:
        mods = {m.get("name") for m in await ari.request("GET", "/asterisk/modules")}
    except AriError as exc:
        return Step("Asterisk modules", False, str(exc), "res_ari_asterisk.so must be loaded")
    from ..config.agents import read_agents
    try:
        every = list(read_agents(settings).values())   # an agent's transfer targets need their modules too
    except ConfigError:
        every = [settings]
    required = list(dict.fromkeys(m for s in every for m in required_modules(s)))
    missing = [m for m in required if m not in mods]
    if missing:
        return Step("Asterisk modules", False, "not loaded: " + ", ".join(missing),
                    f"add `load = <module>` to modules.conf (VOICEAI_TRANSPORT={settings.transport} and "
                    f"VOICEAI_CALLER_FORMAT={settings.caller_format} need the channel driver and codecs listed in "
                    "docs/existing-pbx.md; chan_websocket needs Asterisk 22.8+; func_dialplan and res_pjsip_refer "
                    "serve transfers), then restart")
    return Step("Asterisk modules", True, ", ".join(required))


async def _app(ari: AriClient, settings: Settings) -> Step:
    try:
        app = await ari.application()
        bound = f"{len(app.get('channel_ids', []))} channel(s) in it"
        return Step("Stasis app", True, f"'{settings.ari_app}' registered ({bound})")
    except AriError as exc:
        if exc.status != 404:
            return Step("Stasis app", False, str(exc), "check ARI permissions (read_only = no)")
    return Step("Stasis app", True, f"'{settings.ari_app}' registrable (no bot connected now); the dialplan needs "
                                    f"Stasis({settings.ari_app})")


async def _media(settings: Settings) -> Step:
    """Asterisk → us: an externalMedia channel to VOICEAI_RTP_HOST:port with a tone played into it, in the
    configured caller format (its payload size is checked too)."""
    name = "RTP from Asterisk"
    if settings.transport != "rtp":
        return Step(name, True, f"not used: VOICEAI_TRANSPORT={settings.transport}")
    fmt = caller_format(settings.caller_format)
    loop = asyncio.get_running_loop()
    proto = _Rtp()
    transport = None
    for port in settings.port_range:
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=(settings.rtp_bind, port),
                                                               family=socket.AF_INET)
            break
        except OSError:
            continue
    if transport is None:
        return Step(name, False, f"no free UDP port in {settings.rtp_ports} on {settings.rtp_bind}",
                    "free the range or change VOICEAI_RTP_PORTS / VOICEAI_RTP_BIND")
    check_app = f"{settings.ari_app}-check"
    em_id = f"voiceai-check-{uuid.uuid4().hex[:12]}"
    try:
        host = (await loop.getaddrinfo(settings.rtp_host, None, family=socket.AF_INET))[0][4][0]
        async with check_app_events(settings, check_app) as (checker, ws):
            await checker.external_media(external_host=f"{host}:{port}", fmt=fmt.name, channel_id=em_id)
            await play_tone_in_app(checker, ws, em_id)
            try:
                data, src = await asyncio.wait_for(proto.got, 3.0)
            except asyncio.TimeoutError:
                return Step(name, False, f"no RTP reached {settings.rtp_bind}:{port} in 3 s "
                                         f"(Asterisk was told to send to {host}:{port})",
                            "VOICEAI_RTP_HOST must be an address of this machine that Asterisk can reach; "
                            "open UDP " + settings.rtp_ports + " in firewalls; in Docker publish/expose the range")
            finally:
                await checker.hangup(em_id)
        pt = data[1] & 0x7F if len(data) > 1 else -1
        if len(data) - 12 != fmt.payload_bytes or (fmt.payload_type is not None and pt != fmt.payload_type):
            return Step(name, False, f"{len(data)}-byte RTP (PT {pt}) from {src[0]}:{src[1]}: not {fmt.name} "
                                     f"({fmt.payload_bytes}-byte payloads" + (f", PT {fmt.payload_type})"
                                                                              if fmt.payload_type is not None else ")"),
                        f"this Asterisk does not send {fmt.name} as asked: see docs/existing-pbx.md")
        return Step(name, True,
                    f"{len(data)}-byte RTP (PT {pt}, {fmt.name}) from {src[0]}:{src[1]} to {host}:{port}")
    except (AriError, AriUnavailable, OSError, aiohttp.ClientError) as exc:
        return Step(name, False, f"{type(exc).__name__}: {exc}",
                    "externalMedia needs chan_rtp and res_ari_channels; see the Asterisk log")
    finally:
        transport.close()


async def _model(settings: Settings) -> Step:
    name = f"model endpoint ({settings.provider})"
    if settings.offline_demo:
        return Step(name, True, "offline demo model (no API key for the provider): the bot echoes callers")
    from ..providers.choice import choose_model
    choice = await choose_model(settings, [])
    session = choice.make()
    try:
        await asyncio.wait_for(session.start(), 10)
        return Step(name, True, f"{choice.url} model {choice.model} session {session.session_id}")
    except Exception as exc:  # every failure here is a line in the table, not a crash
        fix = {"gemini-live": "check GEMINI_API_KEY, VOICEAI_GEMINI_URL and VOICEAI_GEMINI_MODEL",
               "openai-live": "check OPENAI_API_KEY, VOICEAI_LIVE_URL and VOICEAI_LIVE_MODEL"}.get(
            settings.provider, "check OPENAI_API_KEY (or the credentials mode), VOICEAI_REALTIME_URL and VOICEAI_MODEL")
        return Step(name, False, f"{type(exc).__name__}: {exc}", fix + "; the host must reach it (proxy, firewall)")
    finally:
        await session.close()


def render(steps: list[Step]) -> str:
    lines = []
    for st in steps:
        lines.append(f"{'✓' if st.ok else '✗'} {st.name:<38} {st.detail}")
        if not st.ok and st.fix:
            lines.append(f"    fix: {st.fix}")
    return "\n".join(lines)


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(render([Step("configuration", False, str(exc), "correct that variable (see README)")]))
        return 1
    steps = asyncio.run(run_checks(settings))
    print(render(steps))
    return 0 if all(s.ok for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
