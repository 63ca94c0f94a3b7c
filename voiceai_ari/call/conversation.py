"""The model's side of a call: a mixin of `Call` that moves model events to the media path, the tools and
the transcript, and decides what happens when the caller goes quiet or the model fails.

- Caller inactivity: with `VOICEAI_IDLE_TIMEOUT_MS` the provider reports `CallerIdle` after that much silence
  following the bot's last words. The Realtime server then answers by itself (its `idle_timeout_ms`
  behaviour); the call replaces that answer with its own instructions (`respond_instead`), so the caller
  hears one prompt, worded as configured, not two. After `VOICEAI_IDLE_PROMPTS` prompts the bot says
  goodbye, and once that is played out the call ends with the reason "caller inactive". Any speech from
  the caller starts the count again.
- A response that fails (`response.done` with status "failed": quota, rate limit, server error) is a model
  error like an `error` event: counted, logged, in the transcript; a fatal code falls back (apology sound,
  hangup or transfer). Otherwise the bot apologises once (one response with instructions, never for the
  apology itself), and after `MAX_FAILED_IN_ROW` failed responses in a row the call falls back.

`TurnGuard` holds those rules without I/O; `usage_cost` prices a response's token usage.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from ..providers.base import (AudioDelta, AudioDone, CallerIdle, ModelClosed, ModelError, ModelReconnected,
                              ResponseDone, SessionReady, SpeechStarted, SpeechStopped, ToolCall, Transcript,
                              UsageUpdate)

if TYPE_CHECKING:
    from ..config import Settings
    from .call import Call

MAX_FAILED_IN_ROW = 3   # failed responses in a row after which the call falls back (and /readyz says so)
APOLOGY = ("Your last answer failed to reach the caller because of a technical problem. Apologise in one short "
           "sentence and ask the caller to say that again.")


class TurnGuard:
    """Per call, no I/O: how many idle prompts were made, and how many responses failed in a row."""

    def __init__(self, idle_prompts: int, max_failed: int = MAX_FAILED_IN_ROW) -> None:
        self.idle_prompts, self.max_failed = idle_prompts, max_failed
        self.idle_count = 0
        self.failed_in_row = 0
        self.apologised = False   # an apology was asked for since the last good response or caller turn
        self.saying_goodbye = False

    def caller_spoke(self) -> None:
        self.idle_count = 0
        self.apologised = False
        self.saying_goodbye = False   # the caller is back: the call goes on

    def caller_idle(self) -> Literal["prompt", "goodbye"] | None:
        """One more idle timeout: prompt the caller, or (after `idle_prompts`) say goodbye; None once leaving."""
        if self.saying_goodbye:
            return None
        self.idle_count += 1
        if self.idle_count <= self.idle_prompts:
            return "prompt"
        self.saying_goodbye = True
        return "goodbye"

    def response_done(self, status: str) -> Literal["apologise", "fallback"] | None:
        if status == "completed":
            self.failed_in_row, self.apologised = 0, False
            return None
        if status != "failed":
            return None
        self.failed_in_row += 1
        if self.failed_in_row >= self.max_failed:
            return "fallback"
        if self.apologised:
            return None      # the apology itself failed, or the turn it was for: do not loop
        self.apologised = True
        return "apologise"


PRICE_FIELDS = {"audio_in": "price_audio_in", "cached_audio_in": "price_cached_audio_in",
                "text_in": "price_text_in", "cached_text_in": "price_cached_text_in",
                "audio_out": "price_audio_out", "text_out": "price_text_out"}


def usage_cost(usage: dict[str, Any], settings: Settings) -> tuple[dict[str, int], float]:
    """Token counts of one response by price class, and their cost in USD at the configured prices.

    `input_token_details.text_tokens` / `audio_tokens` include the cached ones; `cached_tokens_details`
    says how many of each were cached (billed at the cached price). Without that breakdown, `cached_tokens`
    is split in proportion to the text and audio input."""
    d_in, d_out = usage.get("input_token_details") or {}, usage.get("output_token_details") or {}
    audio_in, text_in = int(d_in.get("audio_tokens") or 0), int(d_in.get("text_tokens") or 0)
    cached = d_in.get("cached_tokens_details")
    if isinstance(cached, dict):
        c_audio, c_text = int(cached.get("audio_tokens") or 0), int(cached.get("text_tokens") or 0)
    else:
        total_cached = int(d_in.get("cached_tokens") or 0)
        c_audio = total_cached * audio_in // (audio_in + text_in) if audio_in + text_in else 0
        c_text = total_cached - c_audio
    c_audio, c_text = min(max(c_audio, 0), audio_in), min(max(c_text, 0), text_in)
    counts = {"audio_in": audio_in - c_audio, "cached_audio_in": c_audio,
              "text_in": text_in - c_text, "cached_text_in": c_text,
              "audio_out": int(d_out.get("audio_tokens") or 0), "text_out": int(d_out.get("text_tokens") or 0)}
    cost = sum(n * getattr(settings, PRICE_FIELDS[k]) for k, n in counts.items()) / 1e6
    return counts, cost


class ConversationMixin:
    """`Call._converse` and what it decides; see the module docstring."""

    async def _converse(self: Call) -> None:
        """Move model events to the media path, the tools and the transcript until the session ends."""
        model, media, loop = self.model, self.media, asyncio.get_running_loop()
        async for ev in model.events():
            if isinstance(ev, AudioDelta):
                self._response_idle.clear()
                media.play(ev.pcm, ev.item_id)
                if self._speech_stopped_at is not None:
                    self.metrics.turn.observe(loop.time() - self._speech_stopped_at)
                    self._speech_stopped_at = None
                # let other calls' packets and clock ticks run between buffered deltas (a burst of them is
                # otherwise worked through in one step of this task, several ms at a time)
                await asyncio.sleep(0)
            elif isinstance(ev, AudioDone):
                media.end_item()
            elif isinstance(ev, SpeechStarted):
                # barge-in: silence the bot within one 20 ms frame, tell the model what was heard
                cut = media.busy
                if cut:
                    self.metrics.barge_in.observe(media.until_next_frame())
                item_id, played_ms = media.interrupt()
                model.interrupt(item_id, played_ms)
                if cut:
                    self.transcript.write("barge_in", item_id=item_id, played_ms=played_ms)
                self.guard.caller_spoke()
                self.log.debug("< caller speaks: cut %s at %d ms", item_id, played_ms)
            elif isinstance(ev, SpeechStopped):
                self._speech_stopped_at = loop.time()
            elif isinstance(ev, ResponseDone):
                if not ev.superseded:       # a superseded response is followed by ours: not idle yet
                    self._response_idle.set()
                self._count_usage(ev.usage)
                self.log.debug("< response %s (%s)", ev.status, ev.reason)
                if not ev.superseded and await self._after_response(ev.status):
                    return
            elif isinstance(ev, CallerIdle):
                self._on_idle(ev)
            elif isinstance(ev, UsageUpdate):
                self._count_usage(ev.usage)
            elif isinstance(ev, ToolCall):
                self._response_idle.clear()
                self.spawn(self._run_tool(ev), f"tool-{ev.name}")
            elif isinstance(ev, Transcript):
                self.log.info("%s: %s", ev.role, ev.text)
                self.transcript.write(ev.role, text=ev.text, item_id=ev.item_id)
            elif isinstance(ev, SessionReady):
                self.log.info("= model session %s ready (%d tools)", ev.session_id, len(self.tools.names))
            elif isinstance(ev, ModelError):
                self.log.warning("! model error %s: %s", ev.code, ev.message)
                self.metrics.model_errors[ev.code] += 1
                self._last_model_error = ev.code
                self.transcript.write("error", source="model", code=ev.code, message=ev.message)
                if ev.fatal:
                    await self._fallback(f"model error {ev.code}")
                    return
            elif isinstance(ev, ModelReconnected):
                media.end_item()               # the cut-off reply will get no more audio: play its tail
                self._response_idle.set()
                self.log.warning("! model %s: resumed in session %s", ev.reason, ev.session_id)
                self.transcript.write("model_reconnected", reason=ev.reason, session_id=ev.session_id)
            elif isinstance(ev, ModelClosed):
                if self.ended:
                    return
                await self._fallback(f"model session {ev.reason}")
                return

    async def _after_response(self: Call, status: str) -> bool:
        """A failed response: apologise once, or fall back after too many in a row. True if the call ends."""
        m = self.metrics
        if status == "completed":
            m.model_failed_in_row = 0
        elif status == "failed":
            m.model_failed_in_row += 1
        action = self.guard.response_done(status)
        if status == "failed":
            self.transcript.write("response_failed", code=self._last_model_error,
                                  failed_in_row=self.guard.failed_in_row, action=action or "none")
        if action == "apologise":
            self.log.info("= response failed (%s): the bot apologises", self._last_model_error)
            self.model.request_response(APOLOGY)
        elif action == "fallback":
            await self._fallback(f"{self.guard.failed_in_row} model responses in a row failed "
                                 f"({self._last_model_error})")
            return True
        return False

    def _on_idle(self: Call, ev: CallerIdle) -> None:
        action = self.guard.caller_idle()
        if action is None:
            return
        n = self.guard.idle_count
        self.log.info("< caller silent for %d ms (timeout %d, %d prompts allowed): %s", ev.silent_ms, n,
                      self.guard.idle_prompts, action)
        self.transcript.write("idle_timeout", count=n, silent_ms=ev.silent_ms, action=action)
        self._response_idle.clear()    # the bot is about to speak
        if action == "prompt":
            self.model.respond_instead(self.settings.idle_prompt)
        else:
            self.model.respond_instead(self.settings.idle_goodbye)
            self.spawn(self._leave_idle_caller(), "idle-goodbye")

    async def _leave_idle_caller(self: Call) -> None:
        await self._farewell()               # the goodbye is played out first
        if self.guard.saying_goodbye:        # unless the caller spoke up meanwhile
            self.end("caller inactive")

    def _count_usage(self: Call, usage: dict[str, Any] | None) -> None:
        """Token usage of one response (GPT-Live: session seconds): per call, per process, and an estimated
        cost at the set prices."""
        if not usage:
            return
        if "live_seconds" in usage:      # GPT-Live bills session time, not tokens
            seconds = float(usage["live_seconds"])
            self.usage["live_seconds"] = self.usage.get("live_seconds", 0) + seconds
            cost = seconds / 60 * self.settings.price_live_per_min
            self.cost_usd += cost
            self.metrics.cost_usd += cost
            return
        counts, cost = usage_cost(usage, self.settings)
        for k, n in counts.items():
            self.usage[k] = self.usage.get(k, 0) + n
            self.metrics.tokens[k] += n
        self.cost_usd += cost
        self.metrics.cost_usd += cost
