"""The Stasis application: reads ARI events, starts a `Call` per caller channel, routes events to calls.

Events for one call are delivered in order, synchronously, to that call's `on_ari_event`; nothing here
awaits between reading an event and routing it, so a slow call never stalls the others. Our own
externalMedia channels raise StasisStart too: they are recognised by the id the call registered before
creating them, or by the `UnicastRTP/` name of a leftover, and never become calls.

Several instances may share one Asterisk under different app names: the resync after a (re)connect touches
only what belongs to this app (ids.py), and never what a call that starts while it runs has created.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from ..ari import AriClient, AriEvent, Channel, EventsConnected, EventsDisconnected
from .agents import AgentBook, CallAgent
from .call import Call
from .claims import Claims, stasis_delay_ms
from .ids import BRIDGE_ID_PREFIX, BRIDGE_NAME_PREFIX, EM_ID_PREFIX, owner_app
from ..config import Settings
from ..media.choice import media_factory
from ..media.transport import PortPool
from ..operate.events import EventHub, call_listener
from ..operate.metrics import Metrics
from ..providers.base import ModelSession
from .tools import ToolRegistry

log = logging.getLogger("voiceai.app")

MEDIA_CHANNEL_PREFIXES = ("UnicastRTP/", "WebSocket/")
RESYNC_SETTLE_S = 1.0   # s the resync waits before hanging up a caller nobody serves: its StasisStart may be
                        # on its way (Asterisk lists a channel in the app just before it sends the event)


class VoiceAiApp:
    def __init__(self, settings: Settings, model_factory: Callable[[], ModelSession],
                 tools: ToolRegistry, agents: AgentBook | None = None) -> None:
        self.settings = settings
        # the configured agents (call/agents.py); without a book: one, default, of these parts
        self.agents = agents if agents is not None else AgentBook.single(settings, model_factory, tools)
        self.calls_by_agent: Counter[str] = Counter()
        self.model_factory = model_factory
        self.tools = tools
        self.metrics = Metrics()
        self.events = EventHub()                   # live calls for the dashboard (operate/events.py)
        self.ari = AriClient(settings.ari_url, settings.ari_user,
                             settings.ari_password.get_secret_value(), settings.ari_app,
                             backoff_initial=0.1, backoff_max=2.0)
        self.pool = PortPool(settings.port_range)
        self._make_media = media_factory(settings)   # VOICEAI_TRANSPORT; refuses one not built here
        self.calls: dict[str, Call] = {}           # caller channel id -> call
        self._by_channel: dict[str, Call] = {}     # every channel/playback id a call owns -> call
        self._pending: dict[str, list[AriEvent]] = {}   # accepted caller -> its events while its agent is chosen
        self._closing = False
        self.originating: dict[str, float] = {}    # POST /calls channel id -> monotonic give-up time (ringing)
        self._tasks: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()
        self.accepting = True
        self.total_calls = 0
        self.refused_calls = 0
        self.orphans_cleaned = 0
        self._arrivals: list[set[str]] = []       # per running resync: channels whose StasisStart came meanwhile
        self.claims = Claims(self)                # StasisBroadcast offers (VOICEAI_BROADCAST)
        self.metrics.attach(self)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve calls until `stop` is set, then drain: no new calls, active calls get `drain_s` to finish,
        the rest are ended (every ARI resource deleted), and return."""
        await self.ari.open()
        reader = asyncio.create_task(self._read_events(), name="ari-events")
        try:
            await stop.wait()
            self.accepting = False
            drain = self.settings.drain_s
            log.info("= draining: no new calls; %d active call(s) get %.0f s to finish", len(self.calls), drain)
            if self.calls:
                await asyncio.wait([asyncio.ensure_future(self._all_calls_done())], timeout=drain)
            self._closing = True
            for call in list(self.calls.values()):
                call.end("app shutdown")
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=15.0)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await self.ari.close()

    async def _all_calls_done(self) -> None:
        while self.calls or self._pending:
            await asyncio.sleep(0.1)

    def slots_used(self) -> int:
        """Calls in progress, outbound calls still ringing and won claims not yet started: each holds one of
        VOICEAI_MAX_CALLS."""
        now = time.monotonic()
        for cid in [c for c, until in self.originating.items() if until < now]:
            del self.originating[cid]
        return len(self.calls) + len(self._pending) + len(self.originating) + self.claims.held()

    def stats(self) -> dict[str, int]:
        """Process-wide counters (SIGUSR1 logs them; the soak test reads them)."""
        try:
            fds = len(os.listdir("/proc/self/fd"))
            with open("/proc/self/status") as f:
                rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except OSError:
            fds = rss_kb = -1
        return {"active_calls": len(self.calls), "total_calls": self.total_calls,
                "refused_calls": self.refused_calls, "ports_in_use": self.pool.in_use,
                "owned_ids": len(self._by_channel), "tasks": len(asyncio.all_tasks()), "fds": fds,
                "rss_kb": rss_kb, "ari_reconnects": self.ari.reconnects, "orphans_cleaned": self.orphans_cleaned,
                **{f"offers_{k}": n for k, n in self.claims.counts.items()}}

    async def _read_events(self) -> None:
        async for ev in self.ari.events():
            if isinstance(ev, EventsConnected):
                self.ready.set()
                self._spawn(self._resync())
            elif isinstance(ev, EventsDisconnected):
                self.ready.clear()
            else:
                try:
                    self.dispatch(ev)
                except Exception:  # one bad event must not stop the app
                    log.exception("! event %s could not be handled", ev.type)

    def dispatch(self, ev: AriEvent) -> None:
        if ev.type == "CallBroadcast":
            self.claims.offer(ev)
            return
        if ev.type == "StasisStart" and ev.channel is not None:
            for arrived in self._arrivals:
                arrived.add(ev.channel.id)
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
        elif ch.id in self._pending:
            self._pending[ch.id].append(ev)    # given to the call once its agent is chosen
        elif ev.type == "StasisStart" and not ch.name.startswith(MEDIA_CHANNEL_PREFIXES):
            self._start_call(ev)
        elif ev.type == "ChannelDestroyed":
            self.originating.pop(ch.id, None)   # an outbound call that was never answered frees its slot
            self.claims.release(ch.id)

    async def _resync(self) -> None:
        """After (re)connecting: events were missed. End calls whose caller is gone, adopt callers that
        entered the app meanwhile, and delete what this app left behind (a previous run, a lost event).

        Only this app's resources are touched: an externalMedia channel or bridge whose id names this app,
        or a media channel in this app (GET /applications/{app}). Other instances on the same Asterisk keep
        theirs. Events keep flowing meanwhile: a call that starts after the listing is not in it, and a
        caller whose StasisStart arrives while this runs is left to that event."""
        arrived: set[str] = set()
        self._arrivals.append(arrived)
        try:
            await self._resync_once(arrived)
        finally:
            self._arrivals.remove(arrived)

    async def _resync_once(self, arrived: set[str]) -> None:
        app = self.settings.ari_app
        before = list(self.calls.values())        # only these can have been missing from the listing
        try:
            chans = await self.ari.channels()
            bridges = await self.ari.bridges()
            info = await self.ari.application()
        except Exception as exc:
            log.warning("! resync failed: %s", exc)
            return
        in_app, app_bridges = set(info.get("channel_ids", [])), set(info.get("bridge_ids", []))
        live = {c.id for c in chans}
        ended = adopted = 0
        cleaned0 = self.orphans_cleaned
        for call in before:
            if call.id not in live and not call.ended:
                ended += 1
                call.end("caller channel gone (found after ARI reconnect)")
        unserved = []
        for c in chans:
            if c.id in self._by_channel or c.id in arrived or c.id in self._pending:
                continue
            media, owner = c.name.startswith(MEDIA_CHANNEL_PREFIXES), owner_app(c.id, EM_ID_PREFIX)
            if owner is not None and owner != app:
                continue                          # another instance's, even if this app is subscribed to it
            if owner == app or (media and c.id in in_app):
                await self._clean(self.ari.hangup(c.id), f"externalMedia channel {c.id}")
            elif c.id in in_app and not media:
                if c.state == "Ring" and self.accepting:
                    adopted += 1
                    log.info("= adopting %s: it entered the app while events were down", c.id)
                    self._start_call(AriEvent(type="StasisStart", channel=c))
                else:
                    unserved.append(c.id)
        owned_bridges = {call.bridge_id for call in self.calls.values()}
        for b in bridges:
            owner = owner_app(b.id, BRIDGE_ID_PREFIX)
            if b.id in owned_bridges or (owner is not None and owner != app):
                continue
            if owner == app or (b.id in app_bridges and b.name.startswith(BRIDGE_NAME_PREFIX)):
                await self._clean(self.ari.delete_bridge(b.id), f"bridge {b.id}")
        if unserved:
            await asyncio.sleep(RESYNC_SETTLE_S)
            for cid in unserved:
                if cid not in self._by_channel and cid not in arrived:
                    await self._clean(self.ari.hangup(cid), f"caller channel {cid} left in the app")
        log.info("= resync done: %d call(s) ended, %d caller(s) adopted, %d orphan(s) cleaned",
                 ended, adopted, self.orphans_cleaned - cleaned0)

    async def _clean(self, aw: Coroutine[Any, Any, Any], what: str) -> None:
        try:
            if await aw is False:    # already gone (e.g. its call's teardown was quicker)
                return
            self.orphans_cleaned += 1
            log.warning("! cleaned up orphan %s", what)
        except Exception as exc:
            log.warning("! could not clean up %s: %s", what, exc)

    def _start_call(self, ev: AriEvent) -> None:
        ch = ev.channel
        assert ch is not None
        if ch.id in self._by_channel or ch.id in self._pending:
            return
        self.originating.pop(ch.id, None)       # an answered outbound call: its slot becomes the call's
        self.claims.release(ch.id)              # so does a claimed one's
        log.debug("= %s entered Stasis %s ms after its channel was created", ch.id, stasis_delay_ms(ev))
        if not self.accepting or self.slots_used() >= self.settings.max_calls:
            self.refused_calls += 1
            log.warning("! call %s refused: %s", ch.id,
                        "shutting down" if not self.accepting else f"{len(self.calls)} calls active")
            self._spawn(self._refuse(ch.id))
            return
        self.total_calls += 1
        self._pending[ch.id] = []              # holds its slot, and its events, while the agent is chosen
        self._spawn(self._open_call(ch, list(ev.args), time.monotonic()))

    async def _open_call(self, ch: Channel, args: list[str], t_start: float) -> None:
        """Choose the call's agent (Stasis argument, channel variables: call/agents.py), then run the call
        with that agent's settings, tools and model. The events that came meanwhile are handed over."""
        try:
            chosen = await self.agents.for_call(self.ari, ch.id, args, ch.channelvars)
        except Exception:   # never expected (for_call logs and decides): the call still gets an agent
            log.exception("! choosing the agent of %s failed; it gets the default agent", ch.id)
            default = self.agents.default
            chosen = CallAgent(default, default.settings, default.make_session)
        events = self._pending.pop(ch.id, [])
        log.debug("= %s: agent %s chosen in %.1f ms", ch.id, chosen.name, (time.monotonic() - t_start) * 1000)
        media = self._make_media(self.pool)   # VOICEAI_TRANSPORT, VOICEAI_CALLER_FORMAT (media/choice.py)
        call = Call(channel=ch, ari=self.ari, media=media, model=chosen.make_session(), tools=chosen.agent.tools,
                    settings=chosen.settings, bind=self._bind, metrics=self.metrics, agent=chosen)
        call.t_start = t_start                 # set-up time includes choosing the agent
        call.transcript.listener = call_listener(self.events, call.id)   # the dashboard's live view
        self.calls[call.id] = call
        self._bind(call.id, call)
        self.calls_by_agent[chosen.name] += 1
        for e in events:
            call.on_ari_event(e)
        if self._closing:
            call.end("app shutdown")
        await self._run_call(call)

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
        """Over capacity: busy (SIP 486, the phone plays its busy tone), or an announcement first."""
        try:
            if self.settings.busy_sound:
                await self.ari.answer(channel_id)
                await self.ari.play(channel_id, self.settings.busy_sound, f"voiceai-busy-{channel_id}")
                await asyncio.sleep(self.settings.busy_sound_s)
            await self.ari.hangup(channel_id, reason="busy")
        except Exception as exc:
            log.warning("! refusing %s failed: %s", channel_id, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
