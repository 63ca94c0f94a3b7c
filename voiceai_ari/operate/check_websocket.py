"""`voiceai-ari check`, media step for VOICEAI_TRANSPORT=websocket: the bot's own transport class dials a
real chan_websocket channel (externalMedia in the `<app>-check` Stasis app), and a tone played into it must
arrive as audio. That proves chan_websocket is loaded, Asterisk's HTTP server serves /media at the ARI
address, JSON control and MARK_MEDIA are there (Asterisk 22.8+), and the format is what we asked for."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
from websockets.exceptions import WebSocketException

from ..ari import AriClient, AriError, AriUnavailable
from ..config import Settings
from ..media.websocket_channel import MediaSocketRefused, WebSocketMedia
from .check import Step, check_app_events, play_tone_in_app

NAME = "media over chan_websocket"


async def media_websocket(settings: Settings) -> Step:
    check_app = f"{settings.ari_app}-check"
    em_id = f"voiceai-check-{uuid.uuid4().hex[:12]}"
    password = settings.ari_password.get_secret_value()
    media = WebSocketMedia(ari_url=settings.ari_url, fmt=settings.caller_format)
    got: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    media.on_audio = lambda pcm: got.done() or got.set_result(len(pcm))
    created = False
    try:
        async with check_app_events(settings, check_app) as (checker, ws):
            try:
                em = await checker.external_media(channel_id=em_id, **media.ari_params())
            except AriError as exc:
                return Step(NAME, False, f"externalMedia transport=websocket: HTTP {exc.status}: {exc.message}",
                            "load chan_websocket.so and res_http_websocket.so (Asterisk 22.8+, 20.18+ or 23.2+)")
            created = True
            try:
                await asyncio.wait_for(media.connect(dict(em.channelvars or {})), 3.0)
            except MediaSocketRefused as exc:
                return Step(NAME, False, f"{media.external_host}: HTTP {exc.status}",
                            "Asterisk's HTTP server must serve /media (chan_websocket loaded, http.conf "
                            "enabled=yes) at the VOICEAI_ARI_URL host and port")
            except RuntimeError as exc:
                return Step(NAME, False, str(exc), "upgrade Asterisk (22.8+, 20.18+ or 23.2+)")
            except (OSError, asyncio.TimeoutError, WebSocketException) as exc:
                return Step(NAME, False, f"{media.external_host}: {type(exc).__name__}: {exc}",
                            "http.conf: enabled=yes, and a bindaddr/bindport reachable from this host")
            await play_tone_in_app(checker, ws, em_id)
            try:
                size = await asyncio.wait_for(got, 3.0)
            except asyncio.TimeoutError:
                return Step(NAME, False, f"no audio on {media.external_host} in 3 s",
                            "see the Asterisk log (chan_websocket)")
            return Step(NAME, True, f"{media.external_host}: JSON control, {settings.caller_format} "
                                    f"({size}-byte frames to the model's 24 kHz)")
    except (AriError, AriUnavailable, OSError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return Step(NAME, False, f"{type(exc).__name__}: {exc}", "see the Asterisk log")
    finally:
        await media.close()
        if created:
            try:
                async with AriClient(settings.ari_url, settings.ari_user, password, check_app) as ari:
                    await ari.hangup(em_id)
            except (AriError, AriUnavailable, OSError):
                pass
