"""One phone call, from StasisStart to teardown. Read `run()` top to bottom: it is the life of a call.

answer → media (UDP port, externalMedia channel, mixing bridge) → model (Realtime session) → converse →
teardown. Whatever ends the call (caller hangup, model error, app shutdown), `_teardown` runs exactly once
and releases everything the call owns: the model WebSocket, the UDP port, the externalMedia channel and the
bridge (Asterisk keeps both until the app deletes them), and the caller's channel if it is still up.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .ari import AriClient, AriError, AriEvent, AriUnavailable, Channel
from .media import MediaTransport
from .model import (AudioDelta, AudioDone, ModelClosed, ModelError, ModelSession, ResponseDone,
                    SessionReady, SpeechStarted, SpeechStopped, Transcript)

log = logging.getLogger("voiceai.call")
T = TypeVar("T")

SETUP_TIMEOUT = 10.0   # s for each set-up step (ARI call, externalMedia StasisStart, model connect)


class _CallLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every line of a call with its channel id."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['call']}] {msg}", kwargs  # type: ignore[index]


class CallEnded(Exception):
    """Raised inside set-up when the call ended while a step was in flight."""


class Call:
    def __init__(self, *, channel: Channel, ari: AriClient, media: MediaTransport, model: ModelSession,
                 bind_channel: Callable[[str, "Call"], None]) -> None:
        self.id = channel.id
        self.channel = channel
        self.ari, self.media, self.model = ari, media, model
        self._bind_channel = bind_channel
        self.log = _CallLog(log, {"call": self.id})
        self.em_id: str | None = None
        self.bridge_id: str | None = None
        self.state = "starting"
        self.end_reason = ""
        self.caller_gone = False
        self.started = time.time()
        self.setup_ms: float | None = None
        self._ended = asyncio.Event()
        self._em_ready = asyncio.Event()
        self._model_started = False
        self._pump: asyncio.Task[None] | None = None
        self._torn_down = False

    # --- the life of a call ------------------------------------------------------------------------------
    async def run(self) -> None:
        t0 = time.monotonic()
        connect = asyncio.create_task(self.model.start(), name=f"model-connect-{self.id}")
        try:
            await self._step(self.ari.answer(self.id))
            await self._start_media()
            await self._step(connect)
            self._model_started = True
            self.media.on_audio = self.model.send_audio
            self._pump = asyncio.create_task(self._converse(), name=f"converse-{self.id}")
            self.state = "talking"
            self.setup_ms = (time.monotonic() - t0) * 1000
            self.log.info("= call up in %.0f ms: %s <%s> -> model, RTP %s", self.setup_ms,
                          self.channel.caller.name, self.channel.caller.number, self.media.external_host)
            await self._ended.wait()
        except CallEnded:
            pass
        except (AriError, AriUnavailable, OSError, RuntimeError, asyncio.TimeoutError) as exc:
            self.end(f"set-up failed: {type(exc).__name__}: {exc}")
        finally:
            if not connect.done():
                connect.cancel()
            await self._teardown()

    async def _start_media(self) -> None:
        await self.media.open()
        self.em_id = f"voiceai-em-{uuid.uuid4().hex[:16]}"
        self._bind_channel(self.em_id, self)  # its StasisStart may arrive before the HTTP answer
        em = await self._step(self.ari.external_media(
            external_host=self.media.external_host, fmt="slin16", channel_id=self.em_id, data=self.id))
        host, port = await self._unicast_address(em)
        self.media.set_remote(host, port)
        await self._step(self._em_ready.wait())
        bridge = await self._step(self.ari.create_bridge("mixing", name=f"voiceai-{self.id}"))
        self.bridge_id = bridge.id
        await self._step(self.ari.add_channels(bridge.id, self.id, self.em_id))

    async def _unicast_address(self, em: Channel) -> tuple[str, int]:
        """Where Asterisk listens for our RTP: UNICASTRTP_LOCAL_ADDRESS/PORT of the externalMedia channel."""
        v = em.channelvars or {}
        host, port = v.get("UNICASTRTP_LOCAL_ADDRESS"), v.get("UNICASTRTP_LOCAL_PORT")
        if not host or not port:
            assert self.em_id is not None
            host = (await self._step(self.ari.request(
                "GET", f"/channels/{self.em_id}/variable",
                params={"variable": "UNICASTRTP_LOCAL_ADDRESS"})))["value"]
            port = (await self._step(self.ari.request(
                "GET", f"/channels/{self.em_id}/variable",
                params={"variable": "UNICASTRTP_LOCAL_PORT"})))["value"]
        return str(host), int(str(port))

    async def _converse(self) -> None:
        """Move model events to the media path until the model session ends."""
        model, media = self.model, self.media
        async for ev in model.events():
            if isinstance(ev, AudioDelta):
                media.play(ev.pcm, ev.item_id)
            elif isinstance(ev, AudioDone):
                media.end_item()
            elif isinstance(ev, SpeechStarted):
                item_id, played_ms = media.interrupt()
                model.interrupt(item_id, played_ms)
            elif isinstance(ev, SpeechStopped):
                self.log.debug("< caller stopped speaking")
            elif isinstance(ev, Transcript):
                self.log.info("%s: %s", ev.role, ev.text)
            elif isinstance(ev, ResponseDone):
                self.log.debug("< response %s (%s)", ev.status, ev.reason)
            elif isinstance(ev, SessionReady):
                self.log.info("= model session %s ready", ev.session_id)
            elif isinstance(ev, ModelError):
                self.log.warning("! model error %s: %s", ev.code, ev.message)
                if ev.fatal:
                    self.end(f"model error {ev.code}")
                    return
            elif isinstance(ev, ModelClosed):
                self.end(f"model session {ev.reason}")
                return

    # --- events from the app -----------------------------------------------------------------------------
    def on_ari_event(self, ev: AriEvent) -> None:
        ch = ev.channel
        if ch is None:
            return
        if ch.id == self.em_id:
            if ev.type == "StasisStart":
                self._em_ready.set()
            elif ev.type in ("StasisEnd", "ChannelDestroyed") and not self._torn_down:
                self.end("externalMedia channel went away")
        elif ch.id == self.id and ev.type in ("StasisEnd", "ChannelHangupRequest", "ChannelDestroyed"):
            self.caller_gone = True
            self.end("caller hung up")

    def end(self, reason: str) -> None:
        """Ask the call to end; the first reason wins. Safe to call from anywhere, any number of times."""
        if not self._ended.is_set():
            self.end_reason = reason
            self.state = "ending"
            self._ended.set()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def _step(self, aw: Awaitable[T]) -> T:
        """Await one set-up step, unless the call ends first (then raise CallEnded)."""
        task = aw if isinstance(aw, asyncio.Future) else asyncio.ensure_future(aw)
        ended = asyncio.create_task(self._ended.wait())
        try:
            done, _ = await asyncio.wait({task, ended}, timeout=SETUP_TIMEOUT,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if task in done:
            return task.result()
        task.cancel()
        if self._ended.is_set():
            raise CallEnded()
        raise asyncio.TimeoutError("set-up step timed out")

    # --- teardown: exactly once, whatever ended the call -------------------------------------------------
    async def _teardown(self) -> None:
        if self._torn_down:
            return
        self._torn_down = True
        self.end(self.end_reason or "ended")
        self.state = "ended"
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        await self._quietly("close model", self.model.close())
        stats = self.media.stats()
        await self._quietly("close media", self.media.close())
        if self.em_id is not None:
            await self._quietly("delete externalMedia", self.ari.hangup(self.em_id))
        if self.bridge_id is not None:
            await self._quietly("delete bridge", self.ari.delete_bridge(self.bridge_id))
        if not self.caller_gone:
            await self._quietly("hang up caller", self.ari.hangup(self.id))
        self.log.info("x call ended after %.1f s: %s; media %s", time.time() - self.started,
                      self.end_reason, stats)

    async def _quietly(self, what: str, aw: Awaitable[Any]) -> None:
        try:
            await asyncio.wait_for(aw, SETUP_TIMEOUT)
        except Exception as exc:  # teardown must go on whatever one step does
            self.log.warning("! teardown: %s failed: %s", what, exc)
