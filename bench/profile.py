"""Sampling profiles of a benchmark's bot process with py-spy (not a dependency: ``pip install py-spy``).

    python -m bench --only capacity --profile DIR     py-spy raw stacks of each capacity level's window
    python -m bench --only ratio --profile DIR        ... of ``voiceai-ari run`` under 20 sandbox calls
    python -m bench.profile DIR/capacity-100.txt      the functions where the samples fall (self, inclusive)

Profiling perturbs what it measures (py-spy stops the process briefly for each sample unless --nonblocking,
which is used here), so take the table's numbers from a run without ``--profile``.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .common import REPO


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path, rate: int = 200) -> subprocess.Popen[bytes] | None:
    exe = py_spy()
    if exe is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([exe, "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", str(rate),
                             "-f", "raw", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_FRAME = re.compile(r"^(.*) \((.*?):(\d+)\)$")


def _short(frame: str, lines: bool) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    func, path, line = m.groups()
    p = Path(path)
    if p.is_absolute():
        try:
            path = str(p.relative_to(REPO))
        except ValueError:
            parts = p.parts
            path = "/".join(parts[parts.index("site-packages") + 1:]) if "site-packages" in parts else p.name
    return f"{func} ({path}:{line})" if lines else f"{func} ({path})"


def summarize(path: Path, top: int = 25, lines: bool = False) -> str:
    """Top functions by self and by inclusive share of the samples in a py-spy raw (collapsed) file."""
    selfc: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for raw in path.read_text().splitlines():
        if not raw.strip():
            continue
        stack, n_s = raw.rsplit(" ", 1)
        n = int(n_s)
        total += n
        frames = [_short(f, lines) for f in stack.split(";") if not f.startswith(("thread (", "process "))]
        if not frames:
            continue
        selfc[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    out = [f"{path.name}: {total} samples", "self:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in selfc.most_common(top)]
    out.append("inclusive:")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top + 10)]
    return "\n".join(out)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    for a in args:
        print(summarize(Path(a), lines="--lines" in sys.argv))
