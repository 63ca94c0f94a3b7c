"""``voiceai-ari fake-live``: the fake OpenAI GPT-Live server on its own, until SIGINT/SIGTERM."""

from __future__ import annotations

import sys

from ..serve import fake_cli
from .server import FakeLiveServer


def main(argv: list[str] | None = None) -> int:
    return fake_cli("voiceai-ari fake-live", "Fake OpenAI GPT-Live server", 8767, FakeLiveServer,
                    lambda ap: ap.add_argument("--silence-ms", type=int, default=500,
                                               help="VAD end-of-turn silence (default 500)"), argv)


if __name__ == "__main__":
    sys.exit(main())
