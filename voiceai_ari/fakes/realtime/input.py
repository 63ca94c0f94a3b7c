"""Session config and input audio for the fake Realtime server (a mixin of ``fake_realtime.FakeSession``).

``session.update`` (validated and merged by ``fake_realtime_schema``), ``input_audio_buffer.append|commit|clear``
and the energy VAD (``fake_vad``) that turns appended audio into ``speech_started``/``speech_stopped``/
``committed`` + a user item, starts a response (``create_response``) and cancels the active one on speech
(``interrupt_response``). ``semantic_vad`` is accepted and run as the same energy VAD with its
``eagerness`` mapped to a silence duration. ``idle_timeout_ms`` (server_vad): that much input audio without
speech after the last response was heard (its ``response.done`` plus its audio's length, in the input-audio
clock) gives ``timeout_triggered``, the silence committed as an item, and a response, as the reference says.
"""

from __future__ import annotations

import base64
import binascii
import copy

from .conversation import BYTES_PER_MS, G711_LAWS, RATE, from_g711
from ...media.resample import StreamResampler
from .schema import RealtimeError, merge_session, missing, need, new_id
from ..vad import EnergyVad, threshold_to_dbfs

MIN_COMMIT_MS = 100
EAGERNESS_SILENCE_MS = {"low": 1000, "medium": 500, "auto": 500, "high": 250}


class InputAudioMixin:
    """Needs from the session: server, config, audio, _vad, _speech, _buf_start, _last_utterance, _active,
    _audio_produced, _send, _add_item, _last_item_id, _start_response, _cancel_response."""

    # ---- session and input audio ----------------------------------------------------------------
    @property
    def _turn_detection(self) -> dict | None:
        return self.config["audio"]["input"]["turn_detection"]

    def _configure_vad(self) -> None:
        td = self._turn_detection
        if td is None:
            self._vad, self._speech = None, None
            return
        silence = td.get("silence_duration_ms", EAGERNESS_SILENCE_MS.get(td.get("eagerness", "auto"), 500))
        self._vad = EnergyVad(threshold_dbfs=threshold_to_dbfs(td.get("threshold", 0.5),
                                                               self.server.vad_threshold_dbfs),
                              prefix_padding_ms=td.get("prefix_padding_ms", 300), silence_duration_ms=silence,
                              start_sample=len(self.audio) // 2)
        self._speech = None

    async def _on_session_update(self, ev: dict) -> None:
        if "session" not in ev:
            raise missing("session")
        old_td = self._turn_detection
        self.config = merge_session(self.config, ev["session"], audio_produced=self._audio_produced)
        if self._turn_detection != old_td:
            self._configure_vad()
        await self._send("session.updated", session=copy.deepcopy(self.config))

    async def _on_input_audio_buffer_append(self, ev: dict, record: dict) -> None:
        b64 = need(ev, "audio", "", str, "a string")
        try:
            pcm = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise RealtimeError("invalid_value", "Invalid 'audio'. Expected base64-encoded audio bytes.",
                                "audio") from None
        record["audio_bytes"] = len(pcm)
        law = G711_LAWS.get(self.config["audio"]["input"]["format"]["type"])
        if law is not None:   # 8 kHz G.711 in: kept (and judged by the VAD) as 24 kHz PCM16 like audio/pcm
            if getattr(self, "_g711_up", None) is None or self._g711_law != law:
                self._g711_up, self._g711_law = StreamResampler(8000, RATE), law
            pcm = from_g711(pcm, law, self._g711_up)
        elif len(pcm) % 2:
            raise RealtimeError("invalid_value", f"Invalid 'audio': audio/pcm must be whole 16-bit samples, "
                                f"got {len(pcm)} bytes.", "audio")
        self.audio += pcm
        if self._vad is None:
            return
        for kind, ms in self._vad.feed(pcm):
            if kind == "start":
                self._speech = (new_id("item"), ms)
                self._idle_from_ms = None
                await self._send("input_audio_buffer.speech_started", audio_start_ms=ms, item_id=self._speech[0])
                if self._active is not None and self._turn_detection.get("interrupt_response", True):
                    await self._cancel_response("turn_detected")
            elif self._speech is not None:
                item_id, start_ms = self._speech
                self._speech = None
                await self._send("input_audio_buffer.speech_stopped", audio_end_ms=ms, item_id=item_id)
                self._idle_from_ms = ms
                await self._commit(item_id, start_ms * BYTES_PER_MS, ms * BYTES_PER_MS)
                if self._turn_detection.get("create_response", True) and self._active is None:
                    self._start_response({})
        await self._check_idle()

    async def _check_idle(self) -> None:
        """server_vad ``idle_timeout_ms``: that long of input audio without speech after the last response
        was heard -> ``timeout_triggered``, the silent audio committed as an item, and a response (A.7)."""
        td = self._turn_detection
        idle_ms = td.get("idle_timeout_ms") if td is not None else None
        if not idle_ms or self._idle_from_ms is None or self._speech is not None or self._active is not None:
            return
        now_ms = len(self.audio) / BYTES_PER_MS
        if now_ms - self._idle_from_ms < idle_ms:
            return
        start_ms, self._idle_from_ms = self._idle_from_ms, None
        item_id = new_id("item")
        await self._send("input_audio_buffer.timeout_triggered", audio_start_ms=int(start_ms),
                         audio_end_ms=int(now_ms), item_id=item_id)
        said = self._last_utterance   # silence is no utterance to echo
        await self._commit(item_id, int(start_ms) * BYTES_PER_MS, len(self.audio))
        self._last_utterance = said
        if td.get("create_response", True) and self._active is None:
            self._start_response({})

    async def _on_input_audio_buffer_commit(self, ev: dict) -> None:
        have_ms = (len(self.audio) - self._buf_start) / BYTES_PER_MS
        if have_ms < MIN_COMMIT_MS:
            raise RealtimeError("input_audio_buffer_commit_empty", "Error committing input audio buffer: buffer "
                                f"too small. Expected at least {MIN_COMMIT_MS}ms of audio, but buffer only has "
                                f"{have_ms:.2f}ms of audio.")
        item_id = self._speech[0] if self._speech else new_id("item")
        if self._vad is not None:
            self._vad.reset()
        self._speech = None
        await self._commit(item_id, self._buf_start, len(self.audio))

    async def _on_input_audio_buffer_clear(self, ev: dict) -> None:
        self._buf_start = len(self.audio)
        if self._vad is not None:
            self._vad.reset()
        self._speech = None
        await self._send("input_audio_buffer.cleared")

    async def _commit(self, item_id: str, start: int, end: int) -> None:
        start = max(start, 0)
        end = min(end, len(self.audio))
        self._last_utterance = bytes(self.audio[start:end])
        self._buf_start = max(self._buf_start, end)
        prev = self._last_item_id()
        await self._send("input_audio_buffer.committed", previous_item_id=prev, item_id=item_id)
        item = {"id": item_id, "object": "realtime.item", "type": "message", "status": "completed", "role": "user",
                "content": [{"type": "input_audio", "transcript": None}]}
        await self._add_item(item, prev)
        if self.config["audio"]["input"]["transcription"] is not None:
            text = f"({len(self._last_utterance) / BYTES_PER_MS / 1000:.1f} s of audio)"
            base = {"item_id": item_id, "content_index": 0}
            await self._send("conversation.item.input_audio_transcription.delta", **base, delta=text)
            await self._send("conversation.item.input_audio_transcription.completed", **base, transcript=text,
                             usage={"type": "duration", "seconds": round(len(self._last_utterance) / 48000, 3)})
