"""How a Realtime connection authenticates: one bearer token per connection, from one of three sources.

- `api_key` (default): OPENAI_API_KEY itself.
- `ephemeral`: per connection, mint a short-lived client secret (`POST /v1/realtime/client_secrets`) with the
  session configuration burned in, and connect with the returned `ek_...` value. The master key never goes
  onto the Realtime socket.
- `token_service`: GET a configured URL returning `{value, expires_at}`; a separate backend holds the master
  key and this process never sees it. The token is reused until shortly before it expires.

Outbound connections to the model side (this module, the Realtime WebSocket, `api_call`) honour the usual
HTTPS_PROXY / HTTP_PROXY / NO_PROXY environment variables, except to loopback addresses (`use_env_proxy`).

A token service URL may carry a secret (`https://user:pw@host/mint?key=...`): error messages, and so the log
lines made from them, show it through `redact_url` only.
"""

from __future__ import annotations

import time
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from ...proxy import use_env_proxy


class Credentials(Protocol):
    async def bearer(self) -> str:
        """A token for the next Realtime connection. Raises OSError/ValueError when none can be had."""


class ApiKey:
    def __init__(self, key: str) -> None:
        self._key = key

    async def bearer(self) -> str:
        return self._key


class EphemeralSecrets:
    def __init__(self, realtime_url: str, master_key: str, session: dict[str, Any], ttl_s: int) -> None:
        base = realtime_url.split("?")[0].rstrip("/")
        self.url = base.replace("wss://", "https://", 1).replace("ws://", "http://", 1) + "/client_secrets"
        self._key, self._session, self._ttl = master_key, session, ttl_s
        self.minted = 0

    async def bearer(self) -> str:
        body = {"expires_after": {"anchor": "created_at", "seconds": self._ttl}, "session": self._session}
        data = await _request("POST", self.url, {"Authorization": f"Bearer {self._key}"}, body)
        self.minted += 1
        return _value(data, "client secret")


class TokenService:
    REFRESH_BEFORE = 30.0  # s: fetch a new token this long before the current one expires

    def __init__(self, url: str) -> None:
        self.url = url
        self._token: tuple[str, float] | None = None
        self.fetched = 0

    async def bearer(self) -> str:
        if self._token is not None and self._token[1] - self.REFRESH_BEFORE > time.time():
            return self._token[0]
        data = await _request("GET", self.url, {}, None)
        value = _value(data, "token service answer")
        self._token = (value, float(data.get("expires_at") or time.time() + 60))
        self.fetched += 1
        return value


def redact_url(url: str) -> str:
    """`url` fit for a log line: no userinfo, and the query and fragment replaced by "?..."."""
    try:
        p = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = p.netloc.rpartition("@")[2]
    return f"{p.scheme}://{netloc}{p.path}" + ("?..." if p.query or p.fragment else "")


async def _request(method: str, url: str, headers: dict[str, str], body: Any) -> dict[str, Any]:
    """One JSON request. Raises: ConnectionError (OSError) or ValueError, naming the URL without its secrets."""
    shown = redact_url(url)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                         trust_env=use_env_proxy(url)) as s:   # HTTPS_PROXY, NO_PROXY
            async with s.request(method, url, headers=headers, json=body) as r:
                if r.status >= 400:
                    raise ConnectionRefusedError(f"{method} {shown} -> HTTP {r.status}")
                data = await r.json(content_type=None)
    except (aiohttp.ClientError, ValueError) as exc:  # aiohttp's messages quote the full URL: never pass them on
        raise ConnectionError(f"{method} {shown}: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{shown} did not answer with a JSON object")
    return data


def _value(data: dict[str, Any], what: str) -> str:
    value = data.get("value")
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} has no 'value'")
    return value


def make_credentials(settings: Any, realtime_url: str, session: dict[str, Any], api_key: str) -> Credentials:
    if settings.credentials == "ephemeral":
        return EphemeralSecrets(realtime_url, api_key, session, settings.ephemeral_ttl_s)
    if settings.credentials == "token_service":
        return TokenService(settings.token_service_url)
    return ApiKey(api_key)
