"""docker-compose.cluster.yml, proven: Kamailio, two Asterisks and four StasisBroadcast workers as containers
(podman + podman-compose, provisioned by ``scripts/container-stack provision``), host networking on the
loopback addresses 127.0.0.10-12. sipp callers dial 500 through the containerised Kamailio; each must hear its
own tone echoed by a containerised worker's offline demo model, and both Asterisks must take calls.

It uses the addresses of scripts/cluster (skipped while that runs); it leaves the shared sandbox on 127.0.0.1
alone. The first run builds the images (about 5 minutes here); later runs reuse them.

    flock -o /tmp/voiceai-e2e.lock scripts/test tests/e2e/test_compose_cluster.py -q -s
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time

import pytest

from .caller import REPO, place_call
from .workers import KAMAILIO, NODES, freqs, heard_own_echo, node_ari, proxy_scenario, tone_phone

pytestmark = pytest.mark.e2e
COMPOSE = REPO / "docker-compose.cluster.yml"
PODMAN_COMPOSE = "/var/cache/voiceai-ari/podman-compose-venv/bin/podman-compose"   # scripts/container-stack
# the test's own settings on top of the file (and of a developer's .env): the offline demo model
OVERRIDE = "services:\n" + "".join(
    f"  worker-{w}:\n    environment:\n      OPENAI_API_KEY: \"\"\n      VOICEAI_GREETING: none\n"
    for w in ("a1", "a2", "b1", "b2"))


def run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          cwd=REPO)


def udp_in_use(host: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((host, port))
        return False
    except OSError:
        return True
    finally:
        s.close()


@pytest.fixture
async def cluster_stack(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the compose cluster needs root (rootful podman): run the e2e tests as root")
    if udp_in_use("127.0.0.10", 5060) or udp_in_use("127.0.0.11", 5060):
        pytest.skip("127.0.0.10-12 are in use (scripts/cluster running?): stop it first")
    p = await asyncio.to_thread(run, str(REPO / "scripts" / "container-stack"), "provision", timeout=3600)
    assert p.returncode == 0, p.stdout + p.stderr
    override = tmp_path / "override.yml"
    override.write_text(OVERRIDE)
    files = ["-f", str(COMPOSE), "-f", str(override)]
    t0 = time.monotonic()
    p = await asyncio.to_thread(run, PODMAN_COMPOSE, *files, "build", timeout=3600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    t_build = time.monotonic() - t0
    try:
        t0 = time.monotonic()
        p = await asyncio.to_thread(run, PODMAN_COMPOSE, *files, "up", "-d", timeout=600)
        assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
        yield {"build_s": t_build, "up_started": t0}
    finally:
        down = await asyncio.to_thread(run, PODMAN_COMPOSE, *files, "down", timeout=600)
        assert down.returncode == 0, down.stdout + down.stderr


async def all_workers_registered(timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            ok = [(await node_ari(NODES[n], "GET", f"/applications/voiceai-w{n}{k}"))[0] == 200
                  for n in NODES for k in (1, 2)]
            if all(ok):
                return True
        except OSError:
            pass
        await asyncio.sleep(0.25)
    return False


async def test_the_compose_cluster_serves_calls_through_kamailio_on_both_asterisks(cluster_stack, tmp_path):
    assert await all_workers_registered(), "the four workers did not register their apps in 60 s"
    t_ready = time.monotonic() - cluster_stack["up_started"]
    await asyncio.sleep(2.5)                       # Kamailio's first probes (every 2 s in the image)
    tones = freqs(4)
    nodes_used = []
    for k, f in enumerate(tones):
        w = tmp_path / f"c{k}"
        res = await place_call("500", phone=tone_phone(f), call_seconds=4.5, workdir=w, timeout=40, server=KAMAILIO,
                               scenario=proxy_scenario(w))
        served = heard_own_echo(res, f, tones)
        assert served.ok and not res.got_bye, served.why or res.summary()
        nodes_used.append(res.answer[0])
    assert set(nodes_used) == set(NODES.values()), nodes_used
    print(f"\n[e2e] compose cluster: images built/checked in {cluster_stack['build_s']:.0f} s, up with all four "
          f"workers registered {t_ready:.1f} s after `up -d`; 4 calls through Kamailio served, on {nodes_used}")
