"""Asking Asterisk to hand the caller over: ARI `continue` (a dialplan location) or `redirect` (an endpoint).

ARI answers both with 204 before anything has happened: the request becomes a command for the channel's
Stasis thread (res/stasis/control.c). What then happens, in Asterisk 22 (verified on the sandbox):

- `continue`: the caller departs our bridge, jumps to context,extension,priority and leaves Stasis at once
  (StasisEnd). Asterisk does not check the location: at a missing one (and no `i` extension) the PBX hangs
  the caller up right after the StasisEnd. So it is checked first with `DIALPLAN_EXISTS()` (func_dialplan),
  read on the caller's channel (its caller id counts, as in the dialplan).
- `redirect`: chan_pjsip sends the caller's device a SIP REFER (needs res_pjsip_refer; without it nothing
  happens at all), and the Stasis thread waits in `ast_transfer()` for the outcome, reading the channel's
  frames. ARI reports neither outcome. In a bridge, the bridge thread usually eats the outcome frame: the
  Stasis thread then waits, reading (and dropping) every other frame of the caller, until the call ends;
  no later command (play, continue, add to bridge) ever runs. So the caller leaves our bridge for the
  REFER, and the request to add it back is queued behind the redirect: it runs the moment Asterisk has
  the outcome. Refused (405, 603, ...): the caller is back with the bot within a round trip
  (`ChannelEnteredBridge`) and no StasisEnd follows. Accepted: the far end takes the call and hangs this
  leg up (StasisEnd); until its final answer the caller's phone handles the call.

The caller's StasisEnd is the one sign of success; `Call` waits for it (VOICEAI_TRANSFER_TIMEOUT_S).
What can be known before the caller leaves (a missing extension, a module that is not loaded, a request ARI
refuses) fails here at once, with the reason, while the caller is still talking to the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ..ari import AriClient, AriError, AriNotFound, AriUnavailable
from .tools import TransferDestination, TransferFailed, TransferNotPossible
from .transcript import CallLog

log = logging.getLogger("voiceai.call")

REFER_MODULE = "res_pjsip_refer.so"
REJOIN_GRACE_S = 1.0   # after a redirect, the caller back in the bridge and no StasisEnd this long: refused


async def attempt(ari: AriClient, channel_id: str, dest: TransferDestination, bridge_id: str | None, *,
                  left: asyncio.Event, back: asyncio.Event | None, timeout: float,
                  spawn: Callable[[Coroutine[Any, Any, None], str], None]) -> None:
    """`request`, then `wait`. Returns once `left` is set; raises TransferFailed (refused, timed out, or
    what `request` raises). `spawn` runs the caller's way back into the bridge in the background."""
    rejoin = await request(ari, channel_id, dest, bridge_id)
    if rejoin is not None:
        spawn(rejoin, "transfer-rejoin")
    verdict = await wait(left, timeout, back)
    if verdict == "back":
        raise TransferFailed(f"{dest.name} refused the transfer (the SIP REFER was declined)")
    if verdict == "timeout":
        raise TransferFailed(f"{dest.name} did not take the call within {timeout:g} s")


async def request(ari: AriClient, channel_id: str, dest: TransferDestination,
                  bridge_id: str | None = None) -> Coroutine[Any, Any, None] | None:
    """Check what can be checked, then send `continue` or `redirect` for the caller's channel. For a redirect
    out of `bridge_id`, returns the request that puts the caller back: run it now, in the background (it
    returns when Asterisk has the REFER's outcome).

    Raises: TransferFailed (the reason, for the model and the operator), TransferNotPossible (the channel is
    gone). Checks that Asterisk cannot answer (function or module query refused) are skipped with a warning."""
    try:
        if dest.context:
            assert dest.extension and dest.priority is not None
            await _check_dialplan(ari, channel_id, dest)
            await ari.continue_in_dialplan(channel_id, dest.context, dest.extension, dest.priority)
            return None
        assert dest.endpoint
        await _check_refer(ari, dest)
        if bridge_id is None:
            await ari.redirect(channel_id, dest.endpoint)
            return None
        await ari.request("POST", f"/bridges/{bridge_id}/removeChannel", params={"channel": channel_id})
        try:
            await ari.redirect(channel_id, dest.endpoint)
        except (AriError, AriUnavailable):
            with contextlib.suppress(AriError, AriUnavailable):
                await ari.add_channels(bridge_id, channel_id)   # back with the bot
            raise
        return _rejoin(ari, bridge_id, channel_id)
    except AriNotFound as exc:
        raise TransferNotPossible(f"the caller's channel is gone ({exc.message})") from None
    except AriError as exc:   # e.g. 422: endpoint technology does not match the channel's
        raise TransferFailed(f"Asterisk refused the transfer: {exc.status} {exc.message}") from None
    except AriUnavailable as exc:
        raise TransferFailed(f"Asterisk could not be reached: {exc}") from None


async def _rejoin(ari: AriClient, bridge_id: str, channel_id: str) -> None:
    try:   # queued behind the redirect; answers late (or not at all when the caller has left)
        await ari.add_channels(bridge_id, channel_id)
    except (AriError, AriUnavailable) as exc:
        log.debug("= re-adding the caller after the redirect: %s", exc)


async def _check_dialplan(ari: AriClient, channel_id: str, dest: TransferDestination) -> None:
    where = f"{dest.context},{dest.extension},{dest.priority}"
    try:
        got = await ari.request("GET", f"/channels/{channel_id}/variable",
                                params={"variable": f"DIALPLAN_EXISTS({where})"})
    except AriNotFound:
        raise
    except AriError as exc:   # 500: func_dialplan not loaded; go on unchecked
        log.warning("! cannot check that %s exists (DIALPLAN_EXISTS: %s); transferring unchecked", where, exc)
        return
    if str((got or {}).get("value", "")).strip() != "1":
        raise TransferFailed(f"{where} does not exist in Asterisk's dialplan")


async def _check_refer(ari: AriClient, dest: TransferDestination) -> None:
    assert dest.endpoint
    if dest.endpoint.split("/", 1)[0].upper() != "PJSIP":
        return
    try:
        await ari.request("GET", f"/asterisk/modules/{REFER_MODULE}")
    except AriNotFound:
        raise TransferFailed(f"{REFER_MODULE} is not loaded in Asterisk, so it cannot send the SIP REFER a "
                             "redirect needs") from None
    except AriError as exc:
        log.warning("! cannot check that %s is loaded (%s); redirecting unchecked", REFER_MODULE, exc)


async def wait(left: asyncio.Event, timeout: float, back: asyncio.Event | None = None,
               grace: float | None = None) -> str:
    """"left" once `left` is set (the call ended: the caller's StasisEnd, or any other end); "back" when
    `back` was set (the caller is in the bridge again) and `left` did not follow within `grace`; else
    "timeout" after `timeout` s."""
    async def back_for_good() -> None:
        assert back is not None
        await back.wait()
        await asyncio.sleep(REJOIN_GRACE_S if grace is None else grace)
    waiters = [asyncio.ensure_future(left.wait())]
    if back is not None:
        waiters.append(asyncio.ensure_future(back_for_good()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    if left.is_set():
        return "left"
    return "back" if len(waiters) > 1 and waiters[1].done() and not waiters[1].cancelled() else "timeout"


def record(log: logging.Logger, transcript: CallLog, target: str, t0: float, failure: Exception | None) -> None:
    """Log and write to the transcript how a transfer went, and how long the verdict took."""
    ms = round((time.monotonic() - t0) * 1000)
    if failure is None:
        log.info("= caller left for %s %d ms after the transfer request", target, ms)
    else:
        log.warning("! transfer to %s failed after %d ms: %s", target, ms, failure)
    transcript.write("transfer", target=target, ok=failure is None, ms=ms,
                     **({} if failure is None else {"reason": str(failure)}))
