"""Consistency of the scale-out files: docker-compose.cluster.yml, kamailio/, scripts/cluster and the node
settings the Asterisk image's configure.sh applies. Plain file checks (the cluster runs for real in
tests/e2e/test_cluster.py through scripts/cluster, and as containers in tests/e2e/test_compose_cluster.py).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_compose import (AST, compose_default, conf_value, dockerfile_instructions, parse_yaml_subset,
                                service_env)

REPO = Path(__file__).resolve().parent.parent
CLUSTER_COMPOSE = REPO / "docker-compose.cluster.yml"
KAM = REPO / "kamailio"


@pytest.fixture(scope="module")
def services() -> dict:
    return parse_yaml_subset(CLUSTER_COMPOSE.read_text())["services"]


def nodes(services: dict) -> dict[str, dict]:
    return {n: s for n, s in services.items() if s.get("build") == "./asterisk"}


def workers(services: dict) -> dict[str, dict]:
    return {n: s for n, s in services.items() if s.get("build") == "."}


def dispatcher_targets() -> list[str]:
    rows = [line.split() for line in (KAM / "dispatcher.list").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert all(r[0] == "1" for r in rows), "the config selects from set 1"
    return [r[1] for r in rows]


def port_range(text: str) -> range:
    lo, hi = text.split("-")
    return range(int(lo), int(hi) + 1)


def test_two_asterisks_behind_kamailio_with_two_workers_each(services):
    assert services["kamailio"]["build"] == "./kamailio"
    assert len(nodes(services)) == 2
    per_node: dict[str, int] = {}
    for w in workers(services).values():
        env = service_env(w)
        per_node[env["VOICEAI_ARI_URL"]] = per_node.get(env["VOICEAI_ARI_URL"], 0) + 1
    assert sorted(per_node.values()) == [2, 2], per_node


def test_dispatcher_lists_exactly_the_nodes_sip_addresses(services):
    want = sorted(f"sip:{service_env(s)['ASTERISK_BIND']}:5060" for s in nodes(services).values())
    assert sorted(dispatcher_targets()) == want


def test_every_address_is_loopback_and_host_networked(services):
    for name, s in services.items():
        assert s.get("network_mode") == "host", name
        assert "ports" not in s, name
        for key, value in service_env(s).items():
            for addr in re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", value):
                assert ipaddress.ip_address(addr).is_loopback, (name, key, value)
    text = (KAM / "kamailio.cfg").read_text() + (KAM / "dispatcher.list").read_text()
    live = "\n".join(line for line in text.splitlines() if not re.match(r"\s*#(?!!)", line))   # not comments
    for addr in re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", live):
        assert ipaddress.ip_address(addr).is_loopback, addr


def test_workers_claim_with_their_own_app_names_and_ports(services):
    """Two processes on one app name steal each other's events; two on one port range fight for ports."""
    envs = [service_env(w) for w in workers(services).values()]
    apps = [e["VOICEAI_ARI_APP"] for e in envs]
    assert len(set(apps)) == len(apps) and all(re.fullmatch(r"voiceai-w\w+", a) for a in apps)
    assert all(e["VOICEAI_BROADCAST"] == "on" for e in envs)
    ranges = [set(port_range(e["VOICEAI_RTP_PORTS"])) for e in envs]
    assert sum(len(r) for r in ranges) == len(set().union(*ranges)), "workers' RTP port ranges overlap"
    controls = [e["VOICEAI_CONTROL_PORT"] for e in envs]
    assert len(set(controls)) == len(controls), "workers share the host: one control port each"
    node_rtp = [set(port_range(service_env(n)["ASTERISK_RTP_PORTS"])) for n in nodes(services).values()]
    assert not (node_rtp[0] & node_rtp[1]) and not (set().union(*node_rtp) & set().union(*ranges))


def test_workers_and_nodes_share_one_ari_password(services):
    passwords = {service_env(s)["VOICEAI_ARI_PASSWORD"] for n, s in services.items() if n != "kamailio"}
    assert len(passwords) == 1
    compose_default(passwords.pop(), "VOICEAI_ARI_PASSWORD")


def test_the_broadcast_extension_matches_the_worker_names(services):
    m = re.search(r"StasisBroadcast\(\d+,([^,)]+)", (AST / "extensions.conf").read_text())
    assert m, "extensions.conf has no StasisBroadcast"
    assert all(re.search(m.group(1), service_env(w)["VOICEAI_ARI_APP"]) for w in workers(services).values())


def test_the_overflow_header_kamailio_sends_is_the_one_the_dialplan_reads():
    """A node with no free worker answers 503 only when Kamailio says another node is left; a renamed header on
    either side would silently turn overflow back into the busy announcement on the first node."""
    cfg = (KAM / "kamailio.cfg").read_text()
    sent = re.search(r'append_hf\("([\w-]+): (\w+)\\r\\n"\)', cfg)
    assert sent, "kamailio.cfg adds no overflow header"
    assert f'remove_hf("{sent.group(1)}")' in cfg, "a caller could send the header itself"
    ext500 = re.search(r"^exten => 500,.*?(?=^exten|\Z)", (AST / "extensions.conf").read_text(), re.S | re.M).group(0)
    assert f'${{PJSIP_HEADER(read,{sent.group(1)})}}" = "{sent.group(2)}"' in ext500
    assert "PJSIPHangup(503)" in ext500
    assert "load = res_pjsip_header_funcs.so" in (AST / "modules.conf").read_text()


def test_scripts_cluster_uses_the_same_topology(services):
    script = (REPO / "scripts" / "cluster").read_text()
    for s in nodes(services).values():
        env = service_env(s)
        assert f"={env['ASTERISK_BIND']}" in script
        lo, hi = env["ASTERISK_RTP_PORTS"].split("-")
        assert f'"{lo} {hi}"' in script
    assert "asterisk/configure.sh" in script, "nodes must get the image's own adaptation"
    assert "KAM_IP=127.0.0.10" in script and "udp:127.0.0.10:5060" in (KAM / "kamailio.cfg").read_text()


def test_kamailio_image_copies_its_config():
    copies = [args for instr, args in dockerfile_instructions(KAM / "Dockerfile") if instr == "COPY"]
    assert any("kamailio.cfg" in c and "dispatcher.list" in c for c in copies)


@pytest.mark.skipif(shutil.which("kamailio") is None, reason="kamailio not installed (scripts/cluster installs it)")
def test_kamailio_config_parses():
    done = subprocess.run(["kamailio", "-c", "-f", str(KAM / "kamailio.cfg"),
                           "-A", f'DS_LIST="{KAM / "dispatcher.list"}"', "-A", 'CTL_SOCKET="unix:/tmp/kam-check-ctl"'],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.skipif(shutil.which("sed") is None, reason="needs sed")
def test_configure_gives_a_node_its_address_rtp_range_and_proxy_settings(tmp_path, services):
    for name in ("http.conf", "pjsip.conf", "ari.conf", "rtp.conf"):
        shutil.copy(AST / name, tmp_path / name)
    env = {k: v for k, v in service_env(nodes(services)["asterisk-b"]).items()}
    env["VOICEAI_ARI_PASSWORD"] = compose_default(env["VOICEAI_ARI_PASSWORD"], "VOICEAI_ARI_PASSWORD")
    done = subprocess.run(["sh", str(AST / "configure.sh"), str(tmp_path)], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    pjsip = "\n".join(line.split(";")[0] for line in (tmp_path / "pjsip.conf").read_text().splitlines())
    assert not re.search(r"127\.0\.0\.1\b", pjsip) and pjsip.count("127.0.0.12") >= 4
    assert "rewrite_contact = yes" not in pjsip and "rewrite_contact = no" in pjsip
    assert conf_value(tmp_path / "http.conf", "general", "bindaddr") == "127.0.0.12"
    assert (conf_value(tmp_path / "rtp.conf", "general", "rtpstart"),
            conf_value(tmp_path / "rtp.conf", "general", "rtpend")) == ("12400", "12799")


@pytest.mark.parametrize("value", ["12000", "abc", "1-2-3", "-5", "5-"])
def test_configure_refuses_a_bad_rtp_range(tmp_path, value):
    for name in ("http.conf", "pjsip.conf", "ari.conf", "rtp.conf"):
        shutil.copy(AST / name, tmp_path / name)
    done = subprocess.run(["sh", str(AST / "configure.sh"), str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "ASTERISK_RTP_PORTS": value, "VOICEAI_ARI_PASSWORD": "voiceai-secret"})
    assert done.returncode == 64 and "ASTERISK_RTP_PORTS" in done.stderr
