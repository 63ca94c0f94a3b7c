"""The callers: one sipp process per phase (warm-up, load), its -trace_stat CSV and durations."""

from __future__ import annotations

import contextlib
import csv
import math
import random
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import HOST, SoakConfig, SoakError


def _free_port(span: int = 1, even: bool = False, taken: set[int] | None = None) -> int:
    """A base port on 127.0.0.1 with ``span`` consecutive free UDP ports (below the ephemeral range)."""
    taken = taken if taken is not None else set()
    for _ in range(500):
        base = random.randrange(20000, 30000 - span)
        if even:
            base &= ~1
        if any(p in taken for p in range(base, base + span)):
            continue
        socks = []
        try:
            for p in range(base, base + span):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((HOST, p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        taken.update(range(base, base + span))
        return base
    raise SoakError("no free UDP port block on 127.0.0.1")



@dataclass
class SippRun:
    rc: int
    seconds: float
    stats: dict[str, str] = field(default_factory=dict)   # the last row of -trace_stat
    peak_current: int = 0
    errors_tail: str = ""
    stdout_tail: str = ""
    cmd: list[str] = field(default_factory=list)

    def count(self, column: str) -> int:
        with contextlib.suppress(KeyError, ValueError):
            return int(self.stats[column])
        return -1


def _read_stat_csv(path: Path) -> tuple[dict[str, str], int]:
    if not path.exists():
        return {}, 0
    rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}, 0
    head = rows[0]
    data = [dict(zip(head, r, strict=False)) for r in rows[1:] if len(r) >= len(head) - 1]
    peak = 0
    for d in data:
        with contextlib.suppress(KeyError, ValueError):
            peak = max(peak, int(d["CurrentCall"]))
    return (data[-1] if data else {}), peak


class Sipp:
    def __init__(self, cfg: SoakConfig, workdir: Path, scenario: Path, tag: str, *, calls: int, limit: int,
                 rate: float) -> None:
        sipp = shutil.which("sipp")
        if sipp is None:
            raise SoakError("sipp not found (apt-get install sip-tester)")
        taken: set[int] = set()
        sip_port = _free_port(taken=taken)
        mp = _free_port(4, even=True, taken=taken)
        cp = _free_port(taken=taken)
        self.dir = workdir / tag
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stat_file = self.dir / "stat.csv"
        self.err_file = self.dir / "errors.log"
        self.out_file = self.dir / "stdout.log"
        total_s = calls / max(rate, 0.1) + cfg.call_seconds + 120
        # -rp 1000: RATE calls per second, rate given with 2 decimals via -rp scaling
        self.cmd = [sipp, "-sf", str(scenario), "-s", cfg.extension, cfg.server,
                    "-i", HOST, "-p", str(sip_port), "-mi", HOST, "-mp", str(mp), "-ci", HOST, "-cp", str(cp),
                    "-r", str(max(1, int(round(rate * 100)))), "-rp", "100000", "-l", str(limit), "-m", str(calls),
                    "-nostdin", "-trace_stat", "-stf", str(self.stat_file), "-fd", "1",
                    "-trace_err", "-error_file", str(self.err_file),
                    "-timeout", f"{int(math.ceil(total_s))}s", "-timeout_error"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        with open(self.out_file, "wb") as out:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=self.dir)

    def poll(self) -> int | None:
        assert self.proc is not None
        return self.proc.poll()

    def result(self) -> SippRun:
        assert self.proc is not None
        rc = self.proc.wait()
        stats, peak = _read_stat_csv(self.stat_file)

        def tail(p: Path, n: int = 1500) -> str:
            return p.read_text(errors="replace")[-n:] if p.exists() else ""

        return SippRun(rc=rc, seconds=time.monotonic() - self.t0, stats=stats, peak_current=peak,
                       errors_tail=tail(self.err_file), stdout_tail=tail(self.out_file), cmd=self.cmd)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()



def _sipp_ms(value: str | None) -> float | None:
    """sipp's -trace_stat durations, "HH:MM:SS:uuuuuu", in ms."""
    m = re.fullmatch(r"(\d+):(\d+):(\d+):(\d+)", (value or "").strip())
    if m is None:
        return None
    h, mi, s, us = (int(g) for g in m.groups())
    return round((h * 3600 + mi * 60 + s) * 1000 + us / 1000, 1)
