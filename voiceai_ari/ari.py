"""A thin, typed, async client for the Asterisk REST Interface (ARI) on aiohttp.

Only the REST calls the app uses, plus the events WebSocket with capped exponential-backoff reconnect.
Credentials travel in an `Authorization: Basic` header on REST and on the WebSocket upgrade (Asterisk checks
it before `api_key`, res_ari.c `authenticate_user`), so they never appear in a URL and never in a log line.

Errors: every non-2xx answer raises `AriError(status, message)`; 404 raises its subclass `AriNotFound`,
which callers read as "already gone" (after a BYE, `DELETE /channels/{id}` answers 404).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger("voiceai.ari")


class AriError(Exception):
    """ARI answered with an HTTP error; carries the status and Asterisk's message."""

    def __init__(self, status: int, message: str, method: str = "", path: str = "") -> None:
        super().__init__(f"ARI {method} {path} -> {status}: {message}")
        self.status, self.message, self.method, self.path = status, message, method, path


class AriNotFound(AriError):
    """404: the channel, bridge or playback is already gone."""


class AriUnavailable(Exception):
    """Asterisk could not be reached (connection refused, timeout)."""


# ---------------------------------------------------------------------------------------------------------
# Event models: only the fields the app reads; everything else is ignored.
class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class CallerId(_Model):
    name: str = ""
    number: str = ""


class Channel(_Model):
    id: str
    name: str = ""
    state: str = ""
    caller: CallerId = CallerId()
    channelvars: dict[str, str | None] | None = None
    creationtime: str = ""


class Bridge(_Model):
    id: str
    name: str = ""
    technology: str = ""
    channels: list[str] = []


class Playback(_Model):
    id: str
    state: str = ""
    target_uri: str = ""


class AriEvent(_Model):
    """One event from /ari/events. `type` picks the meaning (StasisStart, StasisEnd, ...)."""

    type: str
    application: str = ""
    timestamp: str = ""
    channel: Channel | None = None
    bridge: Bridge | None = None
    playback: Playback | None = None
    args: list[str] = []
    digit: str | None = None
    duration_ms: int | None = None
    cause: int | None = None


@dataclass(frozen=True, slots=True)
class EventsConnected:
    """The events socket (re)connected: events may have been missed, resynchronise."""
    attempt: int


@dataclass(frozen=True, slots=True)
class EventsDisconnected:
    """The events socket dropped; the client is reconnecting with backoff."""
    reason: str


# ---------------------------------------------------------------------------------------------------------
class AriClient:
    """REST + events for one Stasis app. Use as `async with AriClient(...) as ari:`."""

    def __init__(self, base_url: str, user: str, password: str, app: str, *,
                 timeout: float = 10.0, backoff_initial: float = 0.2, backoff_max: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.app = app
        self._auth = aiohttp.encode_basic_auth(user, password)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._backoff = (backoff_initial, backoff_max)
        self._session: aiohttp.ClientSession | None = None
        self.bad_events = 0
        self.reconnects = 0

    async def __aenter__(self) -> "AriClient":
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": self._auth}, timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- REST --------------------------------------------------------------------------------------------
    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      json: Any = None) -> Any:
        """One REST call under /ari. Returns parsed JSON (or None for 204). Raises AriError/AriUnavailable."""
        assert self._session is not None, "AriClient not opened"
        q = {k: _qs(v) for k, v in (params or {}).items() if v is not None}
        try:
            async with self._session.request(method, f"{self.base_url}/ari{path}", params=q,
                                             json=json) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    msg = _error_message(body)
                    cls = AriNotFound if resp.status == 404 else AriError
                    raise cls(resp.status, msg, method, path)
                if not body:
                    return None
                return await resp.json(content_type=None)
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            raise AriUnavailable(f"ARI {method} {path}: {type(exc).__name__}: {exc}") from None

    async def info(self) -> dict[str, Any]:
        return await self.request("GET", "/asterisk/info")

    async def answer(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{channel_id}/answer")

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
        """Hang up; False when the channel was already gone."""
        try:
            await self.request("DELETE", f"/channels/{channel_id}", params={"reason": reason})
            return True
        except AriNotFound:
            return False

    async def external_media(self, *, fmt: str, channel_id: str, external_host: str | None = None,
                             data: str | None = None, transport: str = "udp", encapsulation: str = "rtp",
                             connection_type: str = "client", transport_data: str | None = None) -> Channel:
        raw = await self.request("POST", "/channels/externalMedia", params={
            "app": self.app, "external_host": external_host, "format": fmt, "encapsulation": encapsulation,
            "transport": transport, "connection_type": connection_type, "direction": "both",
            "transport_data": transport_data, "channelId": channel_id, "data": data})
        return Channel.model_validate(raw)

    async def create_bridge(self, bridge_type: str = "mixing", name: str | None = None,
                            bridge_id: str | None = None) -> Bridge:
        return Bridge.model_validate(await self.request(
            "POST", "/bridges", params={"type": bridge_type, "name": name, "bridgeId": bridge_id}))

    async def add_channels(self, bridge_id: str, *channel_ids: str) -> None:
        await self.request("POST", f"/bridges/{bridge_id}/addChannel",
                           params={"channel": ",".join(channel_ids)})

    async def delete_bridge(self, bridge_id: str) -> bool:
        try:
            await self.request("DELETE", f"/bridges/{bridge_id}")
            return True
        except AriNotFound:
            return False

    async def play(self, channel_id: str, media: str, playback_id: str) -> None:
        await self.request("POST", f"/channels/{channel_id}/play",
                           params={"media": media, "playbackId": playback_id})

    async def send_dtmf(self, channel_id: str, digits: str, duration_ms: int = 100,
                        between_ms: int = 100) -> None:
        await self.request("POST", f"/channels/{channel_id}/dtmf",
                           params={"dtmf": digits, "duration": duration_ms, "between": between_ms})

    async def continue_in_dialplan(self, channel_id: str, context: str, extension: str,
                                   priority: int) -> None:
        await self.request("POST", f"/channels/{channel_id}/continue",
                           params={"context": context, "extension": extension, "priority": priority})

    async def redirect(self, channel_id: str, endpoint: str) -> None:
        await self.request("POST", f"/channels/{channel_id}/redirect", params={"endpoint": endpoint})

    async def claim(self, channel_id: str) -> bool:
        """Claim a channel offered by StasisBroadcast (a CallBroadcast event) for this app: True = ours
        (its StasisStart follows); False = another app claimed it first (409) or the offer is over (404)."""
        try:
            await self.request("POST", "/events/claim", params={"channelId": channel_id, "application": self.app})
            return True
        except AriError as exc:
            if exc.status in (404, 409):
                return False
            raise

    async def channels(self) -> list[Channel]:
        return [Channel.model_validate(c) for c in await self.request("GET", "/channels")]

    async def bridges(self) -> list[Bridge]:
        return [Bridge.model_validate(b) for b in await self.request("GET", "/bridges")]

    async def application(self) -> dict[str, Any]:
        return await self.request("GET", f"/applications/{self.app}")

    # --- events ------------------------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[AriEvent | EventsConnected | EventsDisconnected]:
        """Yield events forever, reconnecting with capped exponential backoff (with jitter).

        Malformed events are counted in `bad_events` and skipped, never raised.
        """
        assert self._session is not None, "AriClient not opened"
        ws_url = self.base_url.replace("http", "ws", 1) + "/ari/events"
        params = {"app": self.app, "subscribeAll": "false"}
        delay, attempt = self._backoff[0], 0
        while True:
            attempt += 1
            try:
                async with self._session.ws_connect(
                        ws_url, params=params, heartbeat=20, max_msg_size=16 * 2**20,
                        timeout=aiohttp.ClientWSTimeout(ws_close=2)) as ws:
                    log.info("= ARI events connected (%s, app %s)", self.base_url, self.app)
                    delay = self._backoff[0]
                    yield EventsConnected(attempt)
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            continue
                        try:
                            yield AriEvent.model_validate_json(msg.data)
                        except ValidationError:
                            self.bad_events += 1
                            log.warning("! ARI event not understood, skipped (%d so far)", self.bad_events)
                    reason = f"closed ({ws.close_code})"
            except aiohttp.WSServerHandshakeError as exc:
                reason = f"handshake refused: HTTP {exc.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                reason = f"{type(exc).__name__}"
            self.reconnects += 1
            log.warning("x ARI events %s; reconnecting in %.1f s", reason, delay)
            yield EventsDisconnected(reason)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self._backoff[1])


def _qs(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _error_message(body: bytes) -> str:
    import json
    try:
        data = json.loads(body)
        if isinstance(data, dict) and "message" in data:
            return str(data["message"])
    except ValueError:
        pass
    return body[:200].decode("utf-8", "replace").strip()
