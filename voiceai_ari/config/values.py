"""Value types and parsers shared by the settings and the code that acts on them."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator


HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class HttpToolBase(BaseModel):
    """One `api_call` allowlist entry: a base URL and the HTTP methods the model may use under it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str
    methods: tuple[Literal["GET", "POST", "PUT", "PATCH", "DELETE"], ...] = ("GET", "POST")

    @field_validator("url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")) or v.count("/") < 3:
            raise ValueError(f"{v!r} must be a base URL like https://host/path/")
        return v

    @field_validator("methods", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        if isinstance(v, (list, tuple)):
            if not v:
                raise ValueError("methods: give at least one of " + ", ".join(HTTP_METHODS))
            return tuple(dict.fromkeys(m.upper() if isinstance(m, str) else m for m in v))
        return v


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def originate_endpoint(name: str, dest: str) -> str:
    """The ARI originate endpoint of an `originate_targets` entry: "TECH/resource" as it is, a dialplan location
    "context,extension,1" as "Local/extension@context" (a Local channel starts at priority 1).

    Raises: ValueError naming the target."""
    dest = dest.strip()
    if re.fullmatch(r"[A-Za-z0-9_]+/[^\s,]{1,200}", dest):
        return dest
    parts = [p.strip() for p in dest.split(",")]
    if len(parts) == 3 and re.fullmatch(r"[A-Za-z0-9_.-]+", parts[0]) and re.fullmatch(r"[^\s@/,]+", parts[1]):
        if parts[2] != "1":
            raise ValueError(f"target {name!r}: a dialplan location is dialled through a Local channel, which "
                             "starts at priority 1")
        return f"Local/{parts[1]}@{parts[0]}"
    raise ValueError(f"target {name!r}: use TECH/resource (PJSIP/1001) or context,extension,1")
