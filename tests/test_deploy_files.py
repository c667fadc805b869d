"""The deployment files: Procfile, Dockerfile, docker-compose.yml, nginx.conf.

scripts/validate-deploy.sh checks the compose file with Debian's docker-compose 1.29
(`config -q`, no engine needed) and nginx.conf with Debian's `nginx -t`, installing
either tool with apt-get when it is missing; these tests never skip. The structural
checks read the compose file as docker-compose resolves it (converted to JSON by
docker-compose's own Python, which always has PyYAML) and nginx.conf with a small
parser of nginx's block syntax.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
VALIDATE_SCRIPT = REPO_ROOT / "scripts" / "validate-deploy.sh"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
NGINX_CONF = REPO_ROOT / "nginx.conf"
DOCKERFILE = REPO_ROOT / "Dockerfile"
PROCFILE = REPO_ROOT / "Procfile"

# apt-get may have to install docker-compose and nginx on the first run.
SCRIPT_TIMEOUT_SECONDS = 600
TOOL_TIMEOUT_SECONDS = 60


def run_validate_script(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(VALIDATE_SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=SCRIPT_TIMEOUT_SECONDS,
        check=False,
    )


@pytest.fixture(scope="module")
def validation() -> subprocess.CompletedProcess[str]:
    """One run of the script over the real files; it also installs missing tools."""
    return run_validate_script()


def compose_environment(**extra: str) -> dict[str, str]:
    """An environment without the caller's settings, as the script uses."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
    }
    env.update(extra)
    return env


def run_compose_config(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    docker_compose = shutil.which("docker-compose")
    assert docker_compose is not None, "validate-deploy.sh should have installed docker-compose"
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    return subprocess.run(
        [
            docker_compose,
            "--env-file",
            str(empty_env_file),
            "-f",
            str(COMPOSE_FILE),
            "config",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=TOOL_TIMEOUT_SECONDS,
        check=False,
    )


def yaml_to_json_with_compose_python(yaml_text: str) -> Any:
    """Parse YAML with the interpreter docker-compose runs on (it depends on PyYAML)."""
    docker_compose = shutil.which("docker-compose")
    assert docker_compose is not None
    shebang = Path(docker_compose).read_text(errors="replace").splitlines()[0]
    assert shebang.startswith("#!"), f"docker-compose is not a script: {shebang!r}"
    interpreter = shebang[2:].split()
    converted = subprocess.run(
        [
            *interpreter,
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ],
        input=yaml_text,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_SECONDS,
        check=True,
    )
    return json.loads(converted.stdout)


@pytest.fixture(scope="module")
def compose_config(
    validation: subprocess.CompletedProcess[str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """docker-compose.yml as docker-compose resolves it, with a placeholder JWT_SECRET."""
    assert validation.returncode == 0, validation.stdout + validation.stderr
    result = run_compose_config(
        compose_environment(JWT_SECRET="test-placeholder"), tmp_path_factory.mktemp("compose")
    )
    assert result.returncode == 0, result.stderr
    config = yaml_to_json_with_compose_python(result.stdout)
    assert isinstance(config, dict)
    return config


# --- the validation script ------------------------------------------------------------


def test_validate_script_accepts_the_deployment_files(
    validation: subprocess.CompletedProcess[str],
) -> None:
    output = validation.stdout + validation.stderr
    assert validation.returncode == 0, output
    assert f"compose: valid {COMPOSE_FILE}" in output
    assert f"nginx: valid {NGINX_CONF}" in output
    assert "test is successful" in output


def test_validate_script_rejects_a_broken_nginx_conf(
    validation: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    broken = tmp_path / "nginx.conf"
    text = NGINX_CONF.read_text()
    assert "proxy_http_version 1.1;" in text
    broken.write_text(text.replace("proxy_http_version 1.1;", "proxy_http_version 1.1", 1))

    result = run_validate_script("--nginx", str(broken))

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"nginx: INVALID {broken}" in result.stdout


def test_validate_script_tests_the_nginx_copy_when_asked(
    validation: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    unknown_host = tmp_path / "nginx.conf"
    unknown_host.write_text(NGINX_CONF.read_text().replace("server app:3001", "server apx:3001"))
    env = dict(os.environ, SINAL_NGINX_APP_HOST="copy")

    good = run_validate_script(env=env)
    bad = run_validate_script("--nginx", str(unknown_host), env=env)

    assert good.returncode == 0, good.stdout + good.stderr
    assert "copy with 2 'server app:PORT' line(s)" in good.stdout
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "apx" in bad.stdout


def test_validate_script_rejects_a_broken_compose_file(
    validation: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text()
    assert "    image: postgres:15\n" in text
    broken.write_text(
        text.replace("    image: postgres:15\n", "    image: postgres:15\n    imagee: x\n")
    )

    result = run_validate_script("--compose", str(broken))

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"compose: INVALID {broken}" in result.stdout
    assert "imagee" in result.stdout


# --- docker-compose.yml -----------------------------------------------------------------


def test_compose_has_the_four_services(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert set(services) == {"app", "postgres", "redis", "nginx"}
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7-alpine"
    assert services["nginx"]["image"] == "nginx:alpine"
    assert services["app"]["build"]["context"] == str(REPO_ROOT)


def test_compose_runs_two_app_nodes_behind_nginx_only(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    app = services["app"]
    assert app["deploy"]["replicas"] == 2
    assert "container_name" not in app  # a fixed name would forbid a second replica
    assert "ports" not in app  # two replicas cannot publish one host port
    published = [port.get("published") for port in services["nginx"]["ports"]]
    assert published == [80]
    nginx_mounts = services["nginx"]["volumes"]
    assert any(
        str(mount).startswith(f"{NGINX_CONF}:/etc/nginx/nginx.conf") for mount in nginx_mounts
    ), nginx_mounts
    for name in ("postgres", "redis"):
        assert "ports" not in services[name], f"{name} should stay on the compose network"


def test_compose_app_environment_and_dependencies(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    env = services["app"]["environment"]
    assert env["SINAL_ENV"] == "production"
    assert env["SINAL_HOST"] == "0.0.0.0"
    assert env["JWT_SECRET"] == "test-placeholder"
    database_url = env["DATABASE_URL"]
    assert re.fullmatch(r"postgresql://sinal:[^@]+@postgres:5432/gestao_compras", database_url)
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert (env["HTTP_PORT"], env["WEBSOCKET_PORT"]) == ("3000", "3001")
    # the nodes believe nginx's X-Forwarded-For (compose's private networks), and the
    # setting is one the node accepts
    from sinal.node.config import load_config
    config = load_config({"TRUSTED_PROXIES": env["TRUSTED_PROXIES"]}, env_file=None)
    proxies = config.trusted_proxies
    assert "172.16.0.0/12" in env["TRUSTED_PROXIES"] and proxies

    assert services["app"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert services["nginx"]["depends_on"] == {"app": {"condition": "service_healthy"}}

    postgres = services["postgres"]
    assert postgres["environment"]["POSTGRES_DB"] == "gestao_compras"
    assert any("pg_isready" in part for part in postgres["healthcheck"]["test"])
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_compose_refuses_to_run_without_jwt_secret(
    validation: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    assert validation.returncode == 0, validation.stdout + validation.stderr
    result = run_compose_config(compose_environment(), tmp_path)
    assert result.returncode != 0
    assert "set JWT_SECRET" in result.stderr


# --- nginx.conf ---------------------------------------------------------------------


@dataclass
class NginxDirective:
    name: str
    args: list[str]
    children: list[NginxDirective] | None = None  # None: a simple directive

    def find(self, name: str, *args: str) -> list[NginxDirective]:
        return [
            child
            for child in self.children or []
            if child.name == name and child.args[: len(args)] == list(args)
        ]

    def one(self, name: str, *args: str) -> NginxDirective:
        found = self.find(name, *args)
        assert len(found) == 1, f"expected one {name} {args} in {self.name}, got {len(found)}"
        return found[0]

    def values(self, name: str) -> list[list[str]]:
        return [child.args for child in self.find(name)]


@dataclass
class _NginxParser:
    tokens: list[str]
    position: int = 0
    root: NginxDirective = field(default_factory=lambda: NginxDirective("main", [], []))

    def parse_block(self, block: NginxDirective) -> None:
        assert block.children is not None
        words: list[str] = []
        while self.position < len(self.tokens):
            token = self.tokens[self.position]
            self.position += 1
            if token == ";":
                block.children.append(NginxDirective(words[0], words[1:]))
                words = []
            elif token == "{":
                child = NginxDirective(words[0], words[1:], [])
                self.parse_block(child)
                block.children.append(child)
                words = []
            elif token == "}":
                assert not words, f"unterminated directive {words}"
                return
            else:
                words.append(token)
        assert not words, f"unterminated directive {words}"


_NGINX_TOKEN = re.compile(r"""#[^\n]*|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[{};]|[^\s{};]+""")


def parse_nginx_conf(text: str) -> NginxDirective:
    tokens: list[str] = []
    for match in _NGINX_TOKEN.finditer(text):
        token = match.group()
        if token.startswith("#"):
            continue
        if token[0] in "\"'" and len(token) >= 2:
            token = token[1:-1]
        tokens.append(token)
    parser = _NginxParser(tokens)
    parser.parse_block(parser.root)
    assert parser.position == len(tokens), "unbalanced '}' in nginx.conf"
    return parser.root


def test_nginx_parser_reads_blocks_and_comments() -> None:
    parsed = parse_nginx_conf('a 1; # b 2;\nc { d "x y"; e {} }\n')
    assert [child.name for child in parsed.children or []] == ["a", "c"]
    assert parsed.one("c").values("d") == [["x y"]]
    assert parsed.one("c").one("e").children == []


@pytest.fixture(scope="module")
def nginx_conf() -> NginxDirective:
    return parse_nginx_conf(NGINX_CONF.read_text())


def test_nginx_conf_is_a_complete_main_file(nginx_conf: NginxDirective) -> None:
    assert nginx_conf.one("events").children is not None
    http = nginx_conf.one("http")
    assert http.one("server").values("listen") == [["80"]]
    assert not nginx_conf.find("include") and not http.find("include")


def test_nginx_upstreams_point_at_the_app_service(nginx_conf: NginxDirective) -> None:
    http = nginx_conf.one("http")
    rest = http.one("upstream", "app_servers")
    websocket = http.one("upstream", "websocket_servers")
    assert [args[0] for args in rest.values("server")] == ["app:3000"]
    assert [args[0] for args in websocket.values("server")] == ["app:3001"]


def test_nginx_upgrades_websockets_on_ws(nginx_conf: NginxDirective) -> None:
    http = nginx_conf.one("http")
    upgrade_map = http.one("map", "$http_upgrade", "$connection_upgrade")
    assert upgrade_map.values("default") == [["upgrade"]]
    assert upgrade_map.values("") == [["close"]]

    server = http.one("server")
    ws = server.one("location", "/ws")
    assert ws.values("proxy_pass") == [["http://websocket_servers"]]
    assert ws.values("proxy_http_version") == [["1.1"]]
    headers = {args[0]: args[1] for args in ws.values("proxy_set_header")}
    assert headers["Upgrade"] == "$http_upgrade"
    assert headers["Connection"] == "$connection_upgrade"
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert headers["X-Real-IP"] == "$remote_addr"
    (read_timeout,) = ws.values("proxy_read_timeout")
    assert int(read_timeout[0].removesuffix("s")) >= 3600


def test_nginx_proxies_rest_with_forwarding_headers(nginx_conf: NginxDirective) -> None:
    server = nginx_conf.one("http").one("server")
    rest = server.one("location", "/")
    assert rest.values("proxy_pass") == [["http://app_servers"]]
    headers = {args[0]: args[1] for args in rest.values("proxy_set_header")}
    assert headers["Host"] == "$host"
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    # Upstream keepalive needs the client's Connection header cleared.
    assert headers["Connection"] == ""


def test_nginx_compresses_as_the_seed(nginx_conf: NginxDirective) -> None:
    server = nginx_conf.one("http").one("server")
    assert server.values("gzip") == [["on"]]
    assert server.values("gzip_vary") == [["on"]]
    assert server.values("gzip_min_length") == [["1024"]]
    (gzip_types,) = server.values("gzip_types")
    assert {"application/json", "text/plain", "application/javascript"} <= set(gzip_types)


# --- Dockerfile and Procfile -------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical_lines: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical_lines.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continuation"
    instructions = []
    for logical in logical_lines:
        keyword, _, arguments = logical.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def test_dockerfile_builds_a_non_root_sinal_image() -> None:
    instructions = dockerfile_instructions()
    by_keyword: dict[str, list[str]] = {}
    for keyword, arguments in instructions:
        by_keyword.setdefault(keyword, []).append(arguments)

    assert by_keyword["FROM"] == ["python:3.11-slim"]
    env_words = {word for line in by_keyword["ENV"] for word in line.split()}
    # engine/config.py binds 127.0.0.1 by default: unreachable from nginx in a container.
    assert {"SINAL_HOST=0.0.0.0", "SINAL_ENV=production"} <= env_words
    assert any("pip install ." in run for run in by_keyword["RUN"])
    (user,) = by_keyword["USER"]
    assert user.split(":")[0] not in {"root", "0"}
    assert instructions.index(("USER", user)) > max(
        index for index, (keyword, _) in enumerate(instructions) if keyword == "RUN"
    ), "the image should switch to the unprivileged user after installing"
    exposed = {port for line in by_keyword["EXPOSE"] for port in line.split()}
    assert exposed == {"3000", "3001"}
    assert json.loads(by_keyword["CMD"][-1]) == ["sinal", "serve"]
    assert "/health/live" in by_keyword["HEALTHCHECK"][0]


def dockerfile_healthcheck_command() -> list[str]:
    instructions = dockerfile_instructions()
    (healthcheck,) = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
    _, _, exec_form = healthcheck.partition("CMD ")
    command = json.loads(exec_form)
    assert isinstance(command, list) and all(isinstance(part, str) for part in command)
    return command


@pytest.fixture
def health_server() -> Iterator[tuple[int, list[int]]]:
    """A local HTTP server: /health/live answers the status in the returned list."""
    status: list[int] = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status[0] if self.path == "/health/live" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], status
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_dockerfile_healthcheck_asks_health_live_on_http_port(
    health_server: tuple[int, list[int]],
) -> None:
    port, status = health_server
    command = dockerfile_healthcheck_command()
    assert command[0] == "python"
    command[0] = sys.executable  # the image's python; any 3.11 has urllib
    env = dict(os.environ, HTTP_PORT=str(port))

    healthy = subprocess.run(command, env=env, capture_output=True, timeout=30, check=False)
    status[0] = 503
    unhealthy = subprocess.run(command, env=env, capture_output=True, timeout=30, check=False)

    assert healthy.returncode == 0, healthy.stderr
    assert unhealthy.returncode != 0


def test_procfile_runs_the_console_script() -> None:
    processes = dict(
        line.split(":", 1) for line in PROCFILE.read_text().splitlines() if line.strip()
    )
    assert {name: command.strip() for name, command in processes.items()} == {
        "web": "sinal serve",
        "release": "sinal migrate",
    }
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "sinal" in pyproject["project"]["scripts"]
