"""GA wire schema for the fake Realtime server: ids, default session, validation, merge.

Error texts follow the real API's style ("Missing required parameter: 'session.type'.",
"Unknown parameter: 'session.bogus_field'.", "Invalid value: 'nope'. Supported values are: ...").
Validation is all-or-nothing: a rejected ``session.update`` changes nothing, as on the real API.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from typing import Any

CLIENT_EVENTS = (
    "session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
    "conversation.item.create", "conversation.item.retrieve", "conversation.item.truncate",
    "conversation.item.delete", "response.create", "response.cancel",
)
SESSION_FIELDS = {"type", "model", "output_modalities", "instructions", "audio", "tools", "tool_choice",
                  "max_output_tokens", "tracing", "truncation", "prompt", "include", "reasoning",
                  "parallel_tool_calls"}
AUDIO_FIELDS = {"input": {"format", "transcription", "noise_reduction", "turn_detection"},
                "output": {"format", "voice", "speed"}}
VAD_FIELDS = {"server_vad": {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "create_response",
                             "interrupt_response", "idle_timeout_ms"},
              "semantic_vad": {"type", "eagerness", "create_response", "interrupt_response"}}
RESPONSE_FIELDS = {"instructions", "tools", "tool_choice", "output_modalities", "audio", "conversation", "input",
                   "metadata", "max_output_tokens", "prompt"}
SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


class RealtimeError(Exception):
    """A client-visible ``error`` event; raised by validators and handlers."""

    def __init__(self, code: str | None, message: str, param: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.code, self.message, self.param, self.type = code, message, param, type_

    def body(self, client_event_id: str | None) -> dict:
        return {"type": self.type, "code": self.code, "message": self.message, "param": self.param,
                "event_id": client_event_id}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:22]}"


def json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "decimal number"
    return {str: "string", dict: "object", list: "array"}.get(type(v), type(v).__name__)


def one_of(values: tuple | list) -> str:
    q = [f"'{v}'" for v in values]
    return q[0] if len(q) == 1 else (" and ".join(q) if len(q) == 2 else ", ".join(q[:-1]) + ", and " + q[-1])


def missing(param: str) -> RealtimeError:
    return RealtimeError("missing_required_parameter", f"Missing required parameter: '{param}'.", param)


def unknown(param: str) -> RealtimeError:
    return RealtimeError("unknown_parameter", f"Unknown parameter: '{param}'.", param)


def bad_type(param: str, expected: str, value: Any) -> RealtimeError:
    return RealtimeError("invalid_type", f"Invalid type for '{param}': expected {expected}, "
                         f"but got {json_type(value)} instead.", param)


def bad_value(param: str, value: Any, allowed: tuple | list) -> RealtimeError:
    return RealtimeError("invalid_value", f"Invalid value: '{value}'. Supported values are: {one_of(allowed)}.",
                         param)


def need(obj: dict, key: str, prefix: str, kind: type | tuple, expected: str) -> Any:
    """``obj[key]``, which must be present and of ``kind``."""
    if key not in obj:
        raise missing(prefix + key)
    v = obj[key]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise bad_type(prefix + key, expected, v)
    return v


def check_keys(obj: dict, allowed: set, prefix: str) -> None:
    for k in obj:
        if k not in allowed:
            raise unknown(prefix + k)


def default_turn_detection(kind: str = "server_vad") -> dict:
    if kind == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": "auto", "create_response": True, "interrupt_response": True}
    return {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
            "create_response": True, "interrupt_response": True, "idle_timeout_ms": None}


def default_session(model: str, session_id: str) -> dict:
    pcm = {"type": "audio/pcm", "rate": 24000}
    return {
        "type": "realtime", "object": "realtime.session", "id": session_id, "model": model,
        "output_modalities": ["audio"], "instructions": "",
        "audio": {"input": {"format": dict(pcm), "transcription": None, "noise_reduction": None,
                            "turn_detection": default_turn_detection()},
                  "output": {"format": dict(pcm), "voice": "alloy", "speed": 1.0}},
        "tools": [], "tool_choice": "auto", "max_output_tokens": "inf", "tracing": None, "truncation": "auto",
        "prompt": None, "include": None, "expires_at": int(time.time()) + 3600,
    }


def _check_format(fmt: Any, p: str) -> None:
    if not isinstance(fmt, dict):
        raise bad_type(p, "an object", fmt)
    kind = need(fmt, "type", p + ".", str, "a string")
    if kind not in ("audio/pcm", "audio/pcmu", "audio/pcma"):
        raise bad_value(p + ".type", kind, ("audio/pcm", "audio/pcmu", "audio/pcma"))
    if kind != "audio/pcm":  # G.711 at 8 kHz: A.5 has no `rate` for it, and GA rejects unknown fields
        return check_keys(fmt, {"type"}, p + ".")
    rate = fmt.get("rate", 24000)
    if not isinstance(rate, int) or isinstance(rate, bool):
        raise bad_type(p + ".rate", "an integer", rate)
    if rate != 24000:
        below = rate < 24000
        raise RealtimeError("integer_below_min_value" if below else "integer_above_max_value",
                            f"Invalid '{p}.rate': integer {'below minimum' if below else 'above maximum'} value. "
                            f"Expected a value {'>=' if below else '<='} 24000, but got {rate} instead.", p + ".rate")


def _check_turn_detection(td: Any, p: str) -> None:
    if td is None:
        return
    if not isinstance(td, dict):
        raise bad_type(p, "an object", td)
    kind = need(td, "type", p + ".", str, "a string")
    if kind not in VAD_FIELDS:
        raise bad_value(p + ".type", kind, tuple(VAD_FIELDS))
    check_keys(td, VAD_FIELDS[kind], p + ".")
    thr = td.get("threshold", 0.5)
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0.0 <= thr <= 1.0:
        raise RealtimeError("invalid_value", f"Invalid '{p}.threshold': expected a number between 0 and 1.",
                            p + ".threshold")
    for key in ("prefix_padding_ms", "silence_duration_ms"):
        if key in td and (isinstance(td[key], bool) or not isinstance(td[key], int) or td[key] < 0):
            raise bad_type(p + "." + key, "a non-negative integer", td[key])
    if kind == "semantic_vad" and td.get("eagerness", "auto") not in ("low", "medium", "high", "auto"):
        raise bad_value(p + ".eagerness", td["eagerness"], ("low", "medium", "high", "auto"))
    idle = td.get("idle_timeout_ms")   # server_vad only: semantic_vad refuses it as an unknown parameter
    if idle is not None and (isinstance(idle, bool) or not isinstance(idle, int) or idle < 0):
        raise bad_type(p + ".idle_timeout_ms", "a non-negative integer", idle)


REASONING_EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
NOISE_REDUCTION = ("near_field", "far_field")


def _check_reasoning(r: Any, p: str) -> None:
    if r is None:
        return
    if not isinstance(r, dict):
        raise bad_type(p, "an object", r)
    check_keys(r, {"effort"}, p + ".")
    if r.get("effort") is not None and r["effort"] not in REASONING_EFFORTS:
        raise bad_value(p + ".effort", r["effort"], REASONING_EFFORTS)


def _check_truncation(t: Any, p: str) -> None:
    if isinstance(t, str):
        if t not in ("auto", "disabled"):
            raise bad_value(p, t, ("auto", "disabled"))
        return
    if not isinstance(t, dict):
        raise bad_type(p, "a string or an object", t)
    check_keys(t, {"type", "retention_ratio", "token_limits"}, p + ".")
    if need(t, "type", p + ".", str, "a string") != "retention_ratio":
        raise bad_value(p + ".type", t["type"], ("retention_ratio",))
    ratio = need(t, "retention_ratio", p + ".", (int, float), "a number")
    if isinstance(ratio, bool) or not 0.0 <= ratio <= 1.0:
        raise RealtimeError("invalid_value", f"Invalid '{p}.retention_ratio': expected a number between 0 and 1.",
                            p + ".retention_ratio")


def _check_modalities(mods: Any, p: str) -> None:
    if mods not in (["audio"], ["text"]):
        raise RealtimeError("invalid_value", f"Invalid '{p}': expected ['audio'] or ['text'].", p)


def _check_tools(tools: Any, p: str) -> None:
    if not isinstance(tools, list):
        raise bad_type(p, "an array", tools)
    for i, t in enumerate(tools):
        q = f"{p}[{i}]"
        if not isinstance(t, dict):
            raise bad_type(q, "an object", t)
        check_keys(t, {"type", "name", "description", "parameters"}, q + ".")  # flat schema (A.9)
        if need(t, "type", q + ".", str, "a string") != "function":
            raise bad_value(q + ".type", t["type"], ("function",))
        need(t, "name", q + ".", str, "a string")


def _check_audio(audio: Any, p: str) -> None:
    if not isinstance(audio, dict):
        raise bad_type(p, "an object", audio)
    check_keys(audio, set(AUDIO_FIELDS), p + ".")
    for side, fields in AUDIO_FIELDS.items():
        if side not in audio:
            continue
        sub, q = audio[side], f"{p}.{side}"
        if not isinstance(sub, dict):
            raise bad_type(q, "an object", sub)
        check_keys(sub, fields, q + ".")
        if "format" in sub:
            _check_format(sub["format"], q + ".format")
        if "turn_detection" in sub:
            _check_turn_detection(sub["turn_detection"], q + ".turn_detection")
        for key in ("transcription", "noise_reduction"):
            if sub.get(key) is not None and not isinstance(sub[key], dict):
                raise bad_type(f"{q}.{key}", "an object", sub[key])
        nr = sub.get("noise_reduction")
        if nr is not None and need(nr, "type", q + ".noise_reduction.", str, "a string") not in NOISE_REDUCTION:
            raise bad_value(q + ".noise_reduction.type", nr["type"], NOISE_REDUCTION)
        if "voice" in sub and not isinstance(sub["voice"], (str, dict)):
            raise bad_type(q + ".voice", "a string", sub["voice"])
        spd = sub.get("speed", 1.0)
        if isinstance(spd, bool) or not isinstance(spd, (int, float)) or not 0.25 <= spd <= 1.5:
            raise RealtimeError("invalid_value", f"Invalid '{q}.speed': expected a number between 0.25 and 1.5.",
                                q + ".speed")


def deep_merge(base: dict, patch: dict) -> dict:
    """Return ``base`` updated by ``patch``; nested objects merge, everything else replaces."""
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def merge_session(current: dict, patch: Any, *, audio_produced: bool) -> dict:
    """Validate a ``session.update`` payload and return the new effective config (``current`` untouched)."""
    if not isinstance(patch, dict):
        raise bad_type("session", "an object", patch)
    kind = need(patch, "type", "session.", str, "a string")
    if kind not in ("realtime", "transcription"):
        raise bad_value("session.type", kind, ("realtime", "transcription"))
    if kind != current["type"]:
        raise RealtimeError("invalid_value", f"Passing a {kind} session update event to a {current['type']} "
                            "session is not allowed.", "session.type")
    check_keys(patch, SESSION_FIELDS, "session.")  # also catches the beta flat fields (modalities, voice, ...)
    if "output_modalities" in patch:
        _check_modalities(patch["output_modalities"], "session.output_modalities")
    if "instructions" in patch and not isinstance(patch["instructions"], str):
        raise bad_type("session.instructions", "a string", patch["instructions"])
    if "tools" in patch:
        _check_tools(patch["tools"], "session.tools")
    mot = patch.get("max_output_tokens", "inf")
    if mot != "inf" and (isinstance(mot, bool) or not isinstance(mot, int) or not 1 <= mot <= 4096):
        raise RealtimeError("invalid_value", "Invalid 'session.max_output_tokens': expected an integer between "
                            "1 and 4096, or 'inf'.", "session.max_output_tokens")
    if "audio" in patch:
        _check_audio(patch["audio"], "session.audio")
    if "reasoning" in patch:
        _check_reasoning(patch["reasoning"], "session.reasoning")
    if "truncation" in patch:
        _check_truncation(patch["truncation"], "session.truncation")
    patch = {k: v for k, v in patch.items() if k != "model"}  # the model never changes
    out_p = patch.get("audio", {}).get("output", {})
    cur_out = current["audio"]["output"]
    if audio_produced and "voice" in out_p and out_p["voice"] != cur_out["voice"]:
        raise RealtimeError("cannot_update_voice", "Cannot update a conversation's voice if assistant audio "
                            "is present.", "session.audio.output.voice")
    td = patch.get("audio", {}).get("input", {}).get("turn_detection")
    cur_td = current["audio"]["input"]["turn_detection"]
    merged = deep_merge(current, patch)
    for side, sub in (patch.get("audio") or {}).items():   # a format is replaced whole (pcmu has no `rate`)
        if isinstance(sub, dict) and sub.get("format") is not None:
            merged["audio"][side]["format"] = copy.deepcopy(sub["format"])
    if isinstance(td, dict) and (cur_td is None or cur_td.get("type") != td["type"]):
        merged["audio"]["input"]["turn_detection"] = {**default_turn_detection(td["type"]), **td}
    return merged


def check_response_params(params: Any) -> dict:
    """Validate the optional ``response`` object of ``response.create``."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise bad_type("response", "an object", params)
    check_keys(params, RESPONSE_FIELDS, "response.")  # beta: modalities, voice, output_audio_format
    if "output_modalities" in params:
        _check_modalities(params["output_modalities"], "response.output_modalities")
    if "instructions" in params and not isinstance(params["instructions"], str):
        raise bad_type("response.instructions", "a string", params["instructions"])
    if params.get("conversation", "auto") not in ("auto", "none"):
        raise bad_value("response.conversation", params["conversation"], ("auto", "none"))
    if "tools" in params:
        _check_tools(params["tools"], "response.tools")
    audio = params.get("audio")
    if audio is not None:
        if not isinstance(audio, dict):
            raise bad_type("response.audio", "an object", audio)
        check_keys(audio, {"output"}, "response.audio.")
        out = audio.get("output", {})
        if not isinstance(out, dict):
            raise bad_type("response.audio.output", "an object", out)
        check_keys(out, {"format", "voice"}, "response.audio.output.")
        if "format" in out:
            _check_format(out["format"], "response.audio.output.format")
    return params


CONTENT_TYPES = {"user": ("input_text", "input_audio", "input_image"), "system": ("input_text",),
                 "assistant": ("output_text", "output_audio")}


def check_item(item: Any) -> dict:
    """Validate a ``conversation.item.create`` item; return it normalised (id, object, status)."""
    if not isinstance(item, dict):
        raise missing("item") if item is None else bad_type("item", "an object", item)
    kind = need(item, "type", "item.", str, "a string")
    if kind == "message":
        role = need(item, "role", "item.", str, "a string")
        if role not in CONTENT_TYPES:
            raise bad_value("item.role", role, tuple(CONTENT_TYPES))
        content = need(item, "content", "item.", list, "an array")
        for i, part in enumerate(content):
            p = f"item.content[{i}]"
            if not isinstance(part, dict):
                raise bad_type(p, "an object", part)
            ptype = need(part, "type", p + ".", str, "a string")
            if ptype not in CONTENT_TYPES[role]:
                raise bad_value(p + ".type", ptype, CONTENT_TYPES[role])
            if ptype in ("input_text", "output_text"):
                need(part, "text", p + ".", str, "a string")
    elif kind == "function_call_output":
        need(item, "call_id", "item.", str, "a string")
        need(item, "output", "item.", str, "a string")
    elif kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            need(item, key, "item.", str, "a string")
    else:
        raise bad_value("item.type", kind, ("message", "function_call", "function_call_output"))
    if "id" in item and not isinstance(item["id"], str):
        raise bad_type("item.id", "a string", item["id"])
    out = copy.deepcopy(item)
    out.setdefault("id", new_id("item"))
    out["object"] = "realtime.item"
    out.setdefault("status", "completed")
    return out


SCRIPT_KEYS = {"audio", "tone_hz", "tone_seconds", "transcript", "text", "function_call"}


def check_script(script: Any) -> list[dict]:
    """Validate a ``FakeRealtimeServer(script=...)`` list (see there); ValueError names the bad entry.
    Returns normalised copies: function_call arguments as a JSON string."""
    if script is None:
        return []
    if not isinstance(script, list):
        raise ValueError("script must be a list of dicts")
    out = []
    for i, entry in enumerate(script):
        where = f"script[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be a dict, not {type(entry).__name__}")
        if set(entry) - SCRIPT_KEYS:
            raise ValueError(f"{where}: unknown keys {sorted(set(entry) - SCRIPT_KEYS)}")
        e = copy.deepcopy(entry)
        if e.get("audio") not in (None, "tone", "echo", "none"):
            raise ValueError(f"{where}.audio must be 'tone', 'echo' or 'none', not {e['audio']!r}")
        for key in ("tone_hz", "tone_seconds"):
            if key in e and (isinstance(e[key], bool) or not isinstance(e[key], (int, float)) or e[key] <= 0):
                raise ValueError(f"{where}.{key} must be a positive number")
        for key in ("transcript", "text"):
            if e.get(key) is not None and not isinstance(e[key], str):
                raise ValueError(f"{where}.{key} must be a string")
        fc = e.get("function_call")
        if fc is not None:
            if not isinstance(fc, dict) or not isinstance(fc.get("name"), str) or not fc["name"]:
                raise ValueError(f"{where}.function_call needs a 'name' string")
            if set(fc) - {"name", "arguments"}:
                raise ValueError(f"{where}.function_call: unknown keys {sorted(set(fc) - {'name', 'arguments'})}")
            args = fc.get("arguments", {})
            if not isinstance(args, (dict, str)):
                raise ValueError(f"{where}.function_call.arguments must be a dict or a string")
            e["function_call"] = {"name": fc["name"],
                                  "arguments": args if isinstance(args, str) else json.dumps(args)}
        out.append(e)
    return out
