"""Call history from the transcripts: the finished calls in VOICEAI_TRANSCRIPT_DIR, newest first.

A transcript (call/transcript.py) is one JSONL file per call, `<UTC stamp>-<channel id>.jsonl`, from
`call_start` to `call_end`. A file without `call_end` is a call still in progress (or a crashed process's) and
is not history. `summarize` turns one file's records into a row; `HistoryIndex` keeps rows cached by file
name, size and mtime, so a page load re-reads only new or grown files. Reading runs in a thread
(`asyncio.to_thread` in the dashboard), never on the event loop. A malformed line is skipped and counted.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
MAX_FILES = 5000          # newest files considered
MAX_FILE_BYTES = 8 << 20  # a larger transcript is summarised from its first 8 MB


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of one transcript file, and how many lines were not valid JSON objects."""
    records, bad = [], 0
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES)
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(rec, dict) and isinstance(rec.get("event"), str):
            records.append(rec)
        else:
            bad += 1
    return records, bad


def summarize(name: str, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One history row, or None when the call has not ended."""
    start = next((r for r in records if r["event"] == "call_start"), None)
    end = next((r for r in reversed(records) if r["event"] == "call_end"), None)
    if end is None:
        return None
    words = [str(r.get("text", "")) for r in records if r["event"] in ("caller", "bot") and r.get("text")]
    cost = end.get("cost_usd")
    return {
        "name": name,
        "started": (start or records[0]).get("ts", ""),
        "caller_number": str((start or {}).get("caller_number") or ""),
        "caller_name": str((start or {}).get("caller_name") or ""),
        "duration_s": round(float(end.get("t") or 0.0), 1),
        "reason": str(end.get("reason", "")),
        "cost_usd": round(float(cost), 6) if isinstance(cost, (int, float)) else 0.0,
        "turns": len(words),
        "tools": sum(1 for r in records if r["event"] == "tool_call"),
        "errors": sum(1 for r in records if r["event"] in ("error", "response_failed", "fallback")),
        "agent": (start or {}).get("agent"),
        "text": " ".join(words),
    }


def day_totals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per UTC day (from the start time), newest first: calls, minutes, cost."""
    days: dict[str, dict[str, Any]] = {}
    for r in rows:
        day = r["started"][:10] or "?"
        d = days.setdefault(day, {"day": day, "calls": 0, "duration_s": 0.0, "cost_usd": 0.0})
        d["calls"] += 1
        d["duration_s"] += r["duration_s"]
        d["cost_usd"] += r["cost_usd"]
    out = sorted(days.values(), key=lambda d: d["day"], reverse=True)
    for d in out:
        d["duration_s"], d["cost_usd"] = round(d["duration_s"], 1), round(d["cost_usd"], 6)
    return out


def matches(row: dict[str, Any], query: str) -> bool:
    """Every word of the query is in the caller's number or name, or in what was said (case-insensitive)."""
    hay = f"{row['caller_number']} {row['caller_name']} {row['text']}".lower()
    return all(w in hay for w in query.lower().split())


class HistoryIndex:
    def __init__(self, folder: str) -> None:
        self.folder = Path(folder) if folder else None
        self._cache: dict[str, tuple[int, int, dict[str, Any] | None]] = {}
        self.bad_lines = 0

    def rows(self) -> list[dict[str, Any]]:
        """Every finished call, newest first (file names start with the UTC start time)."""
        if self.folder is None:
            return []
        try:
            entries = [e for e in os.scandir(self.folder) if e.name.endswith(".jsonl") and e.is_file()]
        except OSError:
            return []
        entries.sort(key=lambda e: e.name, reverse=True)
        rows, seen = [], set()
        for e in entries[:MAX_FILES]:
            name = e.name[:-6]
            seen.add(name)
            try:
                st = e.stat()
            except OSError:
                continue
            hit = self._cache.get(name)
            if hit is None or hit[:2] != (st.st_size, st.st_mtime_ns):
                try:
                    records, bad = read_records(Path(e.path))
                except OSError:
                    continue
                self.bad_lines += bad
                hit = (st.st_size, st.st_mtime_ns, summarize(name, records) if records else None)
                self._cache[name] = hit
            if hit[2] is not None:
                rows.append(hit[2])
        for name in set(self._cache) - seen:
            del self._cache[name]
        return rows

    def search(self, query: str = "", limit: int = 200) -> dict[str, Any]:
        rows = self.rows()
        hits = [r for r in rows if matches(r, query)] if query.strip() else rows
        public = [{k: v for k, v in r.items() if k != "text"} for r in hits[:limit]]
        return {"calls": public, "total": len(hits), "days": day_totals(hits)}

    def detail(self, name: str) -> dict[str, Any] | None:
        """One call: its row and every record (timeline, transcript, tools, usage and cost)."""
        if self.folder is None or not NAME.match(name) or ".." in name:
            return None
        path = self.folder / f"{name}.jsonl"
        try:
            records, _ = read_records(path)
        except OSError:
            return None
        row = summarize(name, records)
        if row is None:
            return None
        end = records[-1] if records[-1]["event"] == "call_end" else {}
        row.pop("text", None)
        return {**row, "usage": end.get("usage", {}), "media": end.get("media", {}), "records": records}
