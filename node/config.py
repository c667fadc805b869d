"""Settings: every variable of the seed's `.env` (section 7.1) plus Sinal's own.

Values come from the process environment, then from an optional `.env` file (the
environment wins). Every value is validated once, at start; a bad one raises
`ConfigError` naming the variable and the expected form, and the CLI exits with code 2.

Where things live does not depend on the current folder (README, "Data folder"). The
`.env` in use is `--env-file`, else `./.env`, else the `.env` of the checkout `sinal` runs
from (`find_env_file`). The *project folder* is the folder of that `.env`, else that
checkout (an editable install: `make install`). A relative SINAL_DATA_DIR (the default
`.sinal` too) is resolved against the project folder; with no project (a wheel install
and no `.env`) the data folder is the user's data directory, `$XDG_DATA_HOME/sinal`
(`~/.local/share/sinal`), and a relative SINAL_DATA_DIR is resolved against it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

EXIT_BAD_CONFIG = 2


class ConfigError(ValueError):
    """A setting has a value Sinal cannot use."""

    def __init__(self, name: str, value: str, expected: str) -> None:
        super().__init__(f"invalid setting {name}={value!r}: expected {expected}")
        self.name = name
        self.value = value
        self.expected = expected


def _parse_bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(name, raw, "a boolean: true or false")


def _int_parser(lo: int, hi: int, unit: str = "") -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        text = raw.strip()
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ConfigError(name, raw, f"an integer{unit} between {lo} and {hi}")
        value = int(text)
        if not lo <= value <= hi:
            raise ConfigError(name, raw, f"an integer{unit} between {lo} and {hi}")
        return value

    return parse


def _choice_parser(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(name, raw, "one of " + ", ".join(choices))
        return value

    return parse


def _url_parser(*schemes: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip()
        if not value:
            return ""
        parts = urlsplit(value)
        if parts.scheme not in schemes or not (parts.hostname or parts.path or parts.query):
            raise ConfigError(name, raw, "a URL like " + " or ".join(f"{s}://..." for s in schemes))
        return value

    return parse


def _origin_parser(name: str, raw: str) -> str:
    value = raw.strip()
    for origin in value.split(","):
        origin = origin.strip()
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path not in {"", "/"}:
            raise ConfigError(name, raw, "'*' or comma-separated origins like http://host:port")
    return value


def _text(name: str, raw: str) -> str:
    return raw


def _host(name: str, raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() for c in value):
        raise ConfigError(name, raw, "a host name or IP address")
    return value


def _workers(name: str, raw: str) -> int:
    """A number of worker processes, or `auto` (0 here: one per core, node/workers.py)."""
    text = raw.strip().lower()
    if text == "auto":
        return 0
    return _int_parser(1, 256)(name, raw)


def _proxies(name: str, raw: str) -> str:
    """Comma-separated IP addresses or networks (CIDR); empty: trust no proxy."""
    import ipaddress

    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(name, raw, "comma-separated IP addresses or networks "
                              "like 127.0.0.1,10.0.0.0/8") from None
    return raw.strip()


_PORT = _int_parser(0, 65535)
_MS = _int_parser(1, 86_400_000, " of milliseconds")


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: str
    parse: Callable[[str, str], Any]
    doc: str


# Order is the order of the README's configuration table.
SETTINGS: tuple[Setting, ...] = (
    # --- seed 7.1: WebSocket
    Setting("WEBSOCKET_PORT", "3001", _PORT, "WebSocket port (path /ws)"),
    Setting("WEBSOCKET_CORS_ORIGIN", "http://localhost:3000", _origin_parser,
            "origins allowed to open a socket and call the REST API (comma-separated, or *)"),
    Setting("WEBSOCKET_HEARTBEAT_INTERVAL", "30000", _MS, "ms between heartbeats, both ways"),
    Setting("WEBSOCKET_CONNECTION_TIMEOUT", "60000", _MS,
            "ms of silence after which a socket is closed"),
    Setting("WEBSOCKET_LOGIN_TIMEOUT", "5000", _MS,
            "ms a new socket has to log in (send `connect` and be authenticated)"),
    Setting("WEBSOCKET_PRELOGIN_SHARE", "10", _int_parser(1, 100, " percent"),
            "sockets waiting to log in, as a percentage of MAX_CONCURRENT_CONNECTIONS "
            "(a quota of their own, on top of it)"),
    Setting("WEBSOCKET_PRELOGIN_PER_ADDRESS", "20", _int_parser(1, 1_000_000),
            "sockets one client address may have waiting to log in (more: HTTP 429)"),
    # --- seed 7.1: cache
    Setting("CACHE_TTL_SECONDS", "3600", _int_parser(0, 31_536_000),
            "seconds a cached full list (and its ETag row) is kept"),
    Setting("CACHE_MAX_SIZE_MB", "100", _int_parser(1, 65_536), "in-memory cache bound, MB"),
    Setting("ENABLE_COMPRESSION", "true", _parse_bool, "gzip REST bodies over 1 KB"),
    Setting("COMPRESSION_LEVEL", "6", _int_parser(1, 9), "gzip level 1-9"),
    # --- seed 7.1: performance
    Setting("MAX_CONCURRENT_CONNECTIONS", "1000", _int_parser(1, 1_000_000),
            "WebSocket connections one node accepts; more are refused (HTTP 503)"),
    Setting("RATE_LIMIT_REQUESTS_PER_MINUTE", "100", _int_parser(1, 1_000_000),
            "per-user budget for REST requests and client frames"),
    Setting("ENABLE_DELTA_UPDATES", "true", _parse_bool, "REST ?since= answers deltas"),
    Setting("ENABLE_SMART_POLLING", "true", _parse_bool, "REST ETag/304 answers"),
    # --- seed 7.1: monitoring
    Setting("METRICS_COLLECTION_INTERVAL", "60000", _MS,
            "ms between performance_metrics rows and alert checks"),
    Setting("PERFORMANCE_ALERT_THRESHOLD_MS", "1000", _MS, "latency alert threshold, ms"),
    Setting("ENABLE_PERFORMANCE_MONITORING", "true", _parse_bool, "run the metrics service"),
    Setting("DASHBOARD_UPDATE_INTERVAL_MS", "250", _int_parser(1, 3_600_000, " of milliseconds"),
            "least ms between two `dashboard` updates to a subscriber (they carry only the "
            "figures that changed)"),
    # --- seed 7.1: Redis (used only when REDIS_URL is empty and one of them is set)
    Setting("REDIS_HOST", "localhost", _host, "Redis host"),
    Setting("REDIS_PORT", "6379", _int_parser(1, 65535), "Redis port"),
    Setting("REDIS_PASSWORD", "", _text, "Redis password"),
    Setting("REDIS_DB", "0", _int_parser(0, 15), "Redis database number"),
    # --- seed 7.1: logging
    Setting("LOG_LEVEL", "info", _choice_parser("debug", "info", "warning", "error", "critical"),
            "log level"),
    Setting("LOG_WEBSOCKET_EVENTS", "true", _parse_bool,
            "log connect, subscribe, close of every socket"),
    Setting("LOG_PERFORMANCE_METRICS", "true", _parse_bool, "log each metrics sample"),
    # --- Sinal
    Setting("SINAL_ENV", "development", _choice_parser("development", "production"),
            "development allows a generated JWT_SECRET and demo data"),
    Setting("HTTP_PORT", "3000", _PORT, "REST / health / metrics port"),
    Setting("SINAL_HOST", "127.0.0.1", _host,
            "address both servers bind (0.0.0.0 in containers)"),
    Setting("DATABASE_URL", "", _url_parser("postgresql", "postgres"),
            "PostgreSQL URL; empty: start the embedded server"),
    Setting("REDIS_URL", "", _url_parser("redis", "rediss", "unix"),
            "Redis URL; empty (and no REDIS_HOST/PORT/...): single node, in-process broker"),
    Setting("JWT_SECRET", "", _text,
            "HS256 secret; required in production (at least 32 characters)"),
    Setting("SINAL_DATA_DIR", ".sinal", _text,
            "folder for the embedded PostgreSQL data and the development secret; a relative "
            "path is resolved against the project folder, never the current one (see Data "
            "folder)"),
    Setting("SINAL_EMBEDDED_PG_PORT", "54329", _int_parser(1, 65535),
            "port of the embedded PostgreSQL"),
    Setting("SINAL_NODE_ID", "", _text, "name of this node (default: host name and pid)"),
    Setting("SINAL_REDIS_PREFIX", "sinal:", _text, "prefix of every Redis key Sinal writes"),
    Setting("SINAL_RETENTION_HOURS", "168", _int_parser(0, 876_000),
            "hours of change log, delivered notifications, metrics and closed-socket rows "
            "kept (0: keep everything)"),
    Setting("SINAL_WORKERS", "1", _workers,
            "worker processes of `sinal serve` sharing both ports (`auto`: one per core); "
            "`--workers` overrides"),
    Setting("SINAL_REUSE_PORT", "false", _parse_bool,
            "listen with SO_REUSEPORT so several processes share the ports (set for "
            "every worker of `--workers`)"),
    Setting("SINAL_DRAIN_TIMEOUT", "1000", _int_parser(0, 600_000, " of milliseconds"),
            "on SIGTERM, ms during which readiness answers 503 before sockets are closed "
            "with server_shutdown"),
    Setting("SINAL_GC_FULL_INTERVAL", "600", _int_parser(0, 86_400, " of seconds"),
            "seconds between the process's full garbage collections, which Sinal runs "
            "itself instead of CPython's automatic ones (0: CPython's own policy)"),
    Setting("TRUSTED_PROXIES", "", _proxies,
            "addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For is "
            "believed; empty: the peer address is the client"),
)

_BY_NAME = {s.name: s for s in SETTINGS}
_REDIS_PARTS = ("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB")


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a `.env` file: KEY=VALUE lines, `#` comments, optional quotes, `export `."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("export "):
            text = text[7:].lstrip()
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"{path}:{number}", line, "KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def checkout_root() -> Path | None:
    """The source checkout the running `sinal` package comes from, or None (a wheel)."""
    import sinal

    root = Path(sinal.__file__).resolve().parent.parent
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if re.search(r'^name\s*=\s*"sinal"\s*$', text, re.MULTILINE) else None


def find_env_file(cwd: Path | None = None) -> Path | None:
    """The `.env` in use when none is named: `./.env`, else the checkout's `.env`."""
    here = (cwd or Path.cwd()) / ".env"
    if here.is_file():
        return here
    root = checkout_root()
    if root is not None and (root / ".env").is_file():
        return root / ".env"
    return None


def user_data_dir(environ: Mapping[str, str]) -> Path:
    """`$XDG_DATA_HOME/sinal`, else `~/.local/share/sinal`."""
    base = environ.get("XDG_DATA_HOME") or str(Path("~/.local/share").expanduser())
    return Path(base) / "sinal"


@dataclass(frozen=True, slots=True)
class Config:
    websocket_port: int = 3001
    websocket_cors_origin: str = "http://localhost:3000"
    websocket_heartbeat_interval: int = 30000
    websocket_connection_timeout: int = 60000
    websocket_login_timeout: int = 5000
    websocket_prelogin_share: int = 10
    websocket_prelogin_per_address: int = 20
    cache_ttl_seconds: int = 3600
    cache_max_size_mb: int = 100
    enable_compression: bool = True
    compression_level: int = 6
    max_concurrent_connections: int = 1000
    rate_limit_requests_per_minute: int = 100
    enable_delta_updates: bool = True
    enable_smart_polling: bool = True
    metrics_collection_interval: int = 60000
    performance_alert_threshold_ms: int = 1000
    enable_performance_monitoring: bool = True
    dashboard_update_interval_ms: int = 250
    redis_host: str = "localhost"
    redis_port: int = 6379
    redis_password: str = ""
    redis_db: int = 0
    log_level: str = "info"
    log_websocket_events: bool = True
    log_performance_metrics: bool = True
    sinal_env: str = "development"
    http_port: int = 3000
    sinal_host: str = "127.0.0.1"
    database_url: str = ""
    redis_url: str = ""
    jwt_secret: str = ""
    sinal_data_dir: str = ".sinal"
    sinal_embedded_pg_port: int = 54329
    sinal_node_id: str = ""
    sinal_redis_prefix: str = "sinal:"
    sinal_retention_hours: int = 168
    sinal_workers: int = 1
    sinal_reuse_port: bool = False
    sinal_drain_timeout: int = 1000
    sinal_gc_full_interval: int = 600
    trusted_proxies: str = ""
    # Names of the settings that were given explicitly (not defaults).
    explicit: frozenset[str] = field(default_factory=frozenset)
    # What a relative SINAL_DATA_DIR is resolved against (module docstring): the project
    # folder ("" when there is none), else the user's data directory.
    project_dir: str = ""
    user_dir: str = ""

    @property
    def development(self) -> bool:
        return self.sinal_env == "development"

    @property
    def data_dir(self) -> Path:
        """SINAL_DATA_DIR, absolute (module docstring: never relative to the current folder)."""
        value = Path(self.sinal_data_dir).expanduser()
        if value.is_absolute():
            return value.resolve()
        if self.project_dir:
            return (Path(self.project_dir) / value).resolve()
        user_dir = Path(self.user_dir or user_data_dir(os.environ))
        if "SINAL_DATA_DIR" not in self.explicit:
            return user_dir.resolve()
        return (user_dir / value).resolve()

    @property
    def effective_redis_url(self) -> str:
        """REDIS_URL, else a URL built from REDIS_HOST/PORT/PASSWORD/DB when any was set."""
        if self.redis_url:
            return self.redis_url
        if not any(name in self.explicit for name in _REDIS_PARTS):
            return ""
        auth = f":{quote(self.redis_password, safe='')}@" if self.redis_password else ""
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    def with_values(self, **changes: Any) -> Config:
        kwargs = {f.name: getattr(self, f.name) for f in fields(self)}
        kwargs.update(changes)
        return Config(**kwargs)


def load_config(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
) -> Config:
    """Read, validate and return the settings. Raises ConfigError on the first bad value.

    `env_file` is the `.env` in use (the CLI passes `find_env_file()` or --env-file); its
    folder, when it exists, is the project folder, else the checkout `sinal` runs from."""
    env = dict(os.environ if environ is None else environ)
    raw: dict[str, str] = {}
    project = checkout_root()
    if env_file is not None and env_file.is_file():
        raw.update(read_env_file(env_file))
        project = env_file.resolve().parent
    raw.update({k: v for k, v in env.items() if k in _BY_NAME})
    values: dict[str, Any] = {}
    explicit = set()
    for setting in SETTINGS:
        if setting.name in raw:
            explicit.add(setting.name)
            text = raw[setting.name]
        else:
            text = setting.default
        values[setting.name.lower()] = setting.parse(setting.name, text)
    config = Config(**values, explicit=frozenset(explicit),
                    project_dir=str(project) if project else "",
                    user_dir=str(user_data_dir(env)))
    _check_cross_field(config)
    return config


def _check_cross_field(config: Config) -> None:
    if config.websocket_connection_timeout <= config.websocket_heartbeat_interval:
        raise ConfigError(
            "WEBSOCKET_CONNECTION_TIMEOUT",
            str(config.websocket_connection_timeout),
            f"more milliseconds than WEBSOCKET_HEARTBEAT_INTERVAL "
            f"({config.websocket_heartbeat_interval})",
        )
    if not config.development:
        if not config.jwt_secret:
            raise ConfigError(
                "JWT_SECRET", "", "a secret of at least 32 characters (required when "
                "SINAL_ENV=production; only development generates one)"
            )
    if config.jwt_secret and len(config.jwt_secret) < 32:
        raise ConfigError("JWT_SECRET", "<hidden>", "a secret of at least 32 characters")
    if config.http_port and config.http_port == config.websocket_port:  # 0 = any free port
        raise ConfigError("HTTP_PORT", str(config.http_port), "a port other than WEBSOCKET_PORT")


def settings_table_markdown() -> str:
    """The README's configuration table, generated from SETTINGS."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "(empty)"
        lines.append(f"| `{s.name}` | {default} | {s.doc} |")
    return "\n".join(lines)
