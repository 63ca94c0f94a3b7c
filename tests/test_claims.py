"""A StasisBroadcast worker (VOICEAI_BROADCAST=on) claims an offered call only while it has room, against a
stand-in for ARI's claim endpoint that answers like Asterisk's (204 to the first claim, 409 after).

(The same through the real Asterisk sandbox, with two worker processes: tests/e2e/test_broadcast.py.)
"""

from __future__ import annotations

import asyncio

import pytest

from voiceai_ari.ari import AriEvent, Channel
from voiceai_ari.call.app import VoiceAiApp
from voiceai_ari.call.claims import stasis_delay_ms
from voiceai_ari.call.tools import ToolRegistry
from voiceai_ari.config import load_settings

from tests.test_resync import IdleModel


class ClaimAri:
    """ARI's /events/claim: the first claim of a channel wins, later ones (or ``taken`` ones) lose."""

    reconnects = 0

    def __init__(self, taken: set[str] = frozenset()) -> None:
        self.taken = set(taken)
        self.claims: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def claim(self, channel_id: str) -> bool:
        self.claims.append(channel_id)
        await self.gate.wait()
        if channel_id in self.taken:
            return False
        self.taken.add(channel_id)
        return True

    async def external_media(self, **kw) -> Channel:   # a started call waits here until the test ends it
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
        return True

    async def delete_bridge(self, bridge_id: str) -> bool:
        return True

    async def answer(self, channel_id: str) -> None:
        pass


@pytest.fixture
def make_app(built_apps):
    def make(ari: ClaimAri, **settings) -> VoiceAiApp:
        s = load_settings(_env_file=None, ari_app="voiceai-w1", transcript_dir="", rtp_ports="47900-47909",
                          control_port=0, **settings)
        app = VoiceAiApp(s, model_factory=IdleModel, tools=ToolRegistry())
        app.ari = ari  # type: ignore[assignment]
        built_apps.append(app)
        return app

    return make


def offer(cid: str) -> AriEvent:
    return AriEvent(type="CallBroadcast", channel=Channel(id=cid, name=f"PJSIP/anonymous-{cid}", state="Ring"))


def stasis_start(cid: str) -> AriEvent:
    return AriEvent(type="StasisStart", application="voiceai-w1",
                    channel=Channel(id=cid, name=f"PJSIP/anonymous-{cid}", state="Ring"))


async def settle(app: VoiceAiApp) -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_worker_with_room_claims_the_offered_call(make_app):
    ari = ClaimAri()
    app = make_app(ari, broadcast=True, max_calls=2)
    app.dispatch(offer("1.1"))
    await settle(app)
    assert ari.claims == ["1.1"] and app.claims.counts["claimed"] == 1
    app.dispatch(stasis_start("1.1"))   # the won call starts: its slot is the call's now, not counted twice
    assert app.slots_used() == 1        # (held while its agent is chosen)
    await settle(app)
    assert list(app.calls) == ["1.1"] and app.slots_used() == 1


async def test_without_the_setting_offers_are_ignored(make_app):
    ari = ClaimAri()
    app = make_app(ari, max_calls=2)
    app.dispatch(offer("1.1"))
    await settle(app)
    assert ari.claims == [] and app.slots_used() == 0


async def test_a_full_worker_does_not_claim(make_app):
    """One slot, one call up: the next offer is declined (no POST at all), so another worker gets it."""
    ari = ClaimAri()
    app = make_app(ari, broadcast=True, max_calls=1)
    app.dispatch(stasis_start("1.1"))
    app.dispatch(offer("1.2"))
    await settle(app)
    assert ari.claims == [] and app.claims.counts == {"claimed": 0, "lost": 0, "declined": 1}


async def test_a_draining_worker_does_not_claim(make_app):
    ari = ClaimAri()
    app = make_app(ari, broadcast=True, max_calls=5)
    app.accepting = False
    app.dispatch(offer("1.1"))
    await settle(app)
    assert ari.claims == [] and app.claims.counts["declined"] == 1


async def test_two_offers_at_once_cannot_both_take_the_last_slot(make_app):
    """The claim holds its slot while the POST is in flight: a second offer then finds the worker full."""
    ari = ClaimAri()
    ari.gate.clear()                       # the first claim's answer has not come back yet
    app = make_app(ari, broadcast=True, max_calls=1)
    app.dispatch(offer("1.1"))
    app.dispatch(offer("1.2"))
    await settle(app)
    assert ari.claims == ["1.1"] and app.claims.counts["declined"] == 1
    ari.gate.set()
    await settle(app)
    assert app.slots_used() == 1


async def test_a_lost_claim_frees_its_slot_quietly(make_app):
    """Another worker won (409): the slot is free again for the next offer; nothing is refused or hung up."""
    ari = ClaimAri(taken={"1.1"})
    app = make_app(ari, broadcast=True, max_calls=1)
    app.dispatch(offer("1.1"))
    await settle(app)
    assert app.claims.counts == {"claimed": 0, "lost": 1, "declined": 0} and app.slots_used() == 0
    app.dispatch(offer("1.2"))
    await settle(app)
    assert ari.claims == ["1.1", "1.2"] and app.claims.counts["claimed"] == 1 and app.refused_calls == 0


async def test_a_won_claim_whose_caller_hung_up_frees_its_slot(make_app):
    ari = ClaimAri()
    app = make_app(ari, broadcast=True, max_calls=1)
    app.dispatch(offer("1.1"))
    await settle(app)
    assert app.slots_used() == 1
    app.dispatch(AriEvent(type="ChannelDestroyed", channel=Channel(id="1.1")))
    assert app.slots_used() == 0


def test_stasis_delay_is_read_from_asterisks_stamps():
    ev = AriEvent(type="StasisStart", timestamp="2026-12-04T18:00:00.125+0000",
                  channel=Channel(id="1.1", creationtime="2026-12-04T18:00:00.123+0000"))
    assert stasis_delay_ms(ev) == pytest.approx(2.0)
    assert stasis_delay_ms(AriEvent(type="StasisStart", channel=Channel(id="1.1"))) is None
