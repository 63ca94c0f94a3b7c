"""``voiceai-ari fake-gemini``: the fake Gemini Live server on its own, until SIGINT/SIGTERM."""

from __future__ import annotations

import sys

from ..serve import fake_cli
from .server import FakeGeminiServer


def main(argv: list[str] | None = None) -> int:
    return fake_cli("voiceai-ari fake-gemini", "Fake Google Gemini Live server", 8766, FakeGeminiServer,
                    lambda ap: ap.add_argument("--speed", type=float, default=4.0,
                                               help="times faster than real time (default 4)"), argv)


if __name__ == "__main__":
    sys.exit(main())
