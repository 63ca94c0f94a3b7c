"""Conversation items and response streaming for the fake Realtime server (a mixin of
``fake_realtime.FakeSession``).

Items: ``conversation.item.create|retrieve|delete|truncate``. Truncation is checked against the audio
actually sent for an assistant item ("Audio content of Xms is already shorter than Yms").

Event order follows A.7.1: ``response.created`` -> ``rate_limits.updated`` -> ``response.output_item.added``
-> ``conversation.item.added`` -> ``response.content_part.added`` -> N x (transcript delta, audio delta)
-> ``response.output_audio.done`` -> ``response.output_audio_transcript.done`` -> ``response.content_part.done``
-> ``conversation.item.done`` -> ``response.output_item.done`` -> ``response.done``. A cancelled response
(``response.cancel`` or barge-in) still gets every "...done" event, then ``response.done`` with status
``cancelled``. Audio chunks are 10..200 ms (seeded RNG) and paced at ``speed`` x real time against an
absolute schedule.

A scripted response (``FakeRealtimeServer(script=...)``) may add a function call after its message (A.9):
``response.output_item.added`` (function_call, in_progress, ``arguments:""``) -> ``conversation.item.added``
-> 1..3 x ``response.function_call_arguments.delta`` -> ``response.function_call_arguments.done`` ->
``conversation.item.done`` -> ``response.output_item.done`` -> ``response.done`` listing both items. A
``function_call_output`` item is refused (``invalid_tool_call_id``) unless its ``call_id`` belongs to a
function_call item in the conversation.

``FakeRealtimeServer(fail_responses=[code, ...])`` makes a session's first responses fail as the live API's do:
``response.created``, then ``response.done`` with status ``failed`` and ``status_details`` ``{"type": "failed",
"error": {"type", "code"}}``, nothing in between.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import os
import re
import string
from dataclasses import dataclass, field

from .. import audio_gen
from ...media.codec import g711_decode, g711_encode
from ...media.resample import StreamResampler
from .schema import SERVER_ERROR_MESSAGE, RealtimeError, check_item, check_response_params, need, new_id

log = logging.getLogger(__name__)

RATE = 24000
FAIL_TYPES = {"insufficient_quota": "insufficient_quota", "rate_limit_exceeded": "rate_limit_exceeded",
              "server_error": "server_error"}
BYTES_PER_MS = RATE * 2 // 1000  # 48; the session keeps all input audio as 24 kHz PCM16, whatever its format
TONE_MARK = re.compile(r"\[tone (\d{2,4}) Hz\]")   # FakeRealtimeServer(tone_from_instructions=True)
G711_LAWS = {"audio/pcmu": "ulaw", "audio/pcma": "alaw"}
for _law in G711_LAWS.values():
    g711_encode(bytes(2), _law)   # builds the law's 64 KiB table now, not inside the first reply


class G711Stream:
    """24 kHz PCM16 LE (what the fake makes and keeps) to 8 kHz G.711, as the real server sends pcmu/pcma, one
    delta at a time: converting a whole long reply at once would hold the event loop (and with it whatever
    else runs in the process, such as a test's phone) for tens of milliseconds. ``total`` caps the output at
    the reply's own length (the filter's flushed tail is cut)."""

    def __init__(self, law: str, total: int) -> None:
        self.law, self.left = law, total
        self._down = StreamResampler(RATE, 8000)

    def take(self, pcm: bytes, last: bool) -> bytes:
        out = self._down.process(pcm) + (self._down.flush() if last else b"")
        enc = g711_encode(out[:2 * self.left], self.law)
        self.left -= len(enc)
        return enc


def to_g711(pcm: bytes, law: str) -> bytes:
    """A whole reply as 8 kHz G.711 (tests)."""
    return G711Stream(law, len(pcm) // 6).take(pcm, last=True)


def from_g711(payload: bytes, law: str, up: StreamResampler) -> bytes:
    """8 kHz G.711 (pcmu/pcma input) to the 24 kHz PCM16 the fake's VAD and echo work on."""
    return up.process(g711_decode(payload, law))


@dataclass
class _Response:
    id: str
    params: dict
    script: dict | None = None  # the script entry this response plays, if any
    fail: str | None = None     # error code this response fails with (FakeRealtimeServer fail_responses)
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""
    task: asyncio.Task | None = None


class ConversationMixin:
    """Needs from the session: server, config, conversation_id, responses, _items, _item_audio_ms,
    _last_utterance, _active, _audio_produced, _rng, _script, _send, _error, _spawn."""

    # ---- conversation items ---------------------------------------------------------------------
    def _last_item_id(self) -> str | None:
        return next(reversed(self._items), None)

    async def _add_item(self, item: dict, prev: str | None) -> None:
        self._items[item["id"]] = item
        await self._send("conversation.item.added", previous_item_id=prev, item=copy.deepcopy(item))
        await self._send("conversation.item.done", previous_item_id=prev, item=copy.deepcopy(item))

    def _get_item(self, ev: dict) -> dict:
        item_id = need(ev, "item_id", "", str, "a string")
        if item_id not in self._items:
            raise RealtimeError("item_not_found", f"Item with item_id '{item_id}' not found.", "item_id")
        return self._items[item_id]

    async def _on_conversation_item_create(self, ev: dict) -> None:
        item = check_item(ev.get("item"))
        if item["id"] in self._items:
            raise RealtimeError("invalid_value", f"Item with id '{item['id']}' already exists.", "item.id")
        if item["type"] == "function_call_output" and not any(
                i["type"] == "function_call" and i.get("call_id") == item["call_id"] for i in self._items.values()):
            # code and text as the live API sends them (livekit/agents#3344)
            raise RealtimeError("invalid_tool_call_id", f"Tool call ID '{item['call_id']}' not found in "
                                "conversation.")
        prev = ev.get("previous_item_id", self._last_item_id())
        if prev is not None and prev != "root" and prev not in self._items:
            raise RealtimeError("invalid_value", f"Previous item with id '{prev}' not found.", "previous_item_id")
        await self._add_item(item, None if prev == "root" else prev)

    async def _on_conversation_item_retrieve(self, ev: dict) -> None:
        await self._send("conversation.item.retrieved", item=copy.deepcopy(self._get_item(ev)))

    async def _on_conversation_item_delete(self, ev: dict) -> None:
        item = self._get_item(ev)
        del self._items[item["id"]]
        await self._send("conversation.item.deleted", item_id=item["id"])

    async def _on_conversation_item_truncate(self, ev: dict) -> None:
        idx = need(ev, "content_index", "", int, "an integer")
        end_ms = need(ev, "audio_end_ms", "", int, "an integer")
        item = self._get_item(ev)
        if item.get("role") != "assistant" or item["id"] not in self._item_audio_ms:
            raise RealtimeError("invalid_value", "Only assistant messages with audio content can be truncated.",
                                "item_id")
        if idx != 0:
            raise RealtimeError("invalid_value", f"Invalid 'content_index': item has no content part {idx}.",
                                "content_index")
        have = self._item_audio_ms[item["id"]]
        if end_ms < 0 or end_ms > have:
            raise RealtimeError("invalid_value", f"Audio content of {int(have)}ms is already shorter than "
                                f"{end_ms}ms", "audio_end_ms")
        self._item_audio_ms[item["id"]] = float(end_ms)
        await self._send("conversation.item.truncated", item_id=item["id"], content_index=idx, audio_end_ms=end_ms)

    # ---- responses ------------------------------------------------------------------------------
    async def _on_response_create(self, ev: dict) -> None:
        params = check_response_params(ev.get("response"))
        if self._active is not None:
            raise RealtimeError("conversation_already_has_active_response", "Conversation already has an active "
                                f"response in progress: {self._active.id}. Wait until the response is finished "
                                "before creating a new one.")
        self._start_response(params)

    async def _on_response_cancel(self, ev: dict) -> None:
        rid = ev.get("response_id")
        if self._active is None or (rid is not None and rid != self._active.id):
            raise RealtimeError("response_cancel_not_active", "Cancellation failed: no active response found")
        await self._cancel_response("client_cancelled")

    def _start_response(self, params: dict) -> None:
        self._idle_from_ms = None   # no idle timeout while the bot answers
        if self._failures:
            r = _Response(new_id("resp"), params, fail=self._failures.pop(0))
        else:
            r = _Response(new_id("resp"), params, self._script.pop(0) if self._script else None)
        self._active = r
        r.task = self._spawn(self._run_response(r))

    async def _cancel_response(self, reason: str) -> None:
        r = self._active
        if r is None or r.task is None:
            return
        r.reason = reason
        r.cancel.set()
        await asyncio.wait({r.task})  # it sends the "...done" events and response.done (cancelled)

    async def _run_response(self, r: _Response) -> None:
        try:
            await self._stream_response(r)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("fake-realtime %s: response %s failed", self.id, r.id)
            await self._error(RealtimeError(None, SERVER_ERROR_MESSAGE, type_="server_error"))
        finally:
            if self._active is r:
                self._active = None

    def _content(self, spec: dict | None, instructions: tuple[str, ...] = ()) -> tuple[bytes, str]:
        """(audio, transcript) of the next response: the script entry's, else the mode's; echo falls back
        to the tone until a turn is committed. With ``tone_from_instructions``, a tone's pitch is the first
        "[tone N Hz]" of ``instructions`` (the response's, then the session's)."""
        srv, kind = self.server, (spec or {}).get("audio")
        if kind is None:
            kind = srv.mode
        if kind == "none":
            pcm, text = b"", ""
        elif kind == "echo" and self._last_utterance:
            pcm, text = self._last_utterance, "(echo)"
        elif kind == "wav":
            pcm, text = srv.wav_pcm, f"({os.path.basename(srv.wav_path)})"
        elif spec and ("tone_hz" in spec or "tone_seconds" in spec):
            hz = spec.get("tone_hz", srv.tone_hz)
            pcm = audio_gen.tone(hz, spec.get("tone_seconds", srv.tone_seconds), RATE, dbfs=-12.0, fade_ms=5)
            text = f"(tone {hz:g} Hz)"
        elif srv.tone_from_instructions and (m := next(filter(None, map(TONE_MARK.search, instructions)), None)):
            hz = float(m.group(1))
            pcm = audio_gen.tone(hz, srv.tone_seconds, RATE, dbfs=-12.0, fade_ms=5)
            text = f"(tone {hz:g} Hz)"
        else:
            pcm, text = srv.tone_pcm, f"(tone {srv.tone_hz:g} Hz)"
        if spec and spec.get("transcript") is not None:
            text = spec["transcript"]
        return pcm, text

    def _pieces(self, text: str) -> list[str]:
        k = min(len(text), self._rng.randint(2, 4))
        cuts = sorted(self._rng.sample(range(1, len(text)), k - 1)) if k > 1 else []
        return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]

    def _chunks(self, pcm: bytes, sample_bytes: int = 2) -> list[bytes]:
        """10..200 ms pieces of whole samples (24 kHz PCM16: sample_bytes 2; 6: whole 8 kHz samples of it, for
        a G.711 output)."""
        out, pos = [], 0
        rate = RATE if sample_bytes == 2 else 8000
        while pos < len(pcm):
            n = sample_bytes * self._rng.randint(rate // 100, rate // 5)
            out.append(pcm[pos:pos + n])
            pos += n
        return out

    async def _until(self, r: _Response, deadline: float) -> bool:
        """Sleep until loop time ``deadline``; True as soon as the response is cancelled."""
        delay = deadline - asyncio.get_running_loop().time()
        if r.cancel.is_set() or delay <= 0:
            await asyncio.sleep(0)
            return r.cancel.is_set()
        try:
            await asyncio.wait_for(r.cancel.wait(), delay)
            return True
        except TimeoutError:
            return False

    async def _stream_response(self, r: _Response) -> None:
        cfg, p, spec = self.config, r.params, r.script
        modality = (p.get("output_modalities") or cfg["output_modalities"])[0]
        out_audio = copy.deepcopy(cfg["audio"]["output"])
        out_audio.update(p.get("audio", {}).get("output", {}))
        in_conv = p.get("conversation", "auto") != "none"
        resp = {"object": "realtime.response", "id": r.id, "status": "in_progress", "status_details": None,
                "output": [], "conversation_id": self.conversation_id if in_conv else None,
                "output_modalities": [modality], "max_output_tokens": p.get("max_output_tokens",
                                                                           cfg["max_output_tokens"]),
                "audio": {"output": {"format": out_audio["format"], "voice": out_audio["voice"]}},
                "usage": None, "metadata": p.get("metadata")}
        await self._send("response.created", response=copy.deepcopy(resp))
        if r.fail is not None:
            return await self._fail_response(r, resp)
        await self._send("rate_limits.updated", rate_limits=[
            {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
            {"name": "tokens", "limit": 40000, "remaining": 35000, "reset_seconds": 7.5}])
        pcm, text = self._content(spec, (p.get("instructions") or "", cfg.get("instructions") or ""))
        silent = spec is not None and spec.get("audio") == "none"
        if spec is not None and spec.get("text") is not None and (silent or modality == "text"):
            text = spec["text"]
        t0 = asyncio.get_running_loop().time() + self.server.response_delay_s
        output, cancelled, sent_ms, sent_text = [], False, 0.0, ""
        if not (silent and (spec.get("text") is None)):
            item, cancelled, sent_ms, sent_text = await self._stream_message(
                r, t0, modality == "audio" and not silent, pcm, text, in_conv, out_audio["format"])
            output.append(item)
        elif await self._until(r, t0):
            cancelled = True
        call = (spec or {}).get("function_call")
        if call is not None and not cancelled:
            item = await self._stream_function_call(r, call, len(output), in_conv)
            output.append(item)
            sent_text += item["arguments"]
        in_tokens = 120 + len(self._last_utterance or b"") // (BYTES_PER_MS * 100)
        out_audio_tok, out_text_tok = int(sent_ms / 50), max(1, len(sent_text) // 4)
        resp.update(status="cancelled" if cancelled else "completed", output=copy.deepcopy(output),
                    status_details={"type": "cancelled", "reason": r.reason} if cancelled else None,
                    usage={"total_tokens": in_tokens + out_audio_tok + out_text_tok, "input_tokens": in_tokens,
                           "output_tokens": out_audio_tok + out_text_tok,
                           "input_token_details": {"text_tokens": 120, "audio_tokens": in_tokens - 120,
                                                   "image_tokens": 0, "cached_tokens": 0, "cached_tokens_details":
                                                   {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}},
                           "output_token_details": {"text_tokens": out_text_tok, "audio_tokens": out_audio_tok}})
        await self._finish(r, resp, 0 if cancelled else sent_ms)

    async def _finish(self, r: _Response, resp: dict, playback_ms: float) -> None:
        """response.done; an idle timeout counts from when the caller has heard the response (A.4)."""
        if self._active is r:
            self._active = None
        self._idle_from_ms = len(self.audio) / BYTES_PER_MS + playback_ms
        self.responses.append(resp)
        await self._send("response.done", response=copy.deepcopy(resp))

    async def _fail_response(self, r: _Response, resp: dict) -> None:
        """A response that fails at once (quota, rate limit, server error), shaped as the live API's."""
        kind = FAIL_TYPES.get(r.fail or "", "server_error")
        resp.update(status="failed", status_details={"type": "failed", "error": {"type": kind, "code": r.fail}})
        await self._finish(r, resp, 0)

    async def _stream_message(self, r: _Response, t0: float, is_audio: bool, pcm: bytes, text: str,
                              in_conv: bool, fmt: dict | None = None) -> tuple[dict, bool, float, str]:
        """The assistant message item at output_index 0; returns (item, cancelled, audio ms, text sent).

        ``pcm`` is 24 kHz PCM16; an ``audio/pcmu|pcma`` output format gets it as 8 kHz G.711."""
        law = G711_LAWS.get((fmt or {}).get("type", "audio/pcm"))
        bpm = BYTES_PER_MS if law is None else 8
        g711 = G711Stream(law, len(pcm) // 6) if is_audio and law is not None else None
        item_id = new_id("item")
        item = {"id": item_id, "object": "realtime.item", "type": "message", "status": "in_progress",
                "role": "assistant", "content": []}
        ids = {"response_id": r.id, "item_id": item_id, "output_index": 0}
        prev = self._last_item_id()
        await self._send("response.output_item.added", response_id=r.id, output_index=0, item=copy.deepcopy(item))
        if in_conv:
            self._items[item_id] = item
            await self._send("conversation.item.added", previous_item_id=prev, item=copy.deepcopy(item))
        kind, key = ("audio", "transcript") if is_audio else ("text", "text")
        await self._send("response.content_part.added", **ids, content_index=0, part={"type": kind, key: ""})
        pieces = self._pieces(text) if text else []
        # G.711: 24 kHz slices of whole 8 kHz samples (6 bytes each), each converted as it is sent
        chunks = self._chunks(pcm, 2 if law is None else 6) if is_audio else [b""] * len(pieces)
        sent_text, sent_bytes = "", 0
        if is_audio:
            self._item_audio_ms[item_id] = 0.0
        speed = max(self.server.speed, 1e-6)
        cancelled = False
        for i, chunk in enumerate(chunks):
            due = t0 + (sent_bytes / bpm / 1000 if is_audio else i * 0.02) / speed
            if await self._until(r, due):
                cancelled = True
                break
            if i < len(pieces):
                sent_text += pieces[i]
                await self._send("response.output_audio_transcript.delta" if is_audio
                                 else "response.output_text.delta", **ids, content_index=0, delta=pieces[i])
            if is_audio:
                if g711 is not None:
                    chunk = g711.take(chunk, last=i == len(chunks) - 1)
                await self._send("response.output_audio.delta", **ids, content_index=0,
                                 delta=base64.b64encode(chunk).decode("ascii"))
                sent_bytes += len(chunk)
                self._item_audio_ms[item_id] = sent_bytes / bpm
                self._audio_produced = True
        if not cancelled and (r.cancel.is_set() or await self._until(r, t0 + sent_bytes / bpm / 1000
                                                                     / speed)):
            cancelled = True
        if not cancelled:
            for piece in pieces[len(chunks):]:
                sent_text += piece
                await self._send("response.output_audio_transcript.delta", **ids, content_index=0, delta=piece)
        if is_audio:
            await self._send("response.output_audio.done", **ids, content_index=0)
            await self._send("response.output_audio_transcript.done", **ids, content_index=0, transcript=sent_text)
        else:
            await self._send("response.output_text.done", **ids, content_index=0, text=sent_text)
        await self._send("response.content_part.done", **ids, content_index=0, part={"type": kind, key: sent_text})
        item["status"] = "incomplete" if cancelled else "completed"
        item["content"] = [{"type": "output_" + kind, key: sent_text}]
        if in_conv:
            await self._send("conversation.item.done", previous_item_id=prev, item=copy.deepcopy(item))
        await self._send("response.output_item.done", response_id=r.id, output_index=0, item=copy.deepcopy(item))
        return item, cancelled, sent_bytes / bpm, sent_text

    async def _stream_function_call(self, r: _Response, call: dict, index: int, in_conv: bool) -> dict:
        """A function_call output item (A.9): added, argument deltas, arguments.done, done."""
        name, args = call["name"], call["arguments"]
        call_id = "call_" + "".join(self._rng.choices(string.ascii_letters + string.digits, k=16))
        item = {"id": new_id("item"), "object": "realtime.item", "type": "function_call", "status": "in_progress",
                "name": name, "call_id": call_id, "arguments": ""}
        prev = self._last_item_id()
        await self._send("response.output_item.added", response_id=r.id, output_index=index,
                         item=copy.deepcopy(item))
        if in_conv:
            self._items[item["id"]] = item
            await self._send("conversation.item.added", previous_item_id=prev, item=copy.deepcopy(item))
        ids = {"response_id": r.id, "item_id": item["id"], "output_index": index, "call_id": call_id}
        k = max(1, min(len(args), self._rng.randint(2, 3)))
        cuts = sorted(self._rng.sample(range(1, len(args)), k - 1)) if k > 1 else []
        for a, b in zip([0, *cuts], [*cuts, len(args)], strict=True):
            await self._send("response.function_call_arguments.delta", **ids, delta=args[a:b])
        await self._send("response.function_call_arguments.done", **ids, name=name, arguments=args)
        item.update(status="completed", arguments=args)
        if in_conv:
            await self._send("conversation.item.done", previous_item_id=prev, item=copy.deepcopy(item))
        await self._send("response.output_item.done", response_id=r.id, output_index=index,
                         item=copy.deepcopy(item))
        return item
