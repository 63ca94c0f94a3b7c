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
    vad_type: Literal["server_vad", "semantic_vad"] = Field(
        "server_vad", description="turn detection: server_vad (silence timer) or semantic_vad (model judges)")
    vad_eagerness: Literal["auto", "low", "medium", "high"] = Field(
        "auto", description="semantic_vad only: how soon the model answers (low waits up to 8 s)")

    # --- conversation ------------------------------------------------------------------------------------
    greeting: Literal["none", "model", "sound"] = Field(
        "model", description="who speaks first: none, the model, or an Asterisk sound (greeting_sound)")
    greeting_instructions: str = Field(
        "Greet the caller briefly and ask how you can help.",
        description="instructions for the model's greeting (greeting=model)")
    greeting_sound: str = Field("sound:hello-world", description="ARI media URI played when greeting=sound")
    dtmf_to_model: bool = Field(True, description="tell the model about keys the caller presses")
    dtmf_response: bool = Field(True, description="ask the model to respond right after a key press")
    dtmf_duration_ms: int = Field(100, ge=40, le=2000, description="send_dtmf tool: tone length")
    dtmf_gap_ms: int = Field(100, ge=40, le=2000, description="send_dtmf tool: pause between digits")
    transcript_dir: str = Field(
        "transcripts", description="folder for per-call JSONL transcripts; empty turns them off")

    # --- tools -------------------------------------------------------------------------------------------
    transfer_targets: dict[str, str] = Field(
        default_factory=dict,
        description='transfer_call allowlist, JSON: {"sales": "from-caller,200,1", "bob": "PJSIP/bob"}')
    transfer_timeout_s: float = Field(
        5.0, gt=0, le=120, description="a transfer that has not taken the caller out of the app by then has "
        "failed: the conversation goes on and the model is told why")
    http_tool_allowlist: list[str] = Field(
        default_factory=list, description='api_call tool: allowed base URLs, JSON list ["https://api.example.com/v1/"]')
    http_tool_timeout_s: float = Field(5.0, gt=0, le=60, description="api_call tool: timeout per request")
    http_tool_max_bytes: int = Field(65536, ge=256, le=2**22, description="api_call tool: response size cap")
    tool_modules: list[str] = Field(
        default_factory=list, description='custom tools: JSON list of Python modules, ["mytools"]')

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
    dtx: bool = Field(False, description="silence suppression: while the bot is silent, send one silent packet "
                      "per second instead of 50 (less CPU for the bot and Asterisk; the caller gets no RTP "
                      "between the bot's words, which some SBCs and phones dislike)")

    # --- model credentials, fallback, prices -------------------------------------------------------------------
    credentials: Literal["api_key", "ephemeral", "token_service"] = Field(
        "api_key", description="api_key: connect with OPENAI_API_KEY; ephemeral: mint a per-call client secret "
        "with it; token_service: fetch {value, expires_at} from VOICEAI_TOKEN_SERVICE_URL (no master key here)")
    token_service_url: str = Field("", description="token_service: URL that returns {value, expires_at}")
    ephemeral_ttl_s: int = Field(600, ge=10, le=7200, description="ephemeral: client secret lifetime")
    fallback: Literal["hangup", "transfer"] = Field(
        "hangup", description="model unreachable: play fallback_sound, then hang up or transfer to fallback_target")
    fallback_sound: str = Field("sound:im-sorry,sound:please-try-again",
                                description="ARI media URI(s), comma-separated, played on fallback; empty = none")
    fallback_target: str = Field("", description="fallback=transfer: context,extension,priority or TECH/resource")
    price_audio_in: float = Field(32.0, ge=0, description="USD per 1M audio input tokens (cost estimate)")
    price_audio_out: float = Field(64.0, ge=0, description="USD per 1M audio output tokens")
    price_text_in: float = Field(4.0, ge=0, description="USD per 1M text input tokens")
    price_text_out: float = Field(16.0, ge=0, description="USD per 1M text output tokens")

    # --- control API --------------------------------------------------------------------------------------
    control_host: str = Field("127.0.0.1", description="control API bind address (loopback unless a token is set)")
    control_port: int = Field(8089, ge=0, le=65535, description="control API port; 0 turns it off")
    control_token: SecretStr | None = Field(None, description="bearer token for the control API")

    # --- process -------------------------------------------------------------------------------------------
    max_calls: int = Field(50, ge=1, le=10000, description="concurrent calls; more are refused")
    busy_sound: str = Field(
        "", description="over capacity: ARI media URI announced before the busy hangup; empty = SIP 486 at once")
    busy_sound_s: float = Field(3.0, ge=0, le=60, description="how long the busy announcement plays")
    drain_s: float = Field(30.0, ge=0, le=3600, description="on SIGTERM: seconds active calls get to finish")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    log_format: Literal["json", "text"] = Field("json", description="json: one JSON object per line; text")

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

    @field_validator("transfer_targets")
    @classmethod
    def _check_targets(cls, v: dict[str, str]) -> dict[str, str]:
        for name, dest in v.items():
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"target name {name!r} must be letters, digits, - or _")
            if "/" not in dest and len(dest.split(",")) != 3:
                raise ValueError(f"target {name!r}: use context,extension,priority or TECH/resource")
        return v

    @field_validator("http_tool_allowlist")
    @classmethod
    def _check_allowlist(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("http://", "https://")) or url.count("/") < 3:
                raise ValueError(f"{url!r} must be a base URL like https://host/path/")
        return v

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
    def _empty_secrets_are_none(self) -> "Settings":
        if self.openai_api_key is not None and not self.openai_api_key.get_secret_value().strip():
            self.openai_api_key = None
        if self.control_token is not None and not self.control_token.get_secret_value().strip():
            self.control_token = None
        return self

    @model_validator(mode="after")
    def _control_api_needs_a_token_off_loopback(self) -> "Settings":
        if self.control_port and self.control_token is None and not _loopback(self.control_host):
            raise ValueError("control_token: required when VOICEAI_CONTROL_HOST is not a loopback address")
        return self

    @model_validator(mode="after")
    def _modes_have_their_settings(self) -> "Settings":
        if self.credentials == "token_service" and not self.token_service_url.startswith(("http://", "https://")):
            raise ValueError("token_service_url: required (http:// or https://) with VOICEAI_CREDENTIALS=token_service")
        if self.credentials == "ephemeral" and self.openai_api_key is None:
            raise ValueError("openai_api_key: required to mint client secrets with VOICEAI_CREDENTIALS=ephemeral")
        if self.fallback == "transfer" and not self.fallback_target:
            raise ValueError("fallback_target: required with VOICEAI_FALLBACK=transfer")
        return self

    @property
    def port_range(self) -> range:
        a, b = (int(x) for x in self.rtp_ports.split("-"))
        return range(a, b + 1)

    @property
    def offline_demo(self) -> bool:
        """No API key (and no token service): calls are served by the embedded fake model (echo)."""
        return self.openai_api_key is None and self.credentials != "token_service"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    return "OPENAI_API_KEY" if field == "openai_api_key" else ENV_PREFIX + field.upper()


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
