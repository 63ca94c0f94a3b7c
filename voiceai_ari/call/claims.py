"""Workers on one Asterisk: answering StasisBroadcast's offers with a claim, only while there is room.

`StasisBroadcast(timeout,^voiceai-w)` in the dialplan sends a `CallBroadcast` event to every connected app whose
name matches (each worker has its own app name: two processes on one name steal each other's events). The first
`POST /events/claim` wins (204) and its app then gets the call's StasisStart; the others get 409. Nobody
claiming within the timeout sends the call on in the dialplan (`STASISSTATUS=TIMEOUT`: a busy announcement, or
a human). So a worker claims only while it could take the call (below VOICEAI_MAX_CALLS, not draining): a full
or draining worker stays silent, and the call goes to a worker with room, or to the fallback.

A won claim holds a slot from the claim until its StasisStart (about a millisecond later) so two offers at
once cannot both take the last slot; a lost claim (409) or an offer that ended (404) frees it, quietly.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING

from ..ari import AriEvent

if TYPE_CHECKING:
    from .app import VoiceAiApp

log = logging.getLogger("voiceai.claims")

CLAIM_HOLD_S = 5.0   # a won claim whose StasisStart never comes (the caller hung up) frees its slot by then


class Claims:
    """This worker's answers to CallBroadcast offers, and the slots its claims hold."""

    def __init__(self, app: VoiceAiApp) -> None:
        self.app = app
        self.pending: dict[str, float] = {}    # claimed (or being claimed) channel id -> monotonic expiry
        self.counts = {"claimed": 0, "lost": 0, "declined": 0}

    def held(self) -> int:
        """Slots held by claims whose StasisStart has not come yet."""
        now = time.monotonic()
        for cid in [c for c, until in self.pending.items() if until < now]:
            del self.pending[cid]
        return len(self.pending)

    def release(self, channel_id: str) -> None:
        """The claimed call started (its slot is now the call's), or its channel is gone."""
        self.pending.pop(channel_id, None)

    def offer(self, ev: AriEvent) -> None:
        """A CallBroadcast: claim the channel if this worker has room, else let the others (or the timeout)
        have it. Never awaits: the claim runs in its own task."""
        ch = ev.channel
        if ch is None or not self.app.settings.broadcast or ch.id in self.pending:
            return
        if not self.app.accepting or self.app.slots_used() >= self.app.settings.max_calls:
            self.counts["declined"] += 1
            log.info("- offer of %s declined: %s", ch.id, "draining" if not self.app.accepting
                     else f"{self.app.slots_used()} of {self.app.settings.max_calls} slots in use")
            return
        self.pending[ch.id] = time.monotonic() + CLAIM_HOLD_S
        self.app._spawn(self._claim(ch.id, time.monotonic()))

    async def _claim(self, channel_id: str, t0: float) -> None:
        try:
            won = await self.app.ari.claim(channel_id)
        except Exception as exc:
            won = False
            log.warning("! claim of %s failed: %s", channel_id, exc)
        if won:
            self.counts["claimed"] += 1
            log.info("= claimed %s in %.1f ms", channel_id, (time.monotonic() - t0) * 1000)
        else:   # another worker was quicker (409), or the offer ended (404): not ours, nothing to undo
            self.counts["lost"] += 1
            self.pending.pop(channel_id, None)
            log.debug("- claim of %s lost", channel_id)


def stasis_delay_ms(ev: AriEvent) -> float | None:
    """Milliseconds from the channel's creation to this event (Asterisk's own clock: both stamps come from
    it), or None when a stamp is missing or unreadable."""
    if ev.channel is None:
        return None
    try:
        return (datetime.fromisoformat(ev.timestamp) - datetime.fromisoformat(ev.channel.creationtime)
                ).total_seconds() * 1000
    except ValueError:
        return None
