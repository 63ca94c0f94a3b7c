"""Settings from the environment and `.env`, validated once at start-up.

Every setting is `VOICEAI_<NAME>` except `OPENAI_API_KEY`. A bad value stops start-up with one line naming
the variable (`load_settings` raises `ConfigError`; the CLI prints it and exits 2). Secrets are `SecretStr`,
so they never show in a repr or a log line.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "VOICEAI_"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore",
        case_sensitive=False,
    )

    # --- model -------------------------------------------------------------------------------------------
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY"),
        description="OpenAI API key. Empty: the offline demo model (echo) is used.")
    realtime_url: str = Field("wss://api.openai.com/v1/realtime", description="Realtime WebSocket URL")
    model: str = Field("gpt-realtime", description="Realtime model name")
    voice: str = Field("marin", description="Voice of the bot")
    instructions: str = Field(
        "You are a helpful, concise voice assistant on a phone line. Keep answers short.",
        description="System instructions for the model")
    transcription_model: str = Field(
        "gpt-4o-mini-transcribe", description="Input transcription model; empty turns it off")

    # --- turn detection (server VAD) ----------------------------------------------------------------------
    vad_threshold: float = Field(0.5, ge=0.0, le=1.0, description="server_vad threshold (0..1)")
    vad_prefix_padding_ms: int = Field(300, ge=0, le=5000, description="audio kept before speech start")
    vad_silence_ms: int = Field(500, ge=50, le=10000, description="silence that ends a turn")

    # --- Asterisk ------------------------------------------------------------------------------------------
    ari_url: str = Field("http://127.0.0.1:8088", description="ARI base URL (without /ari)")
    ari_user: str = Field("voiceai", description="ARI user (ari.conf)")
    ari_password: SecretStr = Field(SecretStr("voiceai-secret"), description="ARI password")
    ari_app: str = Field("voiceai", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Stasis app name")

    # --- media ---------------------------------------------------------------------------------------------
    rtp_host: str = Field("127.0.0.1", description="address Asterisk sends the call's RTP to")
    rtp_bind: str = Field("127.0.0.1", description="local address the RTP sockets bind to")
    rtp_ports: str = Field("40000-40199", description="UDP port range for calls, e.g. 40000-40199")
    return_codec: Literal["g722", "l16-8k"] = Field(
        "g722", description="payload sent back to Asterisk: g722 (PT 9, wideband) or l16-8k (PT 11)")

    # --- process -------------------------------------------------------------------------------------------
    max_calls: int = Field(50, ge=1, le=10000, description="concurrent calls; more are refused")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")

    @field_validator("rtp_ports")
    @classmethod
    def _check_ports(cls, v: str) -> str:
        lo, sep, hi = v.partition("-")
        if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
            raise ValueError("must look like 40000-40199")
        a, b = int(lo), int(hi)
        if not (1024 <= a <= b <= 65535):
            raise ValueError("must be a range within 1024-65535, low end first")
        return f"{a}-{b}"

    @field_validator("rtp_bind")
    @classmethod
    def _check_bind(cls, v: str) -> str:
        ipaddress.ip_address(v)  # ValueError names the problem
        return v

    @field_validator("realtime_url")
    @classmethod
    def _check_ws_url(cls, v: str) -> str:
        if not v.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return v

    @field_validator("ari_url")
    @classmethod
    def _check_http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _empty_key_is_none(self) -> "Settings":
        if self.openai_api_key is not None and not self.openai_api_key.get_secret_value().strip():
            self.openai_api_key = None
        return self

    @property
    def port_range(self) -> range:
        a, b = (int(x) for x in self.rtp_ports.split("-"))
        return range(a, b + 1)

    @property
    def offline_demo(self) -> bool:
        """No API key: calls are served by the embedded fake model (echo)."""
        return self.openai_api_key is None


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    return "OPENAI_API_KEY" if field == "openai_api_key" else ENV_PREFIX + field.upper()


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; raise ConfigError naming the first bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        raise ConfigError(f"invalid {env_name(field)}: {err['msg']}") from None
