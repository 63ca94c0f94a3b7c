"""One phone call, from StasisStart to teardown. Read `run()` top to bottom: it is the life of a call.

answer → media (UDP port, externalMedia channel, greeting, mixing bridge) → model (Realtime session) →
converse (audio, barge-in, tools, keypad, idle caller, failed responses: `conversation.py`) → teardown.
Whatever ends the call (caller hangup, a tool, model error, app shutdown), `_teardown` runs exactly once and
releases everything the call owns: the model WebSocket, the UDP port, the externalMedia channel and the
bridge (Asterisk keeps both until the app deletes them), tool tasks, the transcript file, and the caller's
channel if it is still ours.

The call is also the `ToolContext` its tools act through (hangup, send_dtmf, transfer).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ..ari import AriClient, AriError, AriEvent, AriUnavailable, Channel
from websockets.exceptions import WebSocketException

from ..operate.logs import call_agent, call_id
from ..media.transport import MediaTransport
from ..providers.base import ModelSession, ToolCall
from . import transfer
from .conversation import ConversationMixin, TurnGuard
from .ids import BRIDGE_ID_PREFIX, BRIDGE_NAME_PREFIX, EM_ID_PREFIX, new_id
from .tools import TransferDestination, TransferFailed, TransferNotPossible
from .recording import AudioTap, tap_call
from .transcript import CallLog

if TYPE_CHECKING:
    from ..config import Settings
    from .agents import CallAgent
    from ..operate.metrics import Metrics
    from .tools import ToolRegistry

log = logging.getLogger("voiceai.call")
T = TypeVar("T")

SETUP_TIMEOUT = 10.0      # s for each set-up step (ARI call, externalMedia StasisStart, model connect)
MODEL_CLOSE_TIMEOUT = 2.0 # s for the model's close handshake at teardown; the socket is dropped after it
PLAYBACK_TIMEOUT = 30.0   # s for an Asterisk sound (greeting, fallback)
FAREWELL_TIMEOUT = 30.0   # s to wait for the bot's last words before hangup/transfer
DTMF_DEBOUNCE = 0.6       # s: keys pressed in a burst reach the model as one item


class CallEnded(Exception):
    """Raised inside set-up when the call ended while a step was in flight."""


class Call(ConversationMixin):
    def __init__(self, *, channel: Channel, ari: AriClient, media: MediaTransport, model: ModelSession,
                 tools: ToolRegistry, settings: Settings, bind: Callable[[str, "Call"], None],
                 metrics: Metrics, agent: CallAgent | None = None) -> None:
        self.id = channel.id
        self.agent = agent.name if agent is not None else "default"   # kept for the call's life (reloads)
        self._agent_notes: dict[str, Any] = {}
        if agent is not None and agent.refused:
            self._agent_notes["agent_refused"] = agent.refused
        if agent is not None and agent.overrides:
            self._agent_notes["overrides"] = agent.overrides
        self.channel = channel
        self.ari, self.media, self.model, self.tools, self.settings = ari, media, model, tools, settings
        self.metrics = metrics
        self.usage: dict[str, int] = {}   # token totals of this call (response.done usage)
        self.cost_usd = 0.0
        self._speech_stopped_at: float | None = None
        self.guard = TurnGuard(settings.idle_prompts)   # idle prompts, failed responses (conversation.py)
        self._last_model_error = ""
        self._bind = bind
        self.log = log
        self.transcript = CallLog(settings.transcript_dir, self.id)
        self.tap: AudioTap | None = None
        self.em_id: str | None = None
        self.bridge_id: str | None = None
        self.state = "starting"
        self.end_reason = ""
        self.caller_released = False       # hung up, or handed back to the dialplan: not ours to hang up
        self._transfer_to = ""             # the target of the transfer under way (state "transferring")
        self._rejoined: asyncio.Event | None = None  # a redirect is under way: set when the caller is back
        self.started = time.time()
        self.t_start = time.monotonic()    # set-up time counts from here (the app sets it to StasisStart)
        self.setup_ms: float | None = None
        self._ended = asyncio.Event()
        self._em_ready = asyncio.Event()
        self._playbacks: dict[str, asyncio.Event] = {}
        self._response_idle = asyncio.Event()
        self._response_idle.set()
        self._pump: asyncio.Task[None] | None = None
        self._tool_tasks: set[asyncio.Task[None]] = set()
        self._dtmf: list[str] = []
        self._dtmf_timer: asyncio.TimerHandle | None = None
        self._torn_down = False

    # --- the life of a call ------------------------------------------------------------------------------
    async def run(self) -> None:
        call_id.set(self.id)   # every line logged for this call, by any task it starts, carries its id
        call_agent.set(self.agent)   # and its agent
        t0 = self.t_start
        self.transcript.write("call_start", channel=self.id, caller_name=self.channel.caller.name,
                              caller_number=self.channel.caller.number, agent=self.agent, **self._agent_notes)
        connect = asyncio.create_task(self.model.start(), name=f"model-connect-{self.id}")
        try:
            await self._start_media()      # answers once the media path is up: no first words lost
            # the session queues audio until it is connected: what the caller says meanwhile is kept
            self.tap = tap_call(self)   # level meters, and the recording if VOICEAI_RECORD_DIR is set
            self.media.on_audio = self.tap.caller
            try:
                await self._step(connect)
            except (OSError, ValueError, asyncio.TimeoutError, WebSocketException) as exc:
                await self._fallback(f"model unreachable at call start: {type(exc).__name__}: {exc}")
                return
            self._pump = asyncio.create_task(self._converse(), name=f"converse-{self.id}")
            self._pump.add_done_callback(self._pump_done)
            if self.settings.greeting == "model":
                self.model.request_response(self.settings.greeting_instructions or None)
            self.state = "talking"
            self.setup_ms = (time.monotonic() - t0) * 1000
            self.metrics.setup.observe(self.setup_ms / 1000)
            self.log.info("= call up in %.0f ms: %s <%s> -> agent %s, RTP %s", self.setup_ms,
                          self.channel.caller.name, self.channel.caller.number, self.agent,
                          self.media.external_host)
            await self._ended.wait()
        except CallEnded:
            pass
        except (AriError, AriUnavailable, OSError, RuntimeError, asyncio.TimeoutError) as exc:
            self.end(f"set-up failed: {type(exc).__name__}: {exc}")
        finally:
            if not connect.done():   # wait for it, or it may finish after teardown and leave a socket open
                connect.cancel()
                await asyncio.gather(connect, return_exceptions=True)
            await self._teardown()

    async def _start_media(self) -> None:
        """UDP port, externalMedia channel and bridge, then answer: the caller is heard from the first word.

        Ids of what Asterisk creates are chosen here, before each request: if the call ends while a request
        is in flight, teardown still knows what to delete."""
        await self.media.open()
        self.em_id = new_id(EM_ID_PREFIX, self.settings.ari_app)   # names the app: see ids.py
        self._bind(self.em_id, self)  # its StasisStart may arrive before the HTTP answer
        ari_params = getattr(self.media, "ari_params", None)
        if ari_params is not None:
            # chan_websocket: the bot dials the channel's /media socket, and only then does the channel
            # enter Stasis (waiting for its StasisStart first would deadlock: asterisk.md §8.5)
            em = await self._step(self.ari.external_media(channel_id=self.em_id, data=self.id, **ari_params()))
            await self._step(self.media.connect(dict(em.channelvars or {})))   # type: ignore[attr-defined]
        else:
            em = await self._step(self.ari.external_media(external_host=self.media.external_host,
                                                          fmt=self.media.external_format, channel_id=self.em_id,
                                                          data=self.id))
            host, port = await self._unicast_address(em)
            # before the bridge: Asterisk sends nothing until bridged, and the inbound gate accepts nothing
            # before it knows this address (a spoofer cannot fix its payload type)
            self.media.set_remote(host, port)
        await self._step(self._em_ready.wait())
        self.bridge_id = new_id(BRIDGE_ID_PREFIX, self.settings.ari_app)
        await self._step(self.ari.create_bridge("mixing", name=f"{BRIDGE_NAME_PREFIX}{self.id}",
                                                bridge_id=self.bridge_id))
        if self.settings.greeting == "sound":
            # Asterisk plays it to the caller before the caller joins the bridge (the model does not hear it)
            await self._answer()
            await self._play(self.settings.greeting_sound)
            await self._step(self.ari.add_channels(self.bridge_id, self.id, self.em_id))
        else:
            await self._step(self.ari.add_channels(self.bridge_id, self.id, self.em_id))
            await self._answer()

    async def _answer(self) -> None:
        if self.channel.state != "Up":    # an outbound call (POST /calls) is answered already
            await self._step(self.ari.answer(self.id))

    async def _play(self, media: str) -> None:
        """Asterisk plays `media` (ARI URIs, comma-separated) to the caller; returns when it has finished."""
        playback_id = f"voiceai-pb-{uuid.uuid4().hex[:16]}"
        done = self._playbacks[playback_id] = asyncio.Event()
        self._bind(playback_id, self)
        try:
            await self.ari.play(self.id, media, playback_id)
            await asyncio.wait_for(done.wait(), PLAYBACK_TIMEOUT)
        except asyncio.TimeoutError:
            self.log.warning("! %s did not finish in %.0f s", media, PLAYBACK_TIMEOUT)
        finally:
            self._playbacks.pop(playback_id, None)

    async def _fallback(self, reason: str) -> None:
        """The model cannot be reached: apologise (an Asterisk sound), then hang up or hand over to a human."""
        self.log.warning("! fallback (%s): %s", self.settings.fallback, reason)
        self.transcript.write("fallback", reason=reason, action=self.settings.fallback)
        self.state = "fallback"
        try:
            if self.settings.fallback_sound and not self.caller_released:
                await self._play(self.settings.fallback_sound)
            if self.settings.fallback == "transfer" and not self.caller_released:
                await self._hand_over(TransferDestination.parse("fallback", self.settings.fallback_target))
        except (AriError, AriUnavailable, ValueError, TransferFailed) as exc:
            self.log.warning("! fallback failed: %s", exc)
        self.end(f"fallback ({self.settings.fallback}): {reason}")

    async def _unicast_address(self, em: Channel) -> tuple[str, int]:
        """Where Asterisk listens for our RTP: UNICASTRTP_LOCAL_ADDRESS/PORT of the externalMedia channel."""
        v = dict(em.channelvars or {})
        for var in ("UNICASTRTP_LOCAL_ADDRESS", "UNICASTRTP_LOCAL_PORT"):
            if not v.get(var):
                got = await self._step(self.ari.request("GET", f"/channels/{self.em_id}/variable",
                                                        params={"variable": var}))
                v[var] = got["value"]
        return str(v["UNICASTRTP_LOCAL_ADDRESS"]), int(str(v["UNICASTRTP_LOCAL_PORT"]))

    # --- tools: the call is their ToolContext -------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        """Run work for this call (a tool, a control API action); teardown cancels what is left."""
        task = asyncio.create_task(coro, name=f"{what}-{self.id}")
        self._tool_tasks.add(task)
        task.add_done_callback(self._tool_tasks.discard)

    async def _run_tool(self, ev: ToolCall) -> None:
        result = await self.tools.execute(self, ev.name, ev.arguments)
        self.metrics.tool_called(ev.name, result.ok)
        self.transcript.write("tool_call", name=ev.name, call_id=ev.call_id, arguments=ev.arguments,
                              ok=result.ok, result=result.output)
        if not result.ends_call and not self.ended:
            self.model.send_tool_result(ev.call_id, result.output, respond=True)

    @property
    def call_id(self) -> str:
        return self.id

    @property
    def caller_number(self) -> str:
        return self.channel.caller.number

    async def hangup(self) -> None:
        await self._farewell()
        self.end("hung up by the bot")   # teardown hangs the caller up, with everything else

    async def send_dtmf(self, digits: str) -> None:
        await self.ari.send_dtmf(self.id, digits, self.settings.dtmf_duration_ms, self.settings.dtmf_gap_ms)

    async def transfer(self, destination: TransferDestination) -> None:
        """The bot's last words, then the hand-over. Returns once the caller has left. Raises TransferFailed
        (the caller is still with the bot, the conversation goes on) or TransferNotPossible (not talking)."""
        if self.state != "talking":
            raise TransferNotPossible(f"the call is {self.state}, not talking")
        self.state = "transferring"     # one transfer at a time
        try:
            await self._farewell()
            await self._hand_over(destination)
        finally:
            if self.state == "transferring":    # failed or cancelled, and the call goes on
                self.state = "talking"

    async def _hand_over(self, destination: TransferDestination) -> None:
        """Ask Asterisk, then wait for the one sign of success, the caller's StasisEnd (call/transfer.py). The
        bridge and media path stay up meanwhile: a failed transfer leaves the caller with the bot."""
        self.state, self._transfer_to = "transferring", destination.name  # StasisEnd now means: transferred
        t0, failure = time.monotonic(), None
        self._rejoined = asyncio.Event() if destination.endpoint else None
        try:
            await transfer.attempt(self.ari, self.id, destination, self.bridge_id, left=self._ended,
                                   back=self._rejoined, timeout=self.settings.transfer_timeout_s, spawn=self.spawn)
            if not self.caller_released:
                raise TransferNotPossible(f"the call ended first: {self.end_reason}")
        except TransferFailed as exc:
            failure = exc
            raise
        finally:   # also when teardown, which the caller's StasisEnd starts, cancels this task first
            self._rejoined = None
            if failure is not None or self.caller_released:
                transfer.record(self.log, self.transcript, destination.name, t0, failure)

    async def _farewell(self) -> None:
        """Let the bot finish speaking: its response done, its queued audio played out to Asterisk."""
        try:
            await asyncio.wait_for(self._response_idle.wait(), FAREWELL_TIMEOUT)
            await asyncio.wait_for(self.media.drained(), FAREWELL_TIMEOUT)
        except asyncio.TimeoutError:
            self.log.warning("! farewell not played out in %.0f s; going on", FAREWELL_TIMEOUT)

    def _pump_done(self, task: asyncio.Task[None]) -> None:
        """A call whose conversation loop died must not stay up in silence."""
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.log.error("! conversation failed: %r", exc)
            self.end(f"internal error: {type(exc).__name__}")

    # --- events from the app -----------------------------------------------------------------------------
    def on_ari_event(self, ev: AriEvent) -> None:
        if ev.type in ("PlaybackFinished", "PlaybackFailed") and ev.playback is not None:
            done = self._playbacks.get(ev.playback.id)
            if done is not None:
                done.set()
            return
        ch = ev.channel
        if ch is None:
            return
        if ch.id == self.em_id:
            if ev.type == "StasisStart":
                self._em_ready.set()
            elif ev.type in ("StasisEnd", "ChannelDestroyed") and not self._torn_down:
                self.end("externalMedia channel went away")
        elif ch.id == self.id:
            if ev.type in ("StasisEnd", "ChannelHangupRequest", "ChannelDestroyed"):
                if not self.caller_released:
                    self.caller_released = True
                    self.end(f"transferred to {self._transfer_to}" if self.state == "transferring"
                             else "caller hung up")
            elif ev.type == "ChannelDtmfReceived" and ev.digit:
                self._on_key(ev.digit)
            elif ev.type == "ChannelEnteredBridge" and self._rejoined is not None:
                self._rejoined.set()   # back from a redirect that did not take the caller

    def _on_key(self, digit: str) -> None:
        self.log.info("< caller pressed %s", digit)
        self.transcript.write("dtmf", digit=digit, direction="caller")
        if not self.settings.dtmf_to_model or self.state != "talking":
            return
        self._dtmf.append(digit)
        if self._dtmf_timer is not None:
            self._dtmf_timer.cancel()
        self._dtmf_timer = asyncio.get_running_loop().call_later(DTMF_DEBOUNCE, self._flush_keys)

    def _flush_keys(self) -> None:
        keys, self._dtmf, self._dtmf_timer = self._dtmf, [], None
        if keys and not self.ended:
            self.model.send_text(f"The caller pressed {' '.join(keys)} on the keypad.",
                                 respond=self.settings.dtmf_response)

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
        if self._dtmf_timer is not None:
            self._dtmf_timer.cancel()
        current = asyncio.current_task()
        pending = [t for t in (self._pump, *self._tool_tasks) if t is not None and t is not current]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # Asterisk's resources and the port first (the caller's side), the model last (it may be slow)
        stats = self.media.stats()
        await self._quietly("close media", self.media.close())
        if self.tap is not None:
            self.tap.close()
        if not self.caller_released:
            await self._quietly("hang up caller", self.ari.hangup(self.id))
        if self.em_id is not None:
            await self._quietly("delete externalMedia", self.ari.hangup(self.em_id))
        if self.bridge_id is not None:
            await self._quietly("delete bridge", self.ari.delete_bridge(self.bridge_id))
        await self._quietly("close model", self.model.close(), MODEL_CLOSE_TIMEOUT)
        self.metrics.call_ended({**stats, "model_reconnects": getattr(self.model, "reconnects", 0)})
        self.transcript.write("call_end", reason=self.end_reason, media=stats, usage=self.usage,
                              cost_usd=round(self.cost_usd, 6))
        await self._quietly("close transcript", self.transcript.aclose())   # call_end on disk before we return
        self.log.info("x call ended after %.1f s: %s; media %s", time.time() - self.started,
                      self.end_reason, stats)

    async def _quietly(self, what: str, aw: Awaitable[Any], timeout: float = SETUP_TIMEOUT) -> None:
        try:
            await asyncio.wait_for(aw, timeout)
        except Exception as exc:  # teardown must go on whatever one step does
            self.log.warning("! teardown: %s failed: %r", what, exc)
