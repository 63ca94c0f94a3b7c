"""Small helpers shared by the benchmark sections: percentiles, /proc readings, CPU pinning, the machine."""

from __future__ import annotations

import math
import os
import platform
import resource
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def summary(values: Sequence[float], *qs: float) -> dict[str, float]:
    """{"p50": .., "p90": .., ..., "max": .., "n": ..} of ``values`` (default quantiles 50, 90, 99)."""
    out = {f"p{q:g}": pct(values, q) for q in (qs or (50, 90, 99))}
    out["max"] = float(max(values)) if values else math.nan
    out["n"] = len(values)
    return out


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of a process, from /proc/<pid>/stat (fields 14 and 15), in seconds."""
    user, system = cpu_split(pid)
    return user + system


def cpu_split(pid: int | str = "self") -> tuple[float, float]:
    """(utime, stime) of a process in seconds: time in its own code vs in the kernel on its behalf."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def _cpu_ticks(cpu: int | None) -> list[int] | None:
    """The tick counters of one CPU's line in /proc/stat (all CPUs for None): user nice system idle iowait
    irq softirq steal ..., or None if there is no such CPU."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == name:
                return [int(x) for x in parts[1:]]
    return None


def core_busy_s(cpu: int | None) -> float:
    """Busy seconds (everything but idle and iowait) of one CPU, or of all of them for None, from /proc/stat."""
    vals = _cpu_ticks(cpu)
    return float("nan") if vals is None else (sum(vals[:8]) - vals[3] - vals[4]) / CLK_TCK


def steal_s(cpu: int | None) -> float:
    """Seconds the hypervisor ran something else while this vCPU (or any, for None) wanted to run: the
    "steal" column of /proc/stat. In a VM, this is host contention that no guest setting can prevent."""
    vals = _cpu_ticks(cpu)
    return float("nan") if vals is None else (vals[7] if len(vals) > 7 else 0) / CLK_TCK


def ctx_switches(pid: int | str = "self") -> tuple[int, int]:
    """(voluntary, involuntary) context switches of a process (/proc/<pid>/status, main thread). Involuntary
    ones are preemptions: another task took the CPU while this one could still run."""
    vol = invol = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                vol = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                invol = int(line.split()[1])
    return vol, invol


class GcPauses:
    """Collects the duration of every garbage collection (gc.callbacks) while installed."""

    def __init__(self) -> None:
        import gc
        self._gc = gc
        self.pauses_ms: list[float] = []
        self._t0 = 0

    def _cb(self, phase: str, info: dict) -> None:
        import time
        if phase == "start":
            self._t0 = time.perf_counter_ns()
        elif self._t0:
            self.pauses_ms.append((time.perf_counter_ns() - self._t0) / 1e6)

    def __enter__(self) -> "GcPauses":
        self._gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: object) -> None:
        self._gc.callbacks.remove(self._cb)


def rss_kb(pid: int | str = "self") -> int:
    """Resident set size from /proc/<pid>/statm (pages), in KiB."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_KB


def pin(cpu: int | None) -> None:
    """Pin this process (all its threads created later) to one CPU; no-op for None or a missing CPU."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return
    if cpu in os.sched_getaffinity(0) or cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


_ALLOWED = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []  # before any pinning


def cpus() -> tuple[int | None, int | None]:
    """(CPU for the process under test, CPU for the load generators): the first two CPUs this process was
    allowed when the benchmarks started, else (None, None) (one CPU: no pinning)."""
    if len(_ALLOWED) >= 2:
        return _ALLOWED[0], _ALLOWED[1]
    return None, None


class realtime:
    """``with realtime(on):`` SCHED_FIFO (priority 10) for this process while inside, SCHED_OTHER after.

    For measuring on a machine shared with other work: the process under test is then never preempted by
    ordinary processes (the kernel still keeps 5% of each second for them: sched_rt_runtime_us). Root only."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.active = False

    def __enter__(self) -> "realtime":
        if self.on:
            # children (peer processes started meanwhile) get the normal policy back
            policy = os.SCHED_FIFO | getattr(os, "SCHED_RESET_ON_FORK", 0)
            os.sched_setscheduler(0, policy, os.sched_param(10))
            self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


class pinned:
    """``with pinned(cpu):`` run this process on one CPU, then restore the previous affinity."""

    def __init__(self, cpu: int | None) -> None:
        self.cpu = cpu
        self.old: set[int] | None = None

    def __enter__(self) -> "pinned":
        if self.cpu is not None and hasattr(os, "sched_setaffinity"):
            self.old = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {self.cpu})
        return self

    def __exit__(self, *exc: object) -> None:
        if self.old is not None:
            os.sched_setaffinity(0, self.old)


def raise_nofile() -> None:
    """Lift the soft open-files limit to the hard one (hundreds of sockets per process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mhz = ""
    try:
        mhz = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("cpu MHz"))
    except (OSError, StopIteration):
        pass
    import numpy

    return {"nproc": os.cpu_count(), "cpu_model": model, "cpu_mhz": mhz, "python": sys.version.split()[0],
            "implementation": platform.python_implementation(), "kernel": platform.release(),
            "numpy": numpy.__version__}


def finite_positive(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
