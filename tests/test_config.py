"""Settings: the seed's names and defaults, validation, .env files, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sinal.node.config import SETTINGS, ConfigError, load_config, read_env_file

SEED_DEFAULTS = {  # seed section 7.1, verbatim
    "WEBSOCKET_PORT": "3001",
    "WEBSOCKET_CORS_ORIGIN": "http://localhost:3000",
    "WEBSOCKET_HEARTBEAT_INTERVAL": "30000",
    "WEBSOCKET_CONNECTION_TIMEOUT": "60000",
    "CACHE_TTL_SECONDS": "3600",
    "CACHE_MAX_SIZE_MB": "100",
    "ENABLE_COMPRESSION": "true",
    "COMPRESSION_LEVEL": "6",
    "MAX_CONCURRENT_CONNECTIONS": "1000",
    "RATE_LIMIT_REQUESTS_PER_MINUTE": "100",
    "ENABLE_DELTA_UPDATES": "true",
    "ENABLE_SMART_POLLING": "true",
    "METRICS_COLLECTION_INTERVAL": "60000",
    "PERFORMANCE_ALERT_THRESHOLD_MS": "1000",
    "ENABLE_PERFORMANCE_MONITORING": "true",
    "REDIS_HOST": "localhost",
    "REDIS_PORT": "6379",
    "REDIS_PASSWORD": "",
    "REDIS_DB": "0",
    "LOG_LEVEL": "info",
    "LOG_WEBSOCKET_EVENTS": "true",
    "LOG_PERFORMANCE_METRICS": "true",
}


def test_every_seed_variable_has_the_seed_default() -> None:
    defaults = {s.name: s.default for s in SETTINGS}
    for name, value in SEED_DEFAULTS.items():
        assert defaults[name] == value, name
    for extra in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET", "HTTP_PORT"):
        assert extra in defaults
    assert defaults["HTTP_PORT"] == "3000"


def test_defaults_load_in_development() -> None:
    config = load_config({}, env_file=None)
    assert config.websocket_port == 3001
    assert config.websocket_heartbeat_interval == 30000
    assert config.enable_compression is True
    assert config.development
    assert config.effective_redis_url == ""  # no Redis settings: in-process broker


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("WEBSOCKET_PORT", "abc", "integer"),
        ("WEBSOCKET_PORT", "70000", "between 0 and 65535"),
        ("ENABLE_COMPRESSION", "maybe", "boolean"),
        ("COMPRESSION_LEVEL", "0", "between 1 and 9"),
        ("LOG_LEVEL", "loud", "one of debug"),
        ("DATABASE_URL", "mysql://x/y", "postgresql://"),
        ("REDIS_URL", "http://x", "redis://"),
        ("WEBSOCKET_CORS_ORIGIN", "localhost:3000", "origins"),
        ("MAX_CONCURRENT_CONNECTIONS", "-5", "between 1"),
        ("SINAL_ENV", "staging", "development, production"),
        ("WEBSOCKET_CONNECTION_TIMEOUT", "1000", "more milliseconds than"),
        ("JWT_SECRET", "short", "at least 32 characters"),
    ],
)
def test_bad_values_name_the_variable_and_the_form(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({name: value}, env_file=None)
    assert info.value.name == name
    assert name in str(info.value) and expected in str(info.value)


def test_production_requires_jwt_secret() -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        load_config({"SINAL_ENV": "production"}, env_file=None)
    config = load_config({"SINAL_ENV": "production", "JWT_SECRET": "x" * 32}, env_file=None)
    assert not config.development


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nexport HTTP_PORT=4000\nWEBSOCKET_PORT='4001'\n"
        'LOG_LEVEL="debug" \nREDIS_HOST=cache.internal # inline comment\n'
    )
    assert read_env_file(env_file)["REDIS_HOST"] == "cache.internal"
    config = load_config({"HTTP_PORT": "5000"}, env_file=env_file)
    assert config.http_port == 5000
    assert config.websocket_port == 4001
    assert config.log_level == "debug"
    assert config.effective_redis_url == "redis://cache.internal:6379/0"


def test_redis_url_wins_over_parts() -> None:
    config = load_config({"REDIS_URL": "redis://a:1/2", "REDIS_HOST": "b"}, env_file=None)
    assert config.effective_redis_url == "redis://a:1/2"
    config = load_config({"REDIS_PASSWORD": "p@ss", "REDIS_DB": "3"}, env_file=None)
    assert config.effective_redis_url == "redis://:p%40ss@localhost:6379/3"


def test_malformed_env_file_line_is_reported(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("HTTP_PORT=1\nthis is not a setting\n")
    with pytest.raises(ConfigError, match=r"\.env:2"):
        load_config({}, env_file=env_file)


def run_sinal(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {s.name for s in SETTINGS}}
    clean.update(env)
    return subprocess.run([sys.executable, "-m", "sinal.node.cli", *args], env=clean, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", ["serve", "migrate", "token", "simulate"])
def test_cli_exits_2_on_a_bad_setting(command: str, tmp_path: Path) -> None:
    result = run_sinal(command, env={"WEBSOCKET_HEARTBEAT_INTERVAL": "soon"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "WEBSOCKET_HEARTBEAT_INTERVAL" in result.stderr
    assert "milliseconds" in result.stderr


def test_cli_exits_2_on_a_bad_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ENABLE_DELTA_UPDATES=perhaps\n")
    result = run_sinal("migrate", env={}, cwd=tmp_path)
    assert result.returncode == 2
    assert "ENABLE_DELTA_UPDATES" in result.stderr and "boolean" in result.stderr


def test_readme_configuration_table_lists_every_setting() -> None:
    from sinal.node.config import settings_table_markdown

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert settings_table_markdown() in readme


def test_workers_and_trusted_proxies_settings() -> None:
    from sinal.node.workers import worker_count

    config = load_config({"SINAL_WORKERS": "auto", "TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"},
                         env_file=None)
    assert config.sinal_workers == 0 and worker_count(0) >= 1
    assert worker_count(load_config({"SINAL_WORKERS": "3"}, env_file=None).sinal_workers) == 3
    for name, raw, expected in (("SINAL_WORKERS", "0", "between 1 and 256"),
                                ("SINAL_WORKERS", "many", "between 1 and 256"),
                                ("TRUSTED_PROXIES", "nginx", "IP addresses or networks")):
        try:
            load_config({name: raw}, env_file=None)
        except ConfigError as exc:
            assert exc.name == name and expected in str(exc)
        else:
            raise AssertionError(f"{name}={raw} was accepted")
