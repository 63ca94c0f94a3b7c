"""Transfers that fail: the caller stays with the bot, the conversation goes on, and the reason comes back.

`Call.transfer` against a scripted stand-in for ARI that answers like Asterisk 22 does (call/transfer.py):
204 at once, then a StasisEnd (taken), the caller back in the bridge (REFER refused), or nothing.
"""

import asyncio

import pytest

from voiceai_ari.ari import AriError, AriEvent, AriNotFound, Channel
from voiceai_ari.call import transfer
from voiceai_ari.call.call import Call
from voiceai_ari.call.tools import TransferDestination, TransferFailed, TransferNotPossible
from voiceai_ari.config import Settings

SALES = TransferDestination.parse("sales", "from-caller,200,1")
DESK = TransferDestination.parse("desk", "PJSIP/desk")


class ScriptedAri:
    """Records requests; `outcome` says what Asterisk does after a continue/redirect: "leave" (StasisEnd),
    "refuse" (the redirect's queued re-add runs: ChannelEnteredBridge), or None (nothing happens)."""

    def __init__(self, outcome=None, exists="1", refer_loaded=True, redirect_error=None):
        self.outcome, self.exists, self.refer_loaded, self.redirect_error = outcome, exists, refer_loaded, redirect_error
        self.log: list[str] = []
        self.call: Call | None = None

    def _event(self, type_):
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, self.call.on_ari_event, AriEvent(type=type_, channel=Channel(id="c1")))

    async def request(self, method, path, params=None, json=None):
        self.log.append(f"{method} {path} {params or ''}".strip())
        if path == "/channels/c1/variable":
            return {"value": self.exists}
        if path.startswith("/asterisk/modules/") and not self.refer_loaded:
            raise AriNotFound(404, "Module could not be found in running modules", method, path)
        return None

    async def continue_in_dialplan(self, channel_id, context, extension, priority):
        self.log.append(f"continue {context},{extension},{priority}")
        if self.outcome == "leave":
            self._event("StasisEnd")

    async def redirect(self, channel_id, endpoint):
        self.log.append(f"redirect {endpoint}")
        if self.redirect_error:
            raise self.redirect_error

    async def add_channels(self, bridge_id, *channel_ids):
        self.log.append(f"add {bridge_id} {','.join(channel_ids)}")
        if self.outcome == "refuse":
            self._event("ChannelEnteredBridge")
        elif self.outcome == "leave":
            self._event("StasisEnd")


class Media:
    async def drained(self):
        return None


class Model:
    def __init__(self):
        self.texts = []

    def send_text(self, text, respond=True):
        self.texts.append(text)


def make_call(ari, **settings):
    s = Settings(_env_file=None, transcript_dir="", transfer_timeout_s=settings.pop("timeout", 0.5), **settings)
    call = Call(channel=Channel(id="c1", state="Up"), ari=ari, media=Media(), model=Model(), tools=None,
                settings=s, bind=lambda *a: None, metrics=None)
    call.state, call.bridge_id, ari.call = "talking", "b1", call
    return call


async def test_continue_that_leaves_is_a_transfer():
    ari = ScriptedAri(outcome="leave")
    call = make_call(ari)
    await call.transfer(SALES)
    assert call.ended and call.caller_released and call.end_reason == "transferred to sales"
    assert ari.log == ["GET /channels/c1/variable {'variable': 'DIALPLAN_EXISTS(from-caller,200,1)'}",
                       "continue from-caller,200,1"]


async def test_missing_extension_fails_before_the_caller_leaves():
    ari = ScriptedAri(outcome="leave", exists="0")
    call = make_call(ari)
    with pytest.raises(TransferFailed, match="from-caller,200,1 does not exist in Asterisk's dialplan"):
        await call.transfer(SALES)
    assert not any(r.startswith("continue") for r in ari.log), "Asterisk would hang the caller up"
    assert call.state == "talking" and not call.ended and not call.caller_released


async def test_transfer_that_takes_nobody_times_out_and_the_call_goes_on():
    ari = ScriptedAri(outcome=None)
    call = make_call(ari, timeout=0.3)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(TransferFailed, match="sales did not take the call within 0.3 s"):
        await call.transfer(SALES)
    assert 0.3 <= loop.time() - t0 < 0.6
    assert call.state == "talking" and not call.ended and not call.caller_released
    call.on_ari_event(AriEvent(type="ChannelDtmfReceived", channel=Channel(id="c1"), digit="5"))
    await asyncio.sleep(0.7)   # the keypad debounce
    assert call.model.texts == ["The caller pressed 5 on the keypad."]


async def test_refused_redirect_brings_the_caller_back_into_the_bridge(monkeypatch):
    monkeypatch.setattr(transfer, "REJOIN_GRACE_S", 0.1)
    ari = ScriptedAri(outcome="refuse")
    call = make_call(ari, timeout=5.0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(TransferFailed, match="desk refused the transfer"):
        await call.transfer(DESK)
    assert loop.time() - t0 < 1.0, "the verdict comes with the caller's return, not at the timeout"
    # out of the bridge for the REFER (else its outcome is lost and the channel's commands stall), and back
    assert ari.log == ["GET /asterisk/modules/res_pjsip_refer.so", "POST /bridges/b1/removeChannel {'channel': 'c1'}",
                       "redirect PJSIP/desk", "add b1 c1"]
    assert call.state == "talking" and not call.ended


async def test_redirect_that_the_far_end_takes():
    ari = ScriptedAri(outcome="leave")
    call = make_call(ari)
    await call.transfer(DESK)
    assert call.end_reason == "transferred to desk" and call.caller_released


async def test_redirect_refused_by_ari_puts_the_caller_back_at_once():
    ari = ScriptedAri(redirect_error=AriError(422, "Endpoint technology 'SIP' does not match channel technology "
                                                   "'PJSIP'", "POST", "/channels/c1/redirect"))
    call = make_call(ari)
    with pytest.raises(TransferFailed, match="Asterisk refused the transfer: 422 Endpoint technology"):
        await call.transfer(DESK)
    assert ari.log[-2:] == ["redirect PJSIP/desk", "add b1 c1"] and call.state == "talking"


async def test_redirect_without_res_pjsip_refer_fails_with_the_reason():
    ari = ScriptedAri(refer_loaded=False)
    call = make_call(ari)
    with pytest.raises(TransferFailed, match="res_pjsip_refer.so is not loaded"):
        await call.transfer(DESK)
    assert ari.log == ["GET /asterisk/modules/res_pjsip_refer.so"] and call.state == "talking"


async def test_one_transfer_at_a_time_and_none_when_not_talking():
    ari = ScriptedAri(outcome=None)
    call = make_call(ari, timeout=0.3)
    first = asyncio.create_task(call.transfer(SALES))
    await asyncio.sleep(0.05)
    assert call.state == "transferring"
    with pytest.raises(TransferNotPossible, match="the call is transferring"):
        await call.transfer(SALES)
    with pytest.raises(TransferFailed):
        await first
    call.end("caller hung up")
    with pytest.raises(TransferNotPossible, match="the call is ending"):
        await call.transfer(SALES)


async def test_call_that_ends_otherwise_during_the_wait_is_not_a_transfer():
    ari = ScriptedAri(outcome=None)
    call = make_call(ari, timeout=2.0)
    asyncio.get_running_loop().call_later(0.05, call.end, "hung up via the control API")
    with pytest.raises(TransferNotPossible, match="the call ended first: hung up via the control API"):
        await call.transfer(SALES)
