"""The Stasis application: reads ARI events, starts a `Call` per caller channel, routes events to calls.

Events for one call are delivered in order, synchronously, to that call's `on_ari_event`; nothing here
awaits between reading an event and routing it, so a slow call never stalls the others. Our own
externalMedia channels raise StasisStart too: they are recognised by the id the call registered before
creating them, or by the `UnicastRTP/` name of a leftover, and never become calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from .ari import AriClient, AriEvent, EventsConnected, EventsDisconnected
from .call import Call
from .config import Settings
from .media import PortPool, RtpMedia
from .model import ModelSession
from .tools import ToolRegistry

log = logging.getLogger("voiceai.app")

MEDIA_CHANNEL_PREFIXES = ("UnicastRTP/", "WebSocket/")


class VoiceAiApp:
    def __init__(self, settings: Settings, model_factory: Callable[[], ModelSession],
                 tools: ToolRegistry) -> None:
        self.settings = settings
        self.model_factory = model_factory
        self.tools = tools
        self.ari = AriClient(settings.ari_url, settings.ari_user,
                             settings.ari_password.get_secret_value(), settings.ari_app)
        self.pool = PortPool(settings.port_range)
        self.calls: dict[str, Call] = {}           # caller channel id -> call
        self._by_channel: dict[str, Call] = {}     # every channel/playback id a call owns -> call
        self._tasks: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()
        self.accepting = True
        self.total_calls = 0
        self.refused_calls = 0

    async def run(self, stop: asyncio.Event, grace: float = 10.0) -> None:
        """Serve calls until `stop` is set, then end every call and return."""
        await self.ari.open()
        reader = asyncio.create_task(self._read_events(), name="ari-events")
        try:
            await stop.wait()
            log.info("= stopping: no new calls, ending %d active call(s)", len(self.calls))
            self.accepting = False
            for call in list(self.calls.values()):
                call.end("app shutdown")
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=grace)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await self.ari.close()

    async def _read_events(self) -> None:
        async for ev in self.ari.events():
            if isinstance(ev, EventsConnected):
                self.ready.set()
            elif isinstance(ev, EventsDisconnected):
                self.ready.clear()
            else:
                try:
                    self.dispatch(ev)
                except Exception:  # one bad event must not stop the app
                    log.exception("! event %s could not be handled", ev.type)

    def dispatch(self, ev: AriEvent) -> None:
        if ev.playback is not None:
            owner = self._by_channel.get(ev.playback.id)
            if owner is not None:
                owner.on_ari_event(ev)
            return
        ch = ev.channel
        if ch is None:
            return
        owner = self._by_channel.get(ch.id)
        if owner is not None:
            owner.on_ari_event(ev)
        elif ev.type == "StasisStart" and not ch.name.startswith(MEDIA_CHANNEL_PREFIXES):
            self._start_call(ev)

    def _start_call(self, ev: AriEvent) -> None:
        ch = ev.channel
        assert ch is not None
        if not self.accepting or len(self.calls) >= self.settings.max_calls:
            self.refused_calls += 1
            log.warning("! call %s refused: %s", ch.id,
                        "shutting down" if not self.accepting else f"{len(self.calls)} calls active")
            self._spawn(self._refuse(ch.id))
            return
        self.total_calls += 1
        media = RtpMedia(bind_host=self.settings.rtp_bind, advertise_host=self.settings.rtp_host,
                         pool=self.pool, return_codec=self.settings.return_codec)
        call = Call(channel=ch, ari=self.ari, media=media, model=self.model_factory(), tools=self.tools,
                    settings=self.settings, bind=self._bind)
        self.calls[call.id] = call
        self._bind(call.id, call)
        self._spawn(self._run_call(call))

    def _bind(self, channel_id: str, call: Call) -> None:
        self._by_channel[channel_id] = call

    async def _run_call(self, call: Call) -> None:
        try:
            await call.run()
        finally:
            self.calls.pop(call.id, None)
            for cid in [c for c, owner in self._by_channel.items() if owner is call]:
                del self._by_channel[cid]

    async def _refuse(self, channel_id: str) -> None:
        try:
            await self.ari.hangup(channel_id, reason="busy")
        except Exception as exc:
            log.warning("! refusing %s failed: %s", channel_id, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
