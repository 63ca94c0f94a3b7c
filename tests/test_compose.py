"""Consistency of the deployment files: docker-compose.yml, both Dockerfiles, .env.example, asterisk/*.conf,
scripts/asterisk-sandbox and the app's settings. Plain file checks: no network, no Docker.

PyYAML is not a project dependency, so docker-compose.yml is read with the small parser below (block
mappings, block lists, scalars, comments). When PyYAML happens to be installed, its result must agree.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
AST = REPO / "asterisk"
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
SANDBOX = REPO / "scripts" / "asterisk-sandbox"
PORTS_PER_CALL = 4  # Asterisk RTP+RTCP for the caller leg and for the externalMedia channel


# --------------------------------------------------------------------------------------------------------------
# parsers
# --------------------------------------------------------------------------------------------------------------

class YamlSubsetError(ValueError):
    pass


def _strip_comment(s: str) -> str:
    quote = None
    for i, ch in enumerate(s):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or s[i - 1] in " \t"):
            return s[:i].rstrip()
    return s.rstrip()


def _scalar(s: str):
    s = s.strip()
    if s[:1] in "{[&*|>!" and s:
        raise YamlSubsetError(f"unsupported YAML construct: {s!r} (keep docker-compose.yml in block style)")
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    if s in ("true", "false"):
        return s == "true"
    if s in ("", "~", "null"):
        return None
    if re.fullmatch(r"-?[0-9]+", s):
        return int(s)
    return s


_KEY = re.compile(r"""^("[^"]*"|'[^']*'|[A-Za-z0-9_.\-/]+):(?:\s+(.*))?$""")


def parse_yaml_subset(text: str):
    """Parse the block-style YAML subset docker-compose.yml uses into dicts, lists and scalars."""
    lines: list[tuple[int, str]] = []
    for raw in text.splitlines():
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise YamlSubsetError("tab indentation")
        body = _strip_comment(raw)
        if body.strip():
            lines.append((len(body) - len(body.lstrip(" ")), body.strip()))

    def is_item(c: str) -> bool:
        return c == "-" or c.startswith("- ")

    def block(i: int, indent: int):
        if is_item(lines[i][1]):
            return seq(i, indent)
        return mapping(i, indent)

    def mapping(i: int, indent: int):
        out: dict = {}
        while i < len(lines) and lines[i][0] == indent and not is_item(lines[i][1]):
            m = _KEY.match(lines[i][1])
            if not m:
                raise YamlSubsetError(f"not a 'key: value' line: {lines[i][1]!r}")
            key = _scalar(m.group(1))
            if key in out:
                raise YamlSubsetError(f"duplicate key {key!r}")
            i += 1
            if m.group(2) is not None and m.group(2).strip():
                out[key] = _scalar(m.group(2))
            elif i < len(lines) and (lines[i][0] > indent or (lines[i][0] == indent and is_item(lines[i][1]))):
                out[key], i = block(i, lines[i][0])
            else:
                out[key] = None
        if i < len(lines) and lines[i][0] > indent:
            raise YamlSubsetError(f"unexpected indentation at {lines[i][1]!r}")
        return out, i

    def seq(i: int, indent: int):
        out: list = []
        while i < len(lines) and lines[i][0] == indent and is_item(lines[i][1]):
            rest = lines[i][1][1:].strip()
            if _KEY.match(rest):  # "- key: value" starts a mapping item
                lines[i] = (indent + 2, rest)
                item, i = mapping(i, indent + 2)
                out.append(item)
            else:
                out.append(_scalar(rest))
                i += 1
        return out, i

    if not lines:
        return None
    value, i = block(0, lines[0][0])
    if i != len(lines):
        raise YamlSubsetError(f"trailing content at {lines[i][1]!r}")
    return value


def parse_asterisk_conf(path: Path) -> list[tuple[str, dict[str, list[str]]]]:
    """[(section, {key: [values]})] in file order; sections may repeat (e.g. endpoint + aor)."""
    sections: list[tuple[str, dict[str, list[str]]]] = []
    for raw in path.read_text().splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"\[([^\]]+)\](\(.*\))?", line)
        if m:
            sections.append((m.group(1), {}))
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key = value line: {raw!r}"
        assert sections, f"{path.name}: value before any [section]: {raw!r}"
        sections[-1][1].setdefault(key.strip(), []).append(value.lstrip(">").strip())
    return sections


def conf_value(path: Path, section: str, key: str) -> str:
    values = [v for name, kv in parse_asterisk_conf(path) if name == section for v in kv.get(key, [])]
    assert len(values) == 1, f"{path.name}: expected one [{section}] {key}, found {values}"
    return values[0]


def parse_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", key), f"{path.name}: bad line {raw!r}"
        assert key not in env, f"{path.name}: {key} appears twice"
        env[key] = value
    return env


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """[(INSTRUCTION, arguments)] with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#") and not buf:
            continue
        buf += raw.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def copy_sources(path: Path) -> list[str]:
    """Source arguments of COPY/ADD (build-context paths; --from= copies are skipped)."""
    sources: list[str] = []
    for instr, args in dockerfile_instructions(path):
        if instr not in ("COPY", "ADD"):
            continue
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        assert len(words) >= 2, f"{path}: {instr} {args}"
        sources += words[:-1]
    return sources


def dockerfile_exposed(path: Path) -> list[str]:
    return [p for instr, args in dockerfile_instructions(path) if instr == "EXPOSE" for p in args.split()]


def dockerignore_patterns(context: Path) -> list[str]:
    f = context / ".dockerignore"
    if not f.exists():
        return []
    return [ln.strip() for ln in f.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    rel = rel.strip("/")
    parts = rel.split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    hit = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").strip("/")
        if pat.startswith("**/"):
            match = any(fnmatch.fnmatch(p, pat[3:]) for p in parts)
        else:
            match = any(fnmatch.fnmatch(p, pat) for p in prefixes)
        if match:
            hit = not neg
    return hit


def port_range(spec: str) -> tuple[int, int]:
    lo, _, hi = str(spec).partition("-")
    return int(lo), int(hi or lo)


def published(service: dict) -> list[dict]:
    """Parsed short-syntax 'ports:' entries: host_ip, host range, container range, protocol."""
    out = []
    for entry in service.get("ports", []):
        assert isinstance(entry, str), f"use the short string syntax for ports: {entry!r}"
        spec, _, proto = entry.partition("/")
        parts = spec.split(":")
        assert len(parts) == 3, f"publish on an explicit address (127.0.0.1:HOST:CONTAINER): {entry!r}"
        out.append({"host_ip": parts[0], "host": port_range(parts[1]), "container": port_range(parts[2]),
                    "proto": proto or "tcp"})
    return out


# --------------------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    data = parse_yaml_subset(COMPOSE.read_text())
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        assert data == yaml.safe_load(COMPOSE.read_text()), "the test's YAML parser disagrees with PyYAML"
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return parse_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def settings_cls():
    from voiceai_ari.config import Settings
    return Settings


@pytest.fixture(scope="module")
def setting_env_names(settings_cls) -> set[str]:
    """Environment variable names the app reads, derived from Settings (prefix + field, or its alias)."""
    from pydantic import AliasChoices

    prefix = settings_cls.model_config.get("env_prefix", "")
    names: set[str] = set()
    for name, field in settings_cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(str(c).upper() for c in alias.choices if isinstance(c, str))
        else:
            names.add((prefix + name).upper())
    return names


def service_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(v) for k, v in env.items()}


def build_context(service: dict) -> tuple[Path, Path]:
    build = service["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (REPO / build.get("context", ".")).resolve()
    return context, context / build.get("dockerfile", "Dockerfile")


def rtp_conf_range() -> tuple[int, int]:
    rtp = AST / "rtp.conf"
    return int(conf_value(rtp, "general", "rtpstart")), int(conf_value(rtp, "general", "rtpend"))


# --------------------------------------------------------------------------------------------------------------
# the YAML subset parser itself
# --------------------------------------------------------------------------------------------------------------

def test_yaml_subset_parser():
    text = (
        "a: 1  # comment\n"
        "b:\n"
        "  - \"x:y/udp\"\n"
        "  - path: .env\n"
        "    required: false\n"
        "c:\n"
        "  d: http://h:8088\n"
        "  e:\n"
        "  f: 'q # not a comment'\n"
        "g:\n"
        "- s\n"
    )
    assert parse_yaml_subset(text) == {
        "a": 1, "b": ["x:y/udp", {"path": ".env", "required": False}],
        "c": {"d": "http://h:8088", "e": None, "f": "q # not a comment"}, "g": ["s"]}
    with pytest.raises(YamlSubsetError):
        parse_yaml_subset("a: {b: 1}\n")
    with pytest.raises(YamlSubsetError):
        parse_yaml_subset("a: 1\n   b: 2\n")


# --------------------------------------------------------------------------------------------------------------
# files referenced by compose and the Dockerfiles exist
# --------------------------------------------------------------------------------------------------------------

def test_services(services):
    assert set(services) == {"asterisk", "voiceai"}
    assert services["voiceai"].get("depends_on") in (["asterisk"], {"asterisk": {"condition": "service_started"}})


def test_build_contexts_and_dockerfiles_exist(services):
    for name, svc in services.items():
        context, dockerfile = build_context(svc)
        assert context.is_dir(), f"{name}: build context {context} missing"
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        assert REPO in (context, *context.parents), f"{name}: build context outside the repository"


def test_copy_sources_exist_inside_their_context(services):
    problems = []
    for name, svc in services.items():
        context, dockerfile = build_context(svc)
        patterns = dockerignore_patterns(context)
        sources = copy_sources(dockerfile)
        assert sources, f"{dockerfile} copies nothing"
        for src in sources:
            target = (context / src).resolve()
            if context not in (target, *target.parents):
                problems.append(f"{dockerfile}: COPY {src} leaves the build context {context}")
                continue
            matches = glob.glob(str(context / src))
            if not matches:
                problems.append(f"{dockerfile}: COPY source {src} does not exist in {context}")
            for m in matches:
                rel = os.path.relpath(m, context)
                if ignored(rel, patterns):
                    problems.append(f"{dockerfile}: COPY {rel} is excluded by .dockerignore")
    assert not problems, "\n".join(problems)


def test_bot_image_installs_the_project():
    dockerfile = REPO / "Dockerfile"
    sources = {s.rstrip("/") for s in copy_sources(dockerfile)}
    assert {"pyproject.toml", "README.md", "voiceai_ari"} <= sources
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["readme"] == "README.md"
    cmd = [args for instr, args in dockerfile_instructions(dockerfile) if instr == "CMD"]
    assert cmd, "Dockerfile has no CMD"
    import json
    argv = json.loads(cmd[-1])
    assert argv[0] in pyproject["project"]["scripts"], f"CMD {argv[0]} is not a [project.scripts] entry"
    envs = " ".join(args for instr, args in dockerfile_instructions(dockerfile) if instr == "ENV")
    assert "/opt/venv/bin" in envs, "the venv's bin must be on PATH for CMD"


def test_env_file_has_an_example_and_stays_out_of_git_and_images(services):
    for name, svc in services.items():
        for entry in svc.get("env_file") or []:
            path = entry["path"] if isinstance(entry, dict) else entry
            if isinstance(entry, dict):
                assert entry.get("required") is False, f"{name}: env_file {path} must be optional"
            assert (REPO / (path + ".example")).is_file(), f"{name}: {path}.example missing"
            assert path.removeprefix("./") in (REPO / ".gitignore").read_text().split(), f"{path} not in .gitignore"
            assert ignored(path.removeprefix("./"), dockerignore_patterns(REPO)), f"{path} not in .dockerignore"


def test_default_transcript_folder_stays_out_of_git_and_images(settings_cls):
    """Transcripts hold callers' words and numbers: the default folder is never committed or baked in."""
    folder = settings_cls.model_fields["transcript_dir"].default
    git = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", f"{folder}/x.jsonl"])
    assert git.returncode == 0, f"{folder}/ is not git-ignored"
    assert ignored(f"{folder}/x.jsonl", dockerignore_patterns(REPO)), f"{folder} not in .dockerignore"


def test_voiceai_image_context_excludes_local_clutter():
    patterns = dockerignore_patterns(REPO)
    for junk in (".venv", ".git", "voiceai_ari/__pycache__", ".pytest_cache", ".hypothesis"):
        assert ignored(junk, patterns), f".dockerignore should exclude {junk}"


# --------------------------------------------------------------------------------------------------------------
# ports
# --------------------------------------------------------------------------------------------------------------

def test_only_loopback_is_published(services):
    for name, svc in services.items():
        for p in published(svc):
            assert p["host_ip"] == "127.0.0.1", f"{name} publishes on {p['host_ip']}"
            assert p["host"] == p["container"], f"{name}: host and container ports differ: {p}"


def test_published_rtp_range_equals_rtp_conf(services):
    start, end = rtp_conf_range()
    assert start < end and start % 2 == 0, "rtp.conf: rtpstart must be even and below rtpend"
    udp_ranges = [p["container"] for p in published(services["asterisk"])
                  if p["proto"] == "udp" and p["container"][0] != p["container"][1]]
    assert udp_ranges == [(start, end)], f"compose publishes {udp_ranges}, rtp.conf says {start}-{end}"
    exposed = [port_range(p.split("/")[0]) for p in dockerfile_exposed(AST / "Dockerfile")
               if p.endswith("/udp") and "-" in p]
    assert exposed == [(start, end)], f"asterisk/Dockerfile EXPOSEs {exposed}, rtp.conf says {start}-{end}"


def test_rtp_range_holds_max_calls(settings_cls):
    start, end = rtp_conf_range()
    max_calls = settings_cls.model_fields["max_calls"].default
    assert (end - start + 1) // PORTS_PER_CALL >= max_calls, (
        f"rtp.conf {start}-{end} holds {(end - start + 1) // PORTS_PER_CALL} calls, VOICEAI_MAX_CALLS is {max_calls}")


def test_ari_port_equals_http_conf(services, env_example):
    bindport = int(conf_value(AST / "http.conf", "general", "bindport"))
    tcp = [p["container"] for p in published(services["asterisk"]) if p["proto"] == "tcp"]
    assert tcp == [(bindport, bindport)], f"compose publishes tcp {tcp}, http.conf bindport is {bindport}"
    assert f"{bindport}/tcp" in dockerfile_exposed(AST / "Dockerfile")
    for where, url in (("docker-compose.yml", service_env(services["voiceai"])["VOICEAI_ARI_URL"]),
                       (".env.example", env_example["VOICEAI_ARI_URL"])):
        parts = urlsplit(url)
        assert parts.port == bindport, f"{where}: VOICEAI_ARI_URL {url} does not use port {bindport}"
    assert urlsplit(service_env(services["voiceai"])["VOICEAI_ARI_URL"]).hostname == "asterisk"
    assert urlsplit(env_example["VOICEAI_ARI_URL"]).hostname == conf_value(AST / "http.conf", "general", "bindaddr")


def test_sip_port_equals_pjsip_transport(services):
    bind = conf_value(AST / "pjsip.conf", "transport-udp", "bind")
    port = int(bind.rsplit(":", 1)[1])
    udp_single = [p["container"] for p in published(services["asterisk"])
                  if p["proto"] == "udp" and p["container"][0] == p["container"][1]]
    assert udp_single == [(port, port)], f"compose publishes {udp_single}, pjsip transport binds {bind}"
    assert f"{port}/udp" in dockerfile_exposed(AST / "Dockerfile")


def test_voiceai_rtp_ports_are_exposed(services):
    svc = services["voiceai"]
    env = service_env(svc)
    rng = port_range(env["VOICEAI_RTP_PORTS"])
    expose = [port_range(str(e).split("/")[0]) for e in svc.get("expose", []) if str(e).endswith("/udp")]
    assert expose == [rng], f"voiceai exposes {expose}, VOICEAI_RTP_PORTS is {env['VOICEAI_RTP_PORTS']}"
    exposed = [port_range(p.split("/")[0]) for p in dockerfile_exposed(REPO / "Dockerfile") if p.endswith("/udp")]
    assert exposed == [rng], f"Dockerfile EXPOSEs {exposed}"


def test_container_network_settings(services):
    env = service_env(services["voiceai"])
    assert env["VOICEAI_RTP_HOST"] in services, "VOICEAI_RTP_HOST must be the agent's service name"
    assert env["VOICEAI_RTP_HOST"] == "voiceai"
    assert env["VOICEAI_RTP_BIND"] == "0.0.0.0"
    assert service_env(services["asterisk"])["ASTERISK_BIND"] == "0.0.0.0"
    assert services["voiceai"].get("init") is True


# --------------------------------------------------------------------------------------------------------------
# credentials, app name, settings
# --------------------------------------------------------------------------------------------------------------

def test_ari_credentials_match_ari_conf(env_example, settings_cls):
    users = [(name, kv) for name, kv in parse_asterisk_conf(AST / "ari.conf") if kv.get("type") == ["user"]]
    assert len(users) == 1, f"ari.conf: expected one ARI user, found {[u for u, _ in users]}"
    user, kv = users[0]
    assert env_example["VOICEAI_ARI_USER"] == user
    assert kv["password"] == [env_example["VOICEAI_ARI_PASSWORD"]]
    assert kv.get("password_format", ["plain"]) == ["plain"]
    fields = settings_cls.model_fields
    assert fields["ari_user"].default == user
    assert fields["ari_password"].default.get_secret_value() == kv["password"][0]


def test_stasis_app_matches_settings(env_example, settings_cls):
    apps = re.findall(r"Stasis\(([^,)]+)", (AST / "extensions.conf").read_text())
    assert apps, "extensions.conf has no Stasis() application"
    # the first (extension 100) is the bot's; others are the bot's again (102-104: an agent chosen by the
    # dialplan) or second instances for the e2e tests: <app>-<n>
    default = env_example["VOICEAI_ARI_APP"]
    assert apps[0] == default, f"Stasis({apps}) vs VOICEAI_ARI_APP"
    assert all(a == default or re.fullmatch(re.escape(default) + r"-\d+", a) for a in apps[1:]), apps
    assert settings_cls.model_fields["ari_app"].default == env_example["VOICEAI_ARI_APP"]


def test_compose_and_env_example_name_only_known_settings(services, env_example, setting_env_names):
    named = set(env_example)
    named |= set(service_env(services["voiceai"]))
    named |= set(re.findall(r"\b(?:VOICEAI_[A-Z0-9_]+|OPENAI_API_KEY)\b", COMPOSE.read_text()))
    unknown = sorted(n for n in named if n.startswith("VOICEAI_") or n == "OPENAI_API_KEY"
                     if n not in setting_env_names)
    assert not unknown, f"not settings of voiceai_ari.config.Settings: {unknown}"
    assert set(env_example) <= setting_env_names, sorted(set(env_example) - setting_env_names)


def test_env_example_documents_every_setting(env_example, setting_env_names):
    missing = sorted(setting_env_names - set(env_example))
    assert not missing, f".env.example does not list {missing}"


def test_env_example_values_are_the_defaults(env_example, settings_cls, monkeypatch):
    def build(env: dict[str, str]):
        for k in list(os.environ):
            if k.upper().startswith("VOICEAI_") or k.upper() == "OPENAI_API_KEY":
                monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return settings_cls(_env_file=None).model_dump()

    defaults = build({})
    from_example = build(env_example)
    differ = {k: (from_example[k], defaults[k]) for k in defaults if from_example[k] != defaults[k]}
    assert not differ, f".env.example values differ from the defaults (example, default): {differ}"


# --------------------------------------------------------------------------------------------------------------
# Asterisk configuration, entrypoint, sandbox script
# --------------------------------------------------------------------------------------------------------------

def test_asterisk_config_essentials():
    assert not (AST / "asterisk.conf").exists(), "asterisk.conf (paths) belongs to the image / sandbox script"
    modules = parse_asterisk_conf(AST / "modules.conf")
    loads = modules[0][1]["load"]
    assert modules[0][1]["autoload"] == ["no"]
    for mod in ("codec_g722.so", "chan_rtp.so", "res_rtp_multicast.so", "res_websocket_client.so",
                "res_ari.so", "app_stasis.so", "chan_pjsip.so", "app_echo.so", "app_playback.so"):
        assert mod in loads, f"modules.conf does not load {mod}"
    endpoints = [kv for _, kv in parse_asterisk_conf(AST / "pjsip.conf") if kv.get("type") == ["endpoint"]]
    assert endpoints
    for kv in endpoints:
        assert kv["allow"][0].split(",")[0] == "g722", "endpoints must offer g722 first"
        assert "bind_rtp_to_media_address" not in kv, "would bind RTP to 127.0.0.1 inside the container"
    transport = dict(next(kv for name, kv in parse_asterisk_conf(AST / "pjsip.conf") if name == "transport-udp"))
    assert transport["external_signaling_address"] == ["127.0.0.1"]
    assert transport["external_media_address"] == ["127.0.0.1"]
    assert "local_net" not in transport
    assert conf_value(AST / "http.conf", "general", "bindaddr") == "127.0.0.1"
    assert transport["bind"][0].startswith("127.0.0.1:")
    ext = (AST / "extensions.conf").read_text()
    for exten, app in (("100", "Stasis"), ("200", "Playback(demo-congrats)"), ("300", "Echo()"),
                       ("400", "Playback(tt-monkeys)")):
        block = re.search(rf"exten => {exten},1,.*?(?=\nexten =>|\Z)", ext, re.S)
        assert block and app in block.group(0), f"extension {exten} should run {app}"


def run_configure(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The image's configure.sh (run by its entrypoint at every start) on copies of the committed configs."""
    for name in ("http.conf", "pjsip.conf", "ari.conf"):
        shutil.copy(AST / name, tmp_path / name)
    clean = {k: v for k, v in os.environ.items() if k not in ("ASTERISK_BIND", "VOICEAI_ARI_PASSWORD")}
    return subprocess.run(["sh", str(AST / "configure.sh"), str(tmp_path)], env={**clean, **env},
                          capture_output=True, text=True, timeout=30)


def compose_default(value: str, var: str) -> str:
    """The default of a compose interpolation ${VAR:-default} (what a newcomer without .env gets)."""
    m = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", value)
    assert m and m.group(1) == var, f"expected ${{{var}:-...}}, found {value!r}"
    return m.group(2)


@pytest.mark.skipif(shutil.which("sed") is None or shutil.which("awk") is None, reason="needs sed and awk")
@pytest.mark.parametrize("bind", ["0.0.0.0", "127.0.0.1"])
def test_configure_rewrites_binds_and_the_ari_password(tmp_path, bind):
    password = "N3w-pass/with+base64="
    os.chmod(tmp_path, 0o700)
    p = run_configure(tmp_path, ASTERISK_BIND=bind, VOICEAI_ARI_PASSWORD=password)
    assert p.returncode == 0, p.stderr
    assert conf_value(tmp_path / "http.conf", "general", "bindaddr") == bind
    port = conf_value(AST / "pjsip.conf", "transport-udp", "bind").rsplit(":", 1)[1]
    assert conf_value(tmp_path / "pjsip.conf", "transport-udp", "bind") == f"{bind}:{port}"
    user = next(name for name, kv in parse_asterisk_conf(AST / "ari.conf") if kv.get("type") == ["user"])
    assert conf_value(tmp_path / "ari.conf", user, "password") == password
    assert not list(tmp_path.glob("*.new")), "no temporary copy of ari.conf (with the password) left behind"
    entry = (AST / "entrypoint.sh").read_text()
    assert re.search(r"^/usr/local/bin/configure\.sh /etc/asterisk$", entry, re.M)
    assert re.search(r"^exec /usr/sbin/asterisk -f .*-U asterisk -G asterisk", entry, re.M)
    assert 'bind="${ASTERISK_BIND:-0.0.0.0}"' in (AST / "configure.sh").read_text()


@pytest.mark.skipif(shutil.which("sed") is None or shutil.which("awk") is None, reason="needs sed and awk")
@pytest.mark.parametrize("password, error", [
    (None, "VOICEAI_ARI_PASSWORD is not set"), ("", "VOICEAI_ARI_PASSWORD is not set"),
    ("short", "at least 12 characters"), ("long-enough;comment", "may only hold"),
    ("long enough pass", "may only hold"), ("long-enough\npassword = x", "may only hold"),
])
def test_asterisk_image_does_not_start_without_a_good_ari_password(tmp_path, password, error):
    """The image has no password of its own: without VOICEAI_ARI_PASSWORD (or with one ari.conf would cut
    short at a ';' or a line break) the container stops at once with a clear line."""
    p = run_configure(tmp_path, **({} if password is None else {"VOICEAI_ARI_PASSWORD": password}))
    assert p.returncode == 64 and error in p.stderr and p.stderr.count("\n") == 1, (p.returncode, p.stderr)


@pytest.mark.skipif(shutil.which("sed") is None, reason="needs sed")
def test_asterisk_image_holds_no_ari_password(tmp_path):
    runs = [args for instr, args in dockerfile_instructions(AST / "Dockerfile") if instr == "RUN"]
    seds = [m for args in runs for m in re.findall(r"sed -i '[^']*' /etc/asterisk/ari\.conf", args)]
    assert len(seds) == 1, "asterisk/Dockerfile must blank ari.conf's (sandbox) password"
    shutil.copy(AST / "ari.conf", tmp_path / "ari.conf")
    subprocess.run(["sh", "-ec", seds[0].replace("/etc/asterisk/", f"{tmp_path}/")], check=True)
    passwords = [v for _, kv in parse_asterisk_conf(tmp_path / "ari.conf") for v in kv.get("password", [])]
    assert passwords == [""]


def test_compose_gives_both_services_one_ari_password(services, env_example):
    """One variable: Asterisk's ari.conf and the bot get the same VOICEAI_ARI_PASSWORD (from .env or the
    environment); without it both get the loopback demo default, which is the sandbox's (ari.conf), so
    scripts/container-stack's readiness check keeps its credentials."""
    ast, bot = service_env(services["asterisk"]), service_env(services["voiceai"])
    assert ast["VOICEAI_ARI_PASSWORD"] == bot["VOICEAI_ARI_PASSWORD"]
    default = compose_default(ast["VOICEAI_ARI_PASSWORD"], "VOICEAI_ARI_PASSWORD")
    user = next(name for name, kv in parse_asterisk_conf(AST / "ari.conf") if kv.get("type") == ["user"])
    assert default == conf_value(AST / "ari.conf", user, "password") == env_example["VOICEAI_ARI_PASSWORD"]


@pytest.mark.skipif(shutil.which("sed") is None or shutil.which("awk") is None, reason="needs sed and awk")
def test_compose_demo_password_is_accepted_by_the_image(tmp_path, services):
    default = compose_default(service_env(services["asterisk"])["VOICEAI_ARI_PASSWORD"], "VOICEAI_ARI_PASSWORD")
    p = run_configure(tmp_path, VOICEAI_ARI_PASSWORD=default)
    assert p.returncode == 0, p.stderr


def test_asterisk_image_copies_every_conf_from_its_context():
    sources = copy_sources(AST / "Dockerfile")
    assert "*.conf" in sources and "entrypoint.sh" in sources and "configure.sh" in sources
    assert os.access(AST / "entrypoint.sh", os.X_OK) and os.access(AST / "configure.sh", os.X_OK)


def test_sandbox_uses_the_repository_asterisk_folder():
    text = SANDBOX.read_text()
    assert os.access(SANDBOX, os.X_OK)
    assert re.search(r'^REPO=\$\(cd "\$\(dirname "\$\(readlink -f "\$\{BASH_SOURCE\[0\]\}"\)"\)/\.\." && pwd\)$',
                     text, re.M), "REPO must be the parent of scripts/"
    assert re.search(r"^CFG=\$REPO/asterisk\b", text, re.M), "the sandbox must read asterisk/ of this repository"
    assert 'cp "$CFG"/*.conf' in text
    # the empty placeholder configs the script creates must also be in asterisk/ (the image needs them too)
    empties = re.search(r'^EMPTY_CONFS="([^"]*)"', text, re.M)
    assert empties
    for name in empties.group(1).split():
        assert (AST / name).is_file(), f"asterisk/{name} missing (the image needs it as well)"
    # default chroot outside the work tree
    root = re.search(r"^ROOT=\$\{VOICEAI_SANDBOX_ROOT:-([^}]+)\}", text, re.M)
    assert root and not root.group(1).startswith(str(REPO))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_shell_scripts_parse():
    subprocess.run(["bash", "-n", str(SANDBOX)], check=True)
    subprocess.run(["sh", "-n", str(AST / "entrypoint.sh")], check=True)
    subprocess.run(["sh", "-n", str(AST / "configure.sh")], check=True)


@pytest.mark.skipif(shutil.which("bash") is None or not os.path.isdir("/proc/self/fd"), reason="needs bash, /proc")
def test_sandbox_asterisk_holds_no_inherited_fd(tmp_path):
    """`flock /tmp/voiceai-e2e.lock scripts/asterisk-sandbox start` hands the lock's fd to the script; the
    Asterisk it starts must not inherit it, or the lock stays held for Asterisk's lifetime and every later e2e
    run waits forever. The script's own start line and close_inherited_fds run here around `sleep`."""
    text = SANDBOX.read_text()
    func = re.search(r"^close_inherited_fds\(\) \{.*?^\}$", text, re.M | re.S)
    assert func, "scripts/asterisk-sandbox: close_inherited_fds() missing"
    assert re.search(r"\( close_inherited_fds; exec setsid chroot \"\$ROOT\" /usr/sbin/asterisk ", text)
    script = (f"set -euo pipefail\n{func.group(0)}\n"
              f"exec 9>{tmp_path}/own.lock\n"
              "( close_inherited_fds; exec sleep 30 ) >/dev/null 2>&1 </dev/null &\n"
              "pid=$!\nsleep 0.3\nls /proc/$pid/fd; kill $pid\n")
    lock = open(tmp_path / "caller.lock", "w")   # the caller's flock fd, inherited by the script
    p = subprocess.run(["bash", "-c", script], pass_fds=(lock.fileno(),), capture_output=True, text=True,
                       timeout=30)
    lock.close()
    assert p.returncode == 0, p.stderr
    assert sorted(int(fd) for fd in p.stdout.split()) == [0, 1, 2]
