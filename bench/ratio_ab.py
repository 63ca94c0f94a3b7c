"""Section 7's bot/Asterisk CPU ratio for several settings side by side, interleaved in one sitting.

    python -m bench.ratio_ab --runs 2                                   every variant on every path
    python -m bench.ratio_ab --variants stdlib,append200 --paths rtp-ulaw --json out.json

Each run places 20 sandbox calls per (path, variant) in turn, so every variant sees the same machine moment
as its neighbours (the figures vary by 10-20 % between runs on a shared host: compare within a run and take
medians). Needs what section 7 needs (root, sipp, the sandbox, the bot lock). docs/benchmarks.md has the
2026-12-05 results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from . import sandbox as S

PATHS = {"rtp-slin24": {}, "rtp-ulaw": {"VOICEAI_CALLER_FORMAT": "ulaw"},
         "ws-slin24": {"VOICEAI_TRANSPORT": "websocket"}}
VARIANTS = {"stdlib": {"VOICEAI_EVENT_LOOP": "asyncio"},                        # before 2026-12-05
            "uvloop": {"VOICEAI_EVENT_LOOP": "uvloop"},                         # today's default
            "append100": {"VOICEAI_EVENT_LOOP": "uvloop", "VOICEAI_APPEND_MS": "100"},
            "append200": {"VOICEAI_EVENT_LOOP": "uvloop", "VOICEAI_APPEND_MS": "200"}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ratio_ab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma separated: " + ", ".join(VARIANTS))
    ap.add_argument("--paths", default=",".join(PATHS), help="comma separated: " + ", ".join(PATHS))
    ap.add_argument("--json", type=Path, default=None, help="write every run's figures here")
    args = ap.parse_args(argv)
    variants, paths = args.variants.split(","), args.paths.split(",")
    bad = [v for v in variants if v not in VARIANTS] + [p for p in paths if p not in PATHS]
    if bad:
        ap.error(f"unknown: {bad}")
    sys.path.insert(0, str(S.REPO))
    out = []
    with tempfile.TemporaryDirectory(prefix="voiceai-ratio-ab-") as tmp, S.bot_lock(900, print):
        for run in range(args.runs):
            for path in paths:
                for v in variants:
                    ast = S.ensure_sandbox(print)
                    subprocess.run([str(S.SANDBOX), "hangup-all"], capture_output=True)
                    r = asyncio.run(S._ratio(20, 22.0, (4.0, 20.0), ast, Path(tmp), print, None,
                                             **PATHS[path], **VARIANTS[v]))
                    r.update(run=run, path=path, variant=v)
                    out.append(r)
                    print(f"{path:11s} {v:10s} run {run}: ratio {r['ratio']:.3f} (bot {r['bot_cpu_pct']:.1f} %, "
                          f"Asterisk {r['asterisk_cpu_pct']:.1f} %; {r['calls_ok']} calls ok)", flush=True)
                    if args.json:
                        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
