"""What the fake GPT-Live server accepts in `session.start`, strictly (openai-live.md §2.2), and its errors.

The real config rejects unknown fields; so does this, with an `error` event naming the parameter. Error codes
the reference does not give (marked "fake's own" below) are this fake's choice.
"""

from __future__ import annotations

from typing import Any

KNOWN_MODELS = ("gpt-live-1", "gpt-live-1.1")
VOICES = ("alloy ash aube ballad beacon bossa brise cedar cinder coral delta echo flitz gleam harema juni marin "
          "meridian nira noeul nuri quartz ripple sage shimmer shitan sillage stone tempo verse vesper willow").split()
RATES = {"audio/pcm": (16000, 24000), "audio/pcmu": (8000,), "audio/pcma": (8000,)}
SESSION_KEYS = {"model", "instructions", "audio", "delegation", "input", "store", "client"}
RESPONSES_KEYS = {"model", "instructions", "tools", "tool_choice", "parallel_tool_calls", "reasoning", "text",
                  "service_tier", "max_output_tokens"}
FUNCTION_KEYS = {"type", "name", "description", "parameters", "strict"}
MAX_APPEND_TOKENS = 500
CLIENT_EVENTS = ("session.start", "session.update", "session.input_audio.append", "session.input_audio.mute",
                 "session.input_audio.unmute", "session.instructions.append", "session.thinking.append",
                 "session.commentary.append", "response.item.create", "response.create", "session.close")


class LiveError(Exception):
    """An `error` event: {type, code, message, param}."""

    def __init__(self, code: str, message: str, param: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.code, self.message, self.param, self.type = code, message, param, type_

    def event(self, client_event_id: Any = None) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "code": self.code, "message": self.message}
        if self.param:
            err["param"] = self.param
        if client_event_id is not None:
            err["client_event_id"] = client_event_id
        return {"type": "error", "error": err}


def _unknown(obj: dict[str, Any], allowed: set[str], path: str) -> None:
    for k in obj:
        if k not in allowed:
            raise LiveError("unknown_parameter", f"Unknown parameter: '{path}.{k}'.", f"{path}.{k}")


def _obj(v: Any, path: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise LiveError("invalid_type", f"Invalid type for '{path}': expected an object.", path)
    return v


def _str(v: Any, path: str) -> str:
    if not isinstance(v, str):
        raise LiveError("invalid_type", f"Invalid type for '{path}': expected a string.", path)
    return v


def check_session(session: Any) -> dict[str, Any]:
    """The validated config, or LiveError."""
    s = _obj(session, "session")
    _unknown(s, SESSION_KEYS, "session")
    if "model" not in s:
        raise LiveError("missing_required_parameter", "Missing required parameter: 'session.model'.", "session.model")
    if _str(s["model"], "session.model") not in KNOWN_MODELS:
        raise LiveError("model_not_found", f"The model '{s['model']}' does not exist or you do not have access "
                        "to it.", "session.model")
    if "instructions" in s:
        _str(s["instructions"], "session.instructions")
    audio = _obj(s.get("audio", {}), "session.audio")
    _unknown(audio, {"format", "output"}, "session.audio")
    fmt = _obj(audio.get("format", {"type": "audio/pcm", "rate": 24000}), "session.audio.format")
    _unknown(fmt, {"type", "rate"}, "session.audio.format")
    if fmt.get("type") not in RATES:
        raise LiveError("invalid_value", f"Invalid value for 'session.audio.format.type': {fmt.get('type')!r}.",
                        "session.audio.format.type")
    if fmt.get("rate") not in RATES[fmt["type"]]:
        raise LiveError("invalid_value", f"Invalid value for 'session.audio.format.rate': {fmt.get('rate')!r}.",
                        "session.audio.format.rate")
    out = _obj(audio.get("output", {}), "session.audio.output")
    _unknown(out, {"voice"}, "session.audio.output")
    voice = out.get("voice", "marin")
    if not (isinstance(voice, dict) and isinstance(voice.get("id"), str)) and voice not in VOICES:
        raise LiveError("invalid_value", f"Invalid value for 'session.audio.output.voice': {voice!r}.",
                        "session.audio.output.voice")
    if s.get("delegation") is not None:
        _check_delegation(_obj(s["delegation"], "session.delegation"))
    for i, m in enumerate(s.get("input") or []):
        path = f"session.input[{i}]"
        m = _obj(m, path)
        _unknown(m, {"role", "content", "type"}, path)
        if m.get("role") not in ("developer", "user", "assistant"):
            raise LiveError("invalid_value", f"Invalid value for '{path}.role'.", f"{path}.role")
        parts = m.get("content")
        part = parts[0] if isinstance(parts, list) and len(parts) == 1 else None
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text") \
                or not isinstance(part.get("text"), str):
            raise LiveError("invalid_value", f"'{path}.content' must hold one text part.", f"{path}.content")
    if len(s.get("input") or []) > 128:
        raise LiveError("array_above_max_length", "'session.input' holds at most 128 messages.", "session.input")
    return s


def _check_delegation(d: dict[str, Any]) -> None:
    _unknown(d, {"type", "responses"}, "session.delegation")
    if d.get("type") == "client":
        return
    if d.get("type") != "responses":
        raise LiveError("invalid_value", "Invalid value for 'session.delegation.type'.", "session.delegation.type")
    r = _obj(d.get("responses"), "session.delegation.responses")
    _unknown(r, RESPONSES_KEYS, "session.delegation.responses")
    _str(r.get("model"), "session.delegation.responses.model")
    for i, t in enumerate(r.get("tools") or []):
        path = f"session.delegation.responses.tools[{i}]"
        t = _obj(t, path)
        if t.get("type") == "function":
            _unknown(t, FUNCTION_KEYS, path)
            _str(t.get("name"), f"{path}.name")
        elif t.get("type") != "web_search":
            raise LiveError("invalid_value", f"Invalid value for '{path}.type'.", f"{path}.type")


def check_append(msg: dict[str, Any], responses_delegation: bool) -> str:
    """The content of a session.{instructions,thinking,commentary}.append, or LiveError."""
    kind = msg["type"]
    _unknown(msg, {"type", "event_id", "content", "delegation_id"}, kind)
    content = _str(msg.get("content"), f"{kind}.content")
    if "delegation_id" not in msg:
        raise LiveError("missing_required_parameter", f"Missing required parameter: '{kind}.delegation_id'.",
                        f"{kind}.delegation_id")
    if msg["delegation_id"] is not None and responses_delegation:
        raise LiveError("invalid_value", "delegation_id is accepted for a client delegation only.",
                        f"{kind}.delegation_id")
    if len(content) / 4 > MAX_APPEND_TOKENS:   # fake's own code; ~4 characters a token
        raise LiveError("string_above_max_length", f"'{kind}.content' is longer than 500 tokens.",
                        f"{kind}.content")
    return content
