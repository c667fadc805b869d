"""Run-time failures of the `sinal` command (issue #10, 9): one line on stderr saying what
failed and what to check, exit 1, no traceback unless --verbose; bad settings keep exit 2.
Each case runs the real command in a subprocess."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sinal.node import cli
from sinal.node.embedded import EmbeddedPostgres, free_port
from sinal.node.failures import mask_url
from tests.cli_support import clean_env, run_sinal, serving
from tests.servers import scratch_folder


def closed_port() -> int:
    """A port nothing listens on (bound and released)."""
    return free_port()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on, for the duration of the test."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


def assert_one_line_failure(result: subprocess.CompletedProcess[str], command: str,
                            *needles: str) -> str:
    assert result.returncode == 1, result.stderr
    stderr = result.stderr
    assert "Traceback" not in stderr, stderr
    line = last_line(stderr)
    assert line.startswith(f"sinal {command}: "), stderr
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    # the other lines, if any, are JSON log lines, never the error again in raw form
    for other in stderr.splitlines()[:-1]:
        if other.strip():
            json.loads(other)
    return line


def test_unreachable_database_url_is_one_line_with_the_password_masked(tmp_path: Path) -> None:
    url = f"postgresql://sinal:hunter2@127.0.0.1:{closed_port()}/sinal"
    result = run_sinal("migrate", env=clean_env(DATABASE_URL=url), cwd=tmp_path)
    line = assert_one_line_failure(result, "migrate", "DATABASE_URL", "Connection refused",
                                   "postgresql://sinal:***@127.0.0.1")
    assert "hunter2" not in result.stderr + result.stdout
    assert "--verbose" not in line  # a known failure needs no traceback
    verbose = run_sinal("--verbose", "migrate", env=clean_env(DATABASE_URL=url), cwd=tmp_path)
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr and "OperationalError" in verbose.stderr
    assert last_line(verbose.stderr) == line
    assert "hunter2" not in verbose.stderr.split("Traceback")[0]


@pytest.mark.parametrize("setting", ["HTTP_PORT", "WEBSOCKET_PORT"])
def test_busy_port_names_the_setting_and_the_port(setting: str, busy_port: int, db_url: str,
                                                  tmp_path: Path) -> None:
    ports = {"HTTP_PORT": "0", "WEBSOCKET_PORT": "0", setting: str(busy_port)}
    env = clean_env(DATABASE_URL=db_url, LOG_LEVEL="warning",
                    SINAL_DATA_DIR=str(tmp_path / "data"), **ports)
    result = run_sinal("serve", env=env, cwd=tmp_path)
    line = assert_one_line_failure(result, "serve", f"127.0.0.1:{busy_port} ({setting})",
                                   "already in use", f"set {setting}")
    assert "ExceptionGroup" not in line
    if setting == "HTTP_PORT":  # --verbose after the command: the traceback, then the line
        verbose = run_sinal("serve", "--verbose", env=env, cwd=tmp_path)
        assert verbose.returncode == 1 and "Traceback" in verbose.stderr
        assert last_line(verbose.stderr) == line


def test_unreachable_redis_warns_in_one_line_and_the_node_serves(db_url: str,
                                                                  tmp_path: Path) -> None:
    """Redis is cluster state: without it a node serves alone (and retries), it does not
    refuse to start."""
    redis_url = f"redis://:s3cret@127.0.0.1:{closed_port()}/0"
    env = clean_env(DATABASE_URL=db_url, REDIS_URL=redis_url, HTTP_PORT="0",
                    WEBSOCKET_PORT="0", LOG_LEVEL="error", SINAL_DATA_DIR=str(tmp_path / "data"))
    with serving(env, tmp_path) as node:
        with urllib.request.urlopen(node.line("http") + "/health/live", timeout=10) as resp:
            assert resp.status == 200
        assert f"redis      {mask_url(redis_url)}" in node.banner
    assert node.proc.returncode == 0, node.stderr
    warnings = [line for line in node.stderr.splitlines() if line.startswith("sinal serve:")]
    assert len(warnings) == 1, node.stderr
    assert "warning: Redis at redis://:***@127.0.0.1" in warnings[0]
    assert "REDIS_URL" in warnings[0] and "serves alone" in warnings[0]
    assert "s3cret" not in node.stderr + node.stdout


def test_embedded_port_held_by_another_sinal_folder_says_which_and_what_to_do(
        tmp_path: Path) -> None:
    with scratch_folder("sinal-other-node-") as other_folder, \
            scratch_folder("sinal-second-") as mine:
        # what a node with SINAL_DATA_DIR=other_folder runs
        other = EmbeddedPostgres(other_folder / "postgres", free_port())
        other.start()
        try:
            env = clean_env(SINAL_EMBEDDED_PG_PORT=str(other.port),
                            SINAL_DATA_DIR=str(mine / "data"))
            result = run_sinal("token", env=env, cwd=tmp_path)
        finally:
            other.stop()
        assert_one_line_failure(
            result, "token", f"127.0.0.1:{other.port} (SINAL_EMBEDDED_PG_PORT)",
            f"another Sinal data folder, {other_folder}", f"SINAL_DATA_DIR={other_folder}",
            "set SINAL_EMBEDDED_PG_PORT to a free port")
        # no second cluster, no new secret: nothing was created
        assert not (mine / "data").exists()


def test_embedded_port_held_by_another_program(busy_port: int, tmp_path: Path) -> None:
    env = clean_env(SINAL_EMBEDDED_PG_PORT=str(busy_port), SINAL_DATA_DIR=str(tmp_path / "d"))
    result = run_sinal("migrate", env=env, cwd=tmp_path)
    assert_one_line_failure(result, "migrate", f"127.0.0.1:{busy_port} (SINAL_EMBEDDED_PG_PORT)",
                            "another program")
    assert not (tmp_path / "d").exists()


def test_bad_settings_still_exit_2(tmp_path: Path) -> None:
    result = run_sinal("serve", env=clean_env(HTTP_PORT="http"), cwd=tmp_path)
    assert result.returncode == 2 and "HTTP_PORT" in result.stderr
    missing = run_sinal("--env-file", str(tmp_path / "nope.env"), "migrate", env=clean_env(),
                        cwd=tmp_path)
    assert missing.returncode == 2 and "--env-file" in missing.stderr


def test_an_unknown_error_is_one_line_and_points_to_verbose(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Not hidden: its type and text, and where to see the rest."""

    def broken(*_: object) -> int:
        raise ExceptionGroup("from a nursery", [ZeroDivisionError("division by zero")])

    monkeypatch.setitem(cli.COMMANDS, "migrate", broken)
    monkeypatch.setattr(cli, "setup_logging", lambda config: None)
    assert cli.main(["migrate"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("sinal migrate: unexpected error: ZeroDivisionError: division by "
                           "zero (run with --verbose for the traceback)")
    assert cli.main(["migrate", "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err
    assert last_line(err) == "sinal migrate: unexpected error: ZeroDivisionError: division by zero"


def test_mask_url_hides_passwords_in_the_authority_and_the_query() -> None:
    assert mask_url("postgresql://u:p%40ss@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert mask_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert mask_url("postgresql://h/d?password=pw&sslmode=require") == \
        "postgresql://h/d?password=***&sslmode=require"
    assert mask_url("postgresql://u@h/d") == "postgresql://u@h/d"

