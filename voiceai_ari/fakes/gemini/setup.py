"""What the fake Gemini Live server accepts as a first message, and how it refuses the rest.

The real service has no JSON error event: a bad request ends the socket with a close code and a reason
text (gemini-live.md §10). `SetupError` carries both. Keys are accepted in camelCase and snake_case, as
the real server parses standard proto-JSON (§1).
"""

from __future__ import annotations

import re
from typing import Any

KNOWN_MODELS = ("gemini-3.8-live", "gemini-3.8-live-extended-thinking", "gemini-3.1-flash-live-preview",
                "gemini-2.5-flash-native-audio-preview-12-2025", "gemini-2.5-flash-native-audio-preview-09-2025",
                "gemini-2.5-flash-native-audio-latest")
SENSITIVITY = {"startOfSpeechSensitivity": ("START_SENSITIVITY_UNSPECIFIED", "START_SENSITIVITY_HIGH",
                                            "START_SENSITIVITY_LOW"),
               "endOfSpeechSensitivity": ("END_SENSITIVITY_UNSPECIFIED", "END_SENSITIVITY_HIGH",
                                          "END_SENSITIVITY_LOW")}
ACTIVITY_HANDLING = ("ACTIVITY_HANDLING_UNSPECIFIED", "START_OF_ACTIVITY_INTERRUPTS", "NO_INTERRUPTION")
INVALID_ARGUMENT = "Request contains an invalid argument."
BAD_KEY = "API key not valid. Please pass a valid API key."
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")


class SetupError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def normalise(value: Any) -> Any:
    """snake_case keys to camelCase, recursively (the server takes both)."""
    if isinstance(value, dict):
        return {camel(k): normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def _invalid(path: str, what: str) -> SetupError:
    # the shape of the real reason texts: "* BidiGenerateContentRequest.setup.<path>: <what>"
    return SetupError(1007, f"* BidiGenerateContentRequest.setup.{path}: {what}")


def check_setup(setup: Any) -> dict[str, Any]:
    """The normalised setup, or SetupError (1007 malformed, 1008 unknown model)."""
    if not isinstance(setup, dict):
        raise SetupError(1007, INVALID_ARGUMENT)
    s = normalise(setup)
    model = s.get("model")
    if not isinstance(model, str) or not model.startswith("models/"):
        raise _invalid("model", "must be of the form models/{model}")
    if model.removeprefix("models/") not in KNOWN_MODELS:
        raise SetupError(1008, f"{model} is not found for API version v1beta, or is not supported for "
                               "bidiGenerateContent. Call ListModels to see the list of available models "
                               "and their supported methods.")
    gen = s.get("generationConfig") or {}
    modalities = gen.get("responseModalities", ["AUDIO"])
    if not isinstance(modalities, list) or len(modalities) != 1 or modalities[0] not in ("AUDIO", "TEXT"):
        raise _invalid("generation_config.response_modalities", "exactly one of AUDIO or TEXT is allowed")
    voice = (((gen.get("speechConfig") or {}).get("voiceConfig") or {}).get("prebuiltVoiceConfig") or {})
    if "voiceName" in voice and not isinstance(voice["voiceName"], str):
        raise _invalid("generation_config.speech_config.voice_config.prebuilt_voice_config.voice_name",
                       "must be a string")
    ric = s.get("realtimeInputConfig") or {}
    aad = ric.get("automaticActivityDetection") or {}
    for key, allowed in SENSITIVITY.items():
        if key in aad and aad[key] not in allowed:
            raise _invalid(f"realtime_input_config.automatic_activity_detection.{key}",
                           f"invalid value {aad[key]!r}")
    for key in ("prefixPaddingMs", "silenceDurationMs"):
        if key in aad and (not isinstance(aad[key], int) or isinstance(aad[key], bool) or aad[key] < 0):
            raise _invalid(f"realtime_input_config.automatic_activity_detection.{key}", "must be a non-negative integer")
    if "activityHandling" in ric and ric["activityHandling"] not in ACTIVITY_HANDLING:
        raise _invalid("realtime_input_config.activity_handling", f"invalid value {ric['activityHandling']!r}")
    for i, tool in enumerate(s.get("tools") or []):
        for j, fd in enumerate((tool or {}).get("functionDeclarations") or []):
            if not isinstance(fd, dict) or not isinstance(fd.get("name"), str) or not NAME_RE.fullmatch(fd["name"]):
                raise _invalid(f"tools[{i}].function_declarations[{j}].name",
                               "must start with a letter or underscore and be at most 128 characters")
            if "parameters" in fd and "parametersJsonSchema" in fd:
                raise _invalid(f"tools[{i}].function_declarations[{j}]",
                               "only one of parameters or parameters_json_schema may be set")
    comp = s.get("contextWindowCompression")
    if comp is not None and not isinstance(comp, dict):
        raise _invalid("context_window_compression", "must be an object")
    return s
