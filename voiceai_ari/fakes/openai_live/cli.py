"""``voiceai-ari fake-live``: the fake OpenAI GPT-Live server on its own, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..serve import serve_until_signal
from .server import FakeLiveServer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="voiceai-ari fake-live", description="Fake OpenAI GPT-Live server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8767, help="0 picks a free port (default 8767)")
    ap.add_argument("--mode", choices=("tone", "echo"), default="echo")
    ap.add_argument("--tone-hz", type=float, default=440.0)
    ap.add_argument("--tone-seconds", type=float, default=2.0)
    ap.add_argument("--silence-ms", type=int, default=500, help="VAD end-of-turn silence (default 500)")
    ap.add_argument("--api-key", help="require this key (default: any non-empty key)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--log-level", default="INFO")
    args = vars(ap.parse_args(argv))
    logging.basicConfig(level=args.pop("log_level").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return asyncio.run(serve_until_signal(FakeLiveServer(**args)))
    except (ValueError, OSError) as exc:   # port in use, bad option value
        print(f"fake-live: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
