"""Which outbound connections go through a proxy (HTTPS_PROXY / HTTP_PROXY / NO_PROXY).

Every connection to the outside (a model WebSocket, a token service, the api_call tool) honours the usual
proxy environment variables, as websockets and aiohttp read them; connections to loopback (the embedded
demo model, local fakes) never do: a proxy could not reach them and must not see them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .config import _loopback


def use_env_proxy(url: str) -> bool:
    """Whether the proxy environment variables apply to `url`: not for loopback hosts (as Go's net/http decides)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return host is not None and not _loopback(host)
