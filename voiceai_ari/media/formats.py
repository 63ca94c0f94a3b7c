"""What the caller's audio looks like on the media path (`VOICEAI_CALLER_FORMAT`), as plain data.

One row per format: what externalMedia is asked for, what Asterisk sends (payload type, bytes per 20 ms, byte
order), what the model session is told, and what goes back.

- ``slin24``: Asterisk resamples the caller to the model's 24 kHz in C; the bot only swaps bytes in, and
  returns G.722 (or L16 8 kHz), resampled 24→16 kHz.
- ``slin16``: the design card's shape. Asterisk sends 16 kHz (PT 118 on 22.10.1, learned), the bot resamples
  16→24 kHz for the model (``StreamResampler``); return as slin24.
- ``ulaw`` / ``alaw``: G.711 passthrough. PT 0 / 8, 160 bytes per 20 ms both ways, the model session in
  ``audio/pcmu`` / ``audio/pcma`` both ways: no resampling and no codec work in either direction. One byte
  is one sample at 8 kHz, so ``audio_end_ms`` = bytes / 8.
"""

from __future__ import annotations

from dataclasses import dataclass

from .codec import ALAW_SILENCE, ULAW_SILENCE

__all__ = ["CALLER_FORMATS", "CallerFormat", "caller_format"]


@dataclass(frozen=True)
class CallerFormat:
    name: str                 # VOICEAI_CALLER_FORMAT and the externalMedia `format`
    rate: int                 # Hz of what Asterisk sends
    payload_bytes: int        # per 20 ms from Asterisk
    payload_type: int | None  # None: a dynamic PT, learned from Asterisk's first packet
    passthrough: bool         # the payload is the model's audio as is (G.711), both ways
    model_format: dict        # the Realtime session's audio.input/output.format
    silence_byte: int = 0     # one sample of silence (G.711: the law's positive zero)

    @property
    def model_bytes_per_ms(self) -> int:
        """Bytes of the model's audio per millisecond (truncate's audio_end_ms = bytes / this)."""
        return 8 if self.passthrough else 48

    @property
    def model_frame_bytes(self) -> int:
        """20 ms of the model's audio."""
        return 20 * self.model_bytes_per_ms


_PCM24 = {"type": "audio/pcm", "rate": 24000}
CALLER_FORMATS = {f.name: f for f in (
    CallerFormat("slin24", 24000, 960, None, False, _PCM24),
    CallerFormat("slin16", 16000, 640, None, False, _PCM24),
    CallerFormat("ulaw", 8000, 160, 0, True, {"type": "audio/pcmu"}, ULAW_SILENCE),
    CallerFormat("alaw", 8000, 160, 8, True, {"type": "audio/pcma"}, ALAW_SILENCE),
)}


def caller_format(name: str) -> CallerFormat:
    """The row for ``name``.

    Raises:
        ValueError: unknown format.
    """
    try:
        return CALLER_FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown caller format {name!r}; expected one of {sorted(CALLER_FORMATS)}") from None
