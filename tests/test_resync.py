"""The app's resync after an ARI (re)connect, against a stand-in for ARI's listings: it cleans up only what
belongs to its own Stasis app, and leaves alone a call that starts while it runs.

(The same through the real Asterisk sandbox, with two bot processes: tests/e2e/test_instances.py.)
"""

from __future__ import annotations

import asyncio

import pytest

from voiceai_ari.ari import AriEvent, Bridge, Channel
from voiceai_ari.call import app as app_module
from voiceai_ari.call.app import VoiceAiApp
from voiceai_ari.call.ids import BRIDGE_ID_PREFIX, EM_ID_PREFIX, MAX_ID_LEN, new_id, owner_app
from voiceai_ari.call.tools import ToolRegistry
from voiceai_ari.config import load_settings

HEX = "0123456789abcdef"


class IdleModel:
    """A model session that never connects (the calls here stay in set-up)."""

    reconnects = 0

    async def start(self) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        pass

    def send_audio(self, pcm: bytes) -> None:
        pass


class ListingAri:
    """What the resync reads and does over ARI: fixed listings, and a record of what it deletes.
    ``during_listing`` runs while the bridges are being listed (events keep arriving then)."""

    reconnects = 0

    def __init__(self, channels: list[Channel], bridges: list[Bridge], in_app: list[str],
                 app_bridges: list[str] = (), during_listing=None) -> None:
        self._channels, self._bridges = channels, bridges
        self._app = {"channel_ids": list(in_app), "bridge_ids": list(app_bridges)}
        self.during_listing = during_listing
        self.hung_up: list[str] = []
        self.deleted_bridges: list[str] = []

    async def channels(self) -> list[Channel]:
        return list(self._channels)

    async def bridges(self) -> list[Bridge]:
        if self.during_listing is not None:
            self.during_listing()
            await asyncio.sleep(0)
        return list(self._bridges)

    async def application(self) -> dict:
        return self._app

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
        self.hung_up.append(channel_id)
        return True

    async def delete_bridge(self, bridge_id: str) -> bool:
        self.deleted_bridges.append(bridge_id)
        return True

    async def external_media(self, **kw) -> Channel:   # a call's set-up waits here until the test ends it
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        pass


@pytest.fixture
def make_app(built_apps):
    def make(ari: ListingAri, app_name: str = "voiceai") -> VoiceAiApp:
        s = load_settings(_env_file=None, ari_app=app_name, transcript_dir="", rtp_ports="47900-47909",
                          control_port=0)
        app = VoiceAiApp(s, model_factory=IdleModel, tools=ToolRegistry())
        app.ari = ari  # type: ignore[assignment]
        built_apps.append(app)
        return app

    return make


def em(cid: str) -> Channel:
    return Channel(id=cid, name=f"UnicastRTP/127.0.0.1:47000-{cid[-8:]}", state="Up")


def caller(cid: str, state: str = "Up") -> Channel:
    return Channel(id=cid, name=f"PJSIP/phone-{cid}", state=state)


def stasis_start(ch: Channel) -> AriEvent:
    return AriEvent(type="StasisStart", application="voiceai", channel=ch)


async def test_resync_leaves_another_instances_media_channel_and_bridge_alone(make_app):
    """Instance "voiceai-2" has a call up on the same Asterisk: its externalMedia channel and bridge (and a
    bridge of an older version, not in this app) are not this instance's to delete; its own leftovers are."""
    other_em, other_bridge = f"voiceai-em-voiceai-2-{HEX}", f"voiceai-br-voiceai-2-{HEX}"
    legacy_em = f"voiceai-em-{HEX}"    # an older version's id, in no app of ours
    mine_em, mine_bridge = f"voiceai-em-voiceai-{HEX}", f"voiceai-br-voiceai-{HEX}"
    in_app_em = "1733300000.77"        # a media channel in this app, whatever its id
    ari = ListingAri(
        channels=[em(other_em), caller("1733300000.1"), em(legacy_em), em(mine_em), em(in_app_em)],
        bridges=[Bridge(id=other_bridge, name="voiceai-1733300000.1", channels=[other_em, "1733300000.1"]),
                 Bridge(id=f"voiceai-{HEX}", name="voiceai-1733300000.9"),
                 Bridge(id=mine_bridge, name="voiceai-1733300000.5")],
        in_app=[mine_em, in_app_em])
    app = make_app(ari)
    await app._resync()
    assert other_em not in ari.hung_up and legacy_em not in ari.hung_up and "1733300000.1" not in ari.hung_up
    assert other_bridge not in ari.deleted_bridges and f"voiceai-{HEX}" not in ari.deleted_bridges
    assert sorted(ari.hung_up) == sorted([mine_em, in_app_em]) and ari.deleted_bridges == [mine_bridge]
    assert app.orphans_cleaned == 3


async def test_a_call_that_starts_while_resync_runs_is_not_ended(make_app, monkeypatch):
    """Two callers enter the app while the resync runs: one after the channel listing (not in it), one listed
    (already answered by the dialplan) whose StasisStart comes just after the listing was read. Both are
    served: neither call is ended, neither caller hung up."""
    monkeypatch.setattr(app_module, "RESYNC_SETTLE_S", 0.3, raising=False)
    late, listed = caller("1733300000.20", "Ring"), caller("1733300000.21", "Up")
    app: VoiceAiApp

    def events_arrive() -> None:
        app.dispatch(stasis_start(late))
        asyncio.get_running_loop().call_later(0.05, app.dispatch, stasis_start(listed))

    ari = ListingAri(channels=[listed], bridges=[], in_app=[listed.id], during_listing=events_arrive)
    app = make_app(ari)
    await app._resync()
    assert set(app.calls) == {late.id, listed.id}
    assert not [c.end_reason for c in app.calls.values() if c.ended]
    assert ari.hung_up == [] and app.orphans_cleaned == 0


async def test_a_caller_nobody_serves_is_still_hung_up(make_app, monkeypatch):
    """The settle wait does not keep a real leftover: a caller left in the app (answered, no StasisStart
    coming) is hung up, one in Ring state is adopted."""
    monkeypatch.setattr(app_module, "RESYNC_SETTLE_S", 0.05, raising=False)
    stale, ringing = caller("1733300000.30", "Up"), caller("1733300000.31", "Ring")
    ari = ListingAri(channels=[stale, ringing], bridges=[], in_app=[stale.id, ringing.id])
    app = make_app(ari)
    await app._resync()
    assert ari.hung_up == [stale.id] and set(app.calls) == {ringing.id}


def test_ids_name_their_app_and_fit_asterisks_limit():
    longest = "a-" * 31 + "b.c"   # 65 > 64: the pattern's cap is 64
    longest = longest[:64]
    for app in ("voiceai", "voiceai-2", "a", longest):
        for prefix in (EM_ID_PREFIX, BRIDGE_ID_PREFIX):
            rid = new_id(prefix, app)
            assert owner_app(rid, prefix) == app and len(rid) <= MAX_ID_LEN
    # a name that is a prefix of another's never claims the other's resources
    assert owner_app(f"voiceai-em-voiceai-2-{HEX}", EM_ID_PREFIX) == "voiceai-2"
    assert owner_app(f"voiceai-em-{HEX}", EM_ID_PREFIX) is None          # older ids name no app
    assert owner_app(f"voiceai-em-x-{HEX}", BRIDGE_ID_PREFIX) is None
    assert owner_app("voiceai-em-voiceai-XYZ", EM_ID_PREFIX) is None
