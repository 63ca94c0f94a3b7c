"""Settings from the environment and `.env`, validated once at start-up.

Every setting is `VOICEAI_<NAME>` except `OPENAI_API_KEY`. A bad value stops start-up with one line naming
the variable (`load_settings` raises `ConfigError`; the CLI prints it and exits 2). Secrets are `SecretStr`,
so they never show in a repr or a log line.
"""

from __future__ import annotations

from pydantic import ValidationError

from .settings import ENV_PREFIX, Settings
from .values import HTTP_METHODS, HttpToolBase, _loopback, originate_endpoint

__all__ = ["ConfigError", "ENV_PREFIX", "HTTP_METHODS", "HttpToolBase", "Settings", "env_name", "load_settings",
           "originate_endpoint", "_loopback"]


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the environment variable."""


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    return {"openai_api_key": "OPENAI_API_KEY", "gemini_api_key": "GEMINI_API_KEY"}.get(field, ENV_PREFIX + field.upper())


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; raise ConfigError naming the first bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        field = str(err["loc"][0]) if err["loc"] else ""
        if not field and ": " in msg:   # a model-level check names its field first
            field, msg = msg.split(": ", 1)
        raise ConfigError(f"invalid {env_name(field)}: {msg}") from None
