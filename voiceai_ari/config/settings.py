"""The `Settings` class: every setting, its default, its bounds and its cross-field checks.

Every setting is `VOICEAI_<NAME>` except `OPENAI_API_KEY`; secrets are `SecretStr`, so they never show in a
repr or a log line. `voiceai_ari.config.load_settings` turns a validation error into one line.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .values import HttpToolBase, _loopback, originate_endpoint

ENV_PREFIX = "VOICEAI_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore",
        case_sensitive=False,
    )

    # --- model -------------------------------------------------------------------------------------------
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY"),
        description="OpenAI API key. Empty: the offline demo model (echo) is used.")
    demo: bool = Field(True, description="without OPENAI_API_KEY: on = calls get the offline echo demo model "
                       "(a warning per call); off = refuse to start")
    provider: Literal["openai-realtime", "gemini-live", "openai-live"] = Field(
        "openai-realtime", description="the speech-to-speech model API: openai-realtime, gemini-live or openai-live")
    gemini_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        description="Gemini API key (GEMINI_API_KEY or GOOGLE_API_KEY), provider gemini-live. Empty: the offline demo")
    gemini_url: str = Field(
        "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1beta.GenerativeService."
        "BidiGenerateContent", description="Gemini Live WebSocket URL (Google, or the fake)")
    gemini_model: str = Field("gemini-3.8-live", description="Gemini Live model")
    gemini_voice: str = Field("Kore", description="Gemini prebuilt voice (Puck, Charon, Kore, Aoede, ...)")
    gemini_start_sensitivity: Literal["", "high", "low"] = Field(
        "", description="Gemini VAD: how readily caller speech starts a turn (empty: the server's default)")
    gemini_end_sensitivity: Literal["", "high", "low"] = Field(
        "", description="Gemini VAD: how readily silence ends a turn (empty: the server's default)")
    live_url: str = Field("wss://api.openai.com/v1/live/sessions",
                          description="GPT-Live WebSocket URL (OpenAI, or the fake), provider openai-live")
    live_model: str = Field("gpt-live-1.1", description="GPT-Live voice model (provider openai-live)")
    live_backend_model: str = Field(
        "gpt-5.6-terra", description="GPT-Live: the Responses model that runs the tools (delegation)")
    realtime_url: str = Field("wss://api.openai.com/v1/realtime", description="Realtime WebSocket URL")
    model: str = Field("gpt-realtime-2.1", description="Realtime model name (gpt-realtime shuts down 2027-01-20)")
    voice: str = Field("marin", description="Voice of the bot")
    instructions: str = Field(
        "You are a helpful, concise voice assistant on a phone line. Keep answers short.",
        description="System instructions for the model")
    transcription_model: str = Field(
        "gpt-4o-mini-transcribe", description="Input transcription model; empty turns it off")
    language: str = Field("", pattern=r"^([a-z]{2,3}(-[A-Za-z0-9]{2,8})*)?$",
                          description="language hint of the caller (ISO 639-1 like es, or es-MX): transcription "
                          "language (openai-realtime), speech language (gemini-live); empty = automatic")

    # --- what the 2.x models added; each is sent in session.update only when set -------------------------------
    reasoning_effort: Literal["", "minimal", "low", "medium", "high", "xhigh"] = Field(
        "", description="reasoning models only: reasoning.effort; empty = the model's default")
    truncation: str = Field(
        "", description="context truncation: auto, disabled, or a retention ratio 0<r<1; empty = the server's default")
    noise_reduction: Literal["", "near_field", "far_field"] = Field(
        "", description="input noise reduction: near_field (handset, headset), far_field (speakerphone); empty = off")

    # --- caller inactivity ------------------------------------------------------------------------------------
    idle_timeout_ms: int = Field(0, ge=0, le=3_600_000,
                                 description="server_vad only: silence after the bot's last words that counts as "
                                 "an idle caller (ms); 0 = off")
    idle_prompts: int = Field(2, ge=0, le=10, description="times the idle caller is prompted before the goodbye")
    idle_prompt: str = Field("The caller has been silent for a while. Ask briefly whether they are still there.",
                             description="instructions for the bot's idle prompt")
    idle_goodbye: str = Field("The caller has not answered. Say a short, friendly goodbye.",
                              description="instructions for the bot's last words before it hangs up on an idle caller")

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
    record_dir: str = Field("", description="folder for per-call stereo WAV recordings (caller left, bot right); "
                            "empty = no recordings")
    record_retention_days: int = Field(30, ge=0, le=36500, description="recordings older than this many days "
                                       "are deleted; 0 = kept forever")

    # --- tools -------------------------------------------------------------------------------------------
    transfer_targets: dict[str, str] = Field(
        default_factory=dict,
        description='transfer_call allowlist, JSON: {"sales": "from-caller,200,1", "bob": "PJSIP/bob"}')
    transfer_timeout_s: float = Field(
        5.0, gt=0, le=120, description="a transfer that has not taken the caller out of the app by then has "
        "failed: the conversation goes on and the model is told why")
    http_tool_allowlist: list[HttpToolBase] = Field(
        default_factory=list, description='api_call tool: allowed base URLs, JSON list; an entry is a URL (GET and '
        'POST allowed) or {"url": ..., "methods": [...]}: ["https://api.example.com/v1/", '
        '{"url": "https://crm.example.com/", "methods": ["GET", "PUT"]}]')
    http_tool_timeout_s: float = Field(5.0, gt=0, le=60, description="api_call tool: timeout per request")
    http_tool_max_bytes: int = Field(65536, ge=256, le=2**22, description="api_call tool: response size cap")
    tool_modules: list[str] = Field(
        default_factory=list, description='custom tools: JSON list of Python modules, ["mytools"]')
    tools: list[str] | None = Field(
        None, description='the tools the model gets, JSON list of names ["hangup_call", "transfer_call"]; '
        'unset = every tool configured; [] = none')

    # --- agents (config/agents.py) -------------------------------------------------------------------------
    agents_file: str = Field("", description="TOML file of named agents chosen per call by the dialplan; "
                             "empty = one agent, default, made of these settings")
    record: bool = Field(True, description="record the call: a per-agent switch for call recording, honoured "
                         "when VOICEAI_RECORD_DIR is set")

    # --- Asterisk ------------------------------------------------------------------------------------------
    ari_url: str = Field("http://127.0.0.1:8088", description="ARI base URL (without /ari)")
    ari_user: str = Field("voiceai", description="ARI user (ari.conf)")
    ari_password: SecretStr = Field(SecretStr("voiceai-secret"), description="ARI password")
    ari_app: str = Field("voiceai", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Stasis app name")

    # --- media ---------------------------------------------------------------------------------------------
    transport: Literal["rtp", "websocket"] = Field(
        "rtp", description="media path to Asterisk: rtp (externalMedia over RTP/UDP) or websocket (Asterisk's "
        "chan_websocket, the bot dials ARI's /media; Asterisk >= 22.8)")
    caller_format: Literal["slin24", "slin16", "ulaw", "alaw"] = Field(
        "slin24", description="externalMedia format: slin24 (24 kHz, the model's rate), slin16 (the bot "
        "resamples 16->24 kHz), ulaw/alaw (G.711 passed through to the model both ways; rtp, openai-realtime)")
    rtp_host: str = Field("127.0.0.1", description="IPv4 address (or name) Asterisk sends the call's RTP to")
    rtp_bind: str = Field("127.0.0.1", description="local IPv4 address the RTP sockets bind to")
    rtp_ports: str = Field("40000-40199", description="UDP port range for calls, e.g. 40000-40199")
    return_codec: Literal["g722", "l16-8k"] = Field(
        "g722", description="payload sent back to Asterisk: g722 (PT 9, wideband) or l16-8k (PT 11)")
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="event loop: uvloop (libuv, less CPU per packet and wake-up), asyncio (the standard "
        "library's), auto = uvloop when it is installed")
    append_ms: int = Field(
        20, ge=20, le=200, description="ms of caller audio per input_audio_buffer.append (openai-realtime only): "
        "20 sends every frame; 100 sends a fifth as many messages (less bot CPU) but the model's VAD hears the "
        "caller up to that much later (barge-in, end of turn); above 20 RTP is read once per 20 ms tick")
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
    price_text_out: float = Field(24.0, ge=0, description="USD per 1M text output tokens")
    price_cached_audio_in: float = Field(0.40, ge=0, description="USD per 1M cached audio input tokens")
    price_cached_text_in: float = Field(0.40, ge=0, description="USD per 1M cached text input tokens")
    price_live_per_min: float = Field(0.05, ge=0, description="GPT-Live: USD per minute of session (backend "
                                      "tokens not included)")

    # --- control API --------------------------------------------------------------------------------------
    control_host: str = Field("127.0.0.1", description="control API bind address (loopback unless a token is set)")
    control_port: int = Field(8089, ge=0, le=65535, description="control API port; 0 turns it off")
    control_token: SecretStr | None = Field(None, description="bearer token for the control API")
    control_allowed_hosts: list[str] = Field(
        default_factory=list, description='extra names accepted in the Host and Origin headers, JSON list '
        '["voice.example.com"]; loopback addresses and localhost with the API port always are')
    originate_targets: dict[str, str] = Field(
        default_factory=dict, description='POST /calls allowlist, JSON: {"frontdesk": "PJSIP/1001", '
        '"ivr": "from-internal,700,1"} (a dialplan location is dialled as Local/700@from-internal); '
        'empty: no outbound calls')
    originate_per_minute: int = Field(10, ge=1, le=10000, description="POST /calls: outbound calls per minute")

    # --- process -------------------------------------------------------------------------------------------
    max_calls: int = Field(50, ge=1, le=10000, description="concurrent calls; more are refused")
    busy_sound: str = Field(
        "", description="over capacity: ARI media URI announced before the busy hangup; empty = SIP 486 at once")
    busy_sound_s: float = Field(3.0, ge=0, le=60, description="how long the busy announcement plays")
    drain_s: float = Field(30.0, ge=0, le=3600, description="on SIGTERM: seconds active calls get to finish")
    broadcast: bool = Field(False, description="StasisBroadcast worker: claim the calls offered to this app "
                            "(CallBroadcast) while below max_calls and not draining; leave the rest to others")
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
        from ..call.tools import TransferDestination  # the tool's own parser: one rule, checked at start
        for name, dest in v.items():
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"target name {name!r} must be letters, digits, - or _")
            TransferDestination.parse(name, dest)
        return v

    @field_validator("originate_targets")
    @classmethod
    def _check_originate_targets(cls, v: dict[str, str]) -> dict[str, str]:
        for name, dest in v.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
                raise ValueError(f"target name {name!r} must be 1-64 letters, digits, - or _")
            originate_endpoint(name, dest)
        return v

    @field_validator("control_allowed_hosts")
    @classmethod
    def _check_hosts(cls, v: list[str]) -> list[str]:
        for host in v:
            if not re.fullmatch(r"[A-Za-z0-9.:_-]{1,253}", host):
                raise ValueError(f"{host!r} must be a bare host name or address (no scheme, port or path)")
        return [h.lower().strip("[]") for h in v]

    @field_validator("fallback_target")
    @classmethod
    def _check_fallback_target(cls, v: str) -> str:
        from ..call.tools import TransferDestination  # what _fallback parses when the model is unreachable
        if v.strip():
            TransferDestination.parse("fallback", v)
        return v

    @field_validator("http_tool_allowlist", mode="before")
    @classmethod
    def _allowlist_strings(cls, v: object) -> object:
        """A plain URL entry (the original format) allows the default methods."""
        return [{"url": e} if isinstance(e, str) else e for e in v] if isinstance(v, list) else v

    @field_validator("tools", mode="before")
    @classmethod
    def _unset_tools(cls, v: object) -> object:
        """VOICEAI_TOOLS= (empty) is unset: every configured tool."""
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("truncation")
    @classmethod
    def _check_truncation(cls, v: str) -> str:
        v = v.strip()
        if v in ("", "auto", "disabled"):
            return v
        try:
            ratio = float(v)
        except ValueError:
            raise ValueError("must be auto, disabled or a retention ratio between 0 and 1") from None
        if not 0.0 < ratio < 1.0:
            raise ValueError("a retention ratio must be between 0 and 1 (exclusive)")
        return v

    @property
    def truncation_value(self) -> str | float | None:
        """`truncation` as session.update wants it: "auto"/"disabled", a ratio, or None (not sent)."""
        if not self.truncation:
            return None
        return self.truncation if self.truncation in ("auto", "disabled") else float(self.truncation)

    @field_validator("rtp_bind", "rtp_host")
    @classmethod
    def _check_rtp_address(cls, v: str, info: ValidationInfo) -> str:
        # RTP is IPv4 only (sockets bind AF_INET; externalMedia's external_host would need [brackets])
        try:
            ip = ipaddress.ip_address(v)
        except ValueError:
            if info.field_name == "rtp_bind":
                raise   # the message names the problem; rtp_host may be a name (resolved per call)
            return v
        if ip.version != 4:
            raise ValueError(f"{v} is IPv6; RTP to Asterisk is IPv4 only, use an IPv4 address")
        return v

    @field_validator("realtime_url", "gemini_url", "live_url")
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
        if self.gemini_api_key is not None and not self.gemini_api_key.get_secret_value().strip():
            self.gemini_api_key = None
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
        if not self.demo and self.offline_demo:
            key = "gemini_api_key" if self.provider == "gemini-live" else "openai_api_key"
            raise ValueError(f"{key}: required with VOICEAI_DEMO=off (or VOICEAI_DEMO=on: offline echo demo)")
        if self.provider == "gemini-live" and self.credentials != "api_key":
            raise ValueError("credentials: ephemeral and token_service are OpenAI's; gemini-live takes an API key")
        if self.provider == "openai-live" and self.credentials != "api_key":
            raise ValueError("credentials: ephemeral and token_service are Realtime's; openai-live takes an API key")
        if self.provider == "openai-live" and self.idle_timeout_ms:
            raise ValueError("idle_timeout_ms: not available with openai-live (GPT-Live has no idle timer; the "
                             "model owns the turns)")
        if "append_ms" in self.model_fields_set and self.provider != "openai-realtime":
            raise ValueError(f"append_ms: batches openai-realtime's input_audio_buffer.append only; {self.provider} "
                             "sends each 20 ms frame as it comes (unset VOICEAI_APPEND_MS)")
        if self.idle_timeout_ms and self.vad_type != "server_vad":
            raise ValueError("idle_timeout_ms: works with VOICEAI_VAD_TYPE=server_vad only (the Realtime API "
                             "has no idle timeout for semantic_vad)")
        if self.fallback == "transfer" and not self.fallback_target:
            raise ValueError("fallback_target: required with VOICEAI_FALLBACK=transfer")
        return self

    @model_validator(mode="after")
    def _media_formats_fit(self) -> "Settings":
        if self.caller_format in ("ulaw", "alaw"):
            if self.provider == "gemini-live":
                raise ValueError(f"caller_format: {self.caller_format} is passed through to the model as G.711, "
                                 "and gemini-live takes PCM only: use slin16 or slin24")
            if self.provider == "openai-live":
                raise ValueError(f"caller_format: {self.caller_format} passthrough is built for openai-realtime "
                                 "only: use slin16 or slin24 with openai-live")
            if self.transport == "websocket":
                raise ValueError(f"caller_format: {self.caller_format} over VOICEAI_TRANSPORT=websocket is not "
                                 "supported: use slin16 or slin24")
            if self.return_codec != "g722":
                raise ValueError(f"return_codec: {self.return_codec} cannot be used with VOICEAI_CALLER_FORMAT="
                                 f"{self.caller_format}: the bot answers in the caller's G.711")
        return self

    @property
    def port_range(self) -> range:
        a, b = (int(x) for x in self.rtp_ports.split("-"))
        return range(a, b + 1)

    @property
    def offline_demo(self) -> bool:
        """No API key for the chosen provider (and no token service): the embedded fake model (echo) serves calls."""
        if self.provider == "gemini-live":
            return self.gemini_api_key is None
        if self.provider == "openai-live":
            return self.openai_api_key is None
        return self.openai_api_key is None and self.credentials != "token_service"
