"""Where the `api_call` tool may send a request: the allowlist of base URLs (VOICEAI_HTTP_TOOL_ALLOWLIST) and the
resolution of the model's endpoint under one of them. Pure functions: the model's endpoint is hostile input."""

from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

DEFAULT_METHODS = ("GET", "POST")  # a plain URL entry of the allowlist


def base_entry(entry: Any) -> tuple[str, tuple[str, ...]]:
    """An allowlist entry: a URL (GET, POST) or an object with `url` and `methods` (config.HttpToolBase)."""
    return (entry, DEFAULT_METHODS) if isinstance(entry, str) else (entry.url, tuple(entry.methods))


def _under(url: str, base: str) -> bool:
    b, u = urlsplit(base if base.endswith("/") else base + "/"), urlsplit(url)
    # netloc equality: same host and port, and no userinfo unless the base has it (it has not)
    return (u.scheme in ("http", "https") and u.scheme == b.scheme and u.netloc.lower() == b.netloc.lower()
            and (u.path + "/").startswith(b.path))


def allowed_url(allowlist: Iterable[Any], endpoint: str, method: str | None = None) -> str:
    """Resolve `endpoint` against the allowlisted base URLs; return the first URL that stays under one.

    Under means: same scheme, host and port, and a path starting with the base path. With `method`, the
    most specific base the URL is under (longest path) must allow it. Raises: ValueError (the message is for
    the model) for "..", "@", backslashes, control characters, anything outside, and a method not allowed.
    """
    bases = [base_entry(e) for e in allowlist]
    if not isinstance(endpoint, str):
        raise ValueError("endpoint must be a string")
    decoded = endpoint
    for _ in range(3):  # %252e%252e -> %2e%2e -> ..
        decoded = unquote(decoded)
    if "@" in endpoint or any(c <= " " or c == "\x7f" for c in endpoint) or ".." in decoded or "\\" in decoded:
        raise ValueError("endpoint must not contain '..', '@', backslashes, spaces or control characters")
    for base, _ in bases:
        url = urljoin(base if base.endswith("/") else base + "/", endpoint)
        if not _under(url, base):
            continue
        if method is not None:
            base, methods = max(((b, m) for b, m in bases if _under(url, b)),
                                key=lambda bm: len(urlsplit(bm[0]).path))   # the most specific base decides
            if method not in methods:
                raise ValueError(f"method {method} is not allowed under {base} (allowed: {', '.join(methods)}); "
                                 "nothing was sent")
        return url
    raise ValueError(f"endpoint {endpoint[:100]!r} is not under an allowed base URL "
                     f"({', '.join(b for b, _ in bases)}); use a path relative to one of them, e.g. 'items/42'")
