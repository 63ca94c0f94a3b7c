"""`voiceai-ari run` start-up failures that only show when the process tries them: one line, exit 2."""

import os
import socket
import subprocess
import sys


def test_control_port_in_use_is_one_line_and_exit_2(tmp_path):
    """A second instance on the same control port used to die with a traceback."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEAI_")}
        env.update(VOICEAI_CONTROL_PORT=str(port), VOICEAI_ARI_URL="http://127.0.0.1:9", VOICEAI_LOG_FORMAT="text",
                   VOICEAI_TRANSCRIPT_DIR="")
        p = subprocess.run([sys.executable, "-m", "voiceai_ari", "run"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    finally:
        held.close()
    assert p.returncode == 2, p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("voiceai-ari: ")]
    assert errors == [f"voiceai-ari: invalid VOICEAI_CONTROL_PORT: cannot listen on 127.0.0.1:{port}: "
                      "Address already in use"], p.stderr
    assert "Traceback" not in p.stderr
