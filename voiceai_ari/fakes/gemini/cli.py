"""``voiceai-ari fake-gemini``: the fake Gemini Live server on its own, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..serve import serve_until_signal
from .server import FakeGeminiServer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="voiceai-ari fake-gemini", description="Fake Google Gemini Live server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8766, help="0 picks a free port (default 8766)")
    ap.add_argument("--mode", choices=("tone", "echo"), default="echo")
    ap.add_argument("--tone-hz", type=float, default=440.0)
    ap.add_argument("--tone-seconds", type=float, default=2.0)
    ap.add_argument("--speed", type=float, default=4.0, help="times faster than real time (default 4)")
    ap.add_argument("--api-key", help="require this key (default: any non-empty key)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--log-level", default="INFO")
    args = vars(ap.parse_args(argv))
    logging.basicConfig(level=args.pop("log_level").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return asyncio.run(serve_until_signal(FakeGeminiServer(**args)))
    except (ValueError, OSError) as exc:   # port in use, bad option value
        print(f"fake-gemini: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
