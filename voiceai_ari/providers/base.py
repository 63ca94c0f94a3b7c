"""The narrow interface between a call and a speech-to-speech model provider.

A `Call` only ever talks to a `ModelSession`: it feeds caller audio (24 kHz PCM16 LE), reads provider-neutral
`ModelEvent`s, and reports a barge-in. OpenAI Realtime GA lives in `openai_realtime/`; another provider (Gemini
Live, ...) is one more module implementing the same protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, Union

MODEL_RATE = 24000  # Hz, PCM16 LE mono, both directions


@dataclass(frozen=True, slots=True)
class SessionReady:
    session_id: str


@dataclass(frozen=True, slots=True)
class AudioDelta:
    item_id: str
    pcm: bytes  # 24 kHz PCM16 LE


@dataclass(frozen=True, slots=True)
class AudioDone:
    item_id: str


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str | None


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str | None


@dataclass(frozen=True, slots=True)
class Transcript:
    role: Literal["caller", "bot"]
    text: str
    item_id: str | None


@dataclass(frozen=True, slots=True)
class ResponseDone:
    status: str   # completed, cancelled, failed (a ModelError with the cause comes just before), incomplete
    reason: str | None
    usage: dict | None = field(default=None, compare=False)  # provider's token usage for this response
    superseded: bool = False   # the server's own response, cancelled for ours (`respond_instead`): not heard


@dataclass(frozen=True, slots=True)
class CallerIdle:
    """The caller said nothing for the idle timeout after the bot's last words (the provider's own timer)."""
    silent_ms: int


@dataclass(frozen=True, slots=True)
class ModelError:
    code: str
    message: str
    fatal: bool


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for a function call; delivered once per call_id."""
    call_id: str
    name: str
    arguments: str  # raw JSON text from the model


@dataclass(frozen=True, slots=True)
class UsageUpdate:
    """Usage billed outside any response (GPT-Live bills session time): priced like ResponseDone.usage."""
    usage: dict


@dataclass(frozen=True, slots=True)
class ModelReconnected:
    """The connection dropped or the session expired; a new session carries the conversation on."""
    session_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ModelClosed:
    reason: str


ModelEvent = Union[SessionReady, AudioDelta, AudioDone, SpeechStarted, SpeechStopped, Transcript,
                   ResponseDone, CallerIdle, ToolCall, ModelError, UsageUpdate, ModelReconnected, ModelClosed]


class ModelSession(Protocol):
    """One conversation with a model, for the life of one call."""

    async def start(self) -> None:
        """Connect and configure the session. Raises on failure to connect."""

    def send_audio(self, pcm: bytes) -> None:
        """Queue caller audio (24 kHz PCM16 LE). Never blocks."""

    def interrupt(self, item_id: str | None, played_ms: int) -> None:
        """The caller barged in: the bot's item `item_id` was heard up to `played_ms`."""

    def send_tool_result(self, call_id: str, output: str, respond: bool = True) -> None:
        """Return a tool's result; with `respond`, ask for a response once the current one is done."""

    def send_text(self, text: str, respond: bool = False) -> None:
        """Add a user text item (e.g. "The caller pressed 5"), optionally asking for a response."""

    def request_response(self, instructions: str | None = None) -> None:
        """Ask the model to speak now (greeting), once no response is active."""

    def respond_instead(self, instructions: str) -> None:
        """The server is about to answer by itself (after CallerIdle): speak `instructions` instead of that."""

    def say(self, text: str) -> None:
        """Operator line: make the bot tell the caller `text` (an instruction item plus a response)."""

    def update_instructions(self, instructions: str) -> None:
        """Replace the session's instructions mid-call."""

    def events(self) -> AsyncIterator[ModelEvent]:
        """Events until the session ends; the last one is ModelClosed."""

    async def close(self) -> None:
        """Close the connection; idempotent."""
