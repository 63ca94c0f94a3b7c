"""What goes into `session.update` (GA shape, A.4 of the reference), built from Settings by the CLI.

The fields the 2.x models added (reasoning effort, truncation, noise reduction, idle timeout) are sent only
when set, so an older model or a server that does not know one never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...config import Settings

AUDIO_FORMAT_OF_CALLER = {"ulaw": "pcmu", "alaw": "pcma"}   # G.711 passthrough; every slin format is pcm
DEFAULT_MODEL = "gpt-realtime-2.1"   # gpt-realtime was deprecated 2026-07-20 and shuts down 2027-01-20
RETIRING = {  # model -> (what OpenAI announced, its successor)
    "gpt-realtime": ("deprecated 2026-07-20, shuts down 2027-01-20", "gpt-realtime-2.1"),
    "gpt-realtime-mini": ("deprecated with gpt-realtime", "gpt-realtime-2.1-mini"),
}


def retirement_notice(model: str) -> str | None:
    """A warning for a model OpenAI is retiring (logged at start), or None."""
    if model not in RETIRING:
        return None
    when, successor = RETIRING[model]
    return f"VOICEAI_MODEL={model} is {when}: set VOICEAI_MODEL={successor}"


@dataclass(frozen=True)
class SessionConfig:
    """What goes into `session.update`; built from Settings by the app."""
    model: str = DEFAULT_MODEL
    instructions: str = ""
    voice: str = "marin"
    vad_threshold: float = 0.5
    vad_prefix_padding_ms: int = 300
    vad_silence_ms: int = 500
    vad_type: str = "server_vad"          # or "semantic_vad"
    vad_eagerness: str = "auto"           # semantic_vad only
    interrupt_response: bool = True       # the server cancels its response when the caller speaks
    transcription_model: str = ""
    tools: list[dict[str, Any]] = field(default_factory=list)
    reasoning_effort: str = ""            # minimal|low|medium|high|xhigh; "" = not sent
    truncation: str | float | None = None  # "auto", "disabled", a retention ratio 0<r<1; None = not sent
    noise_reduction: str = ""             # near_field|far_field; "" = not sent
    idle_timeout_ms: int = 0              # server_vad only; 0 = not sent
    language: str = ""                    # transcription language hint (ISO 639-1); "" = not sent
    audio_format: str = "pcm"             # both ways: pcm (24 kHz PCM16 LE), pcmu or pcma (G.711 passthrough)
    append_ms: int = 20                   # caller audio per input_audio_buffer.append (client side, not sent)

    @classmethod
    def from_settings(cls, settings: Settings, tools: list[dict[str, Any]], *,
                      transcription: bool = True) -> SessionConfig:
        s = settings
        return cls(model=s.model, instructions=s.instructions, voice=s.voice, vad_threshold=s.vad_threshold,
                   vad_prefix_padding_ms=s.vad_prefix_padding_ms, vad_silence_ms=s.vad_silence_ms,
                   vad_type=s.vad_type, vad_eagerness=s.vad_eagerness, tools=tools,
                   transcription_model=s.transcription_model if transcription else "",
                   reasoning_effort=s.reasoning_effort, truncation=s.truncation_value,
                   noise_reduction=s.noise_reduction, idle_timeout_ms=s.idle_timeout_ms,
                   language=s.language,
                   audio_format=AUDIO_FORMAT_OF_CALLER.get(s.caller_format, "pcm"), append_ms=s.append_ms)

    def turn_detection(self) -> dict[str, Any]:
        if self.vad_type == "semantic_vad":
            return {"type": "semantic_vad", "eagerness": self.vad_eagerness, "create_response": True,
                    "interrupt_response": self.interrupt_response}
        td: dict[str, Any] = {"type": "server_vad", "threshold": self.vad_threshold,
                              "prefix_padding_ms": self.vad_prefix_padding_ms,
                              "silence_duration_ms": self.vad_silence_ms,
                              "create_response": True, "interrupt_response": self.interrupt_response}
        if self.idle_timeout_ms:
            td["idle_timeout_ms"] = self.idle_timeout_ms
        return td

    @property
    def bytes_per_ms(self) -> int:
        """Bytes of session audio per millisecond: 48 for 24 kHz PCM16, 8 for G.711 (a byte a sample)."""
        return 48 if self.audio_format == "pcm" else 8

    def format(self) -> dict[str, Any]:
        """audio.input.format and audio.output.format (A.5: G.711 has no `rate` field)."""
        if self.audio_format == "pcm":
            return {"type": "audio/pcm", "rate": 24000}
        return {"type": "audio/" + self.audio_format}

    def session(self) -> dict[str, Any]:
        audio_in: dict[str, Any] = {
            "format": self.format(),
            "turn_detection": self.turn_detection(),
        }
        if self.transcription_model:
            audio_in["transcription"] = {"model": self.transcription_model}
            if self.language:   # the API takes ISO 639-1: "es" of "es-MX"
                audio_in["transcription"]["language"] = self.language.split("-")[0]
        if self.noise_reduction:
            audio_in["noise_reduction"] = {"type": self.noise_reduction}
        out: dict[str, Any] = {
            "type": "realtime",
            "output_modalities": ["audio"],
            "instructions": self.instructions,
            "audio": {"input": audio_in,
                      "output": {"format": self.format(), "voice": self.voice}},
            "tools": self.tools,
            "tool_choice": "auto",
        }
        if self.reasoning_effort:
            out["reasoning"] = {"effort": self.reasoning_effort}
        if isinstance(self.truncation, float):
            out["truncation"] = {"type": "retention_ratio", "retention_ratio": self.truncation}
        elif self.truncation:
            out["truncation"] = self.truncation
        return out
